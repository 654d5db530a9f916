"""Video files as sequences of frames, through ``cv2.VideoCapture``.

A video is recognised from its first bytes (:func:`sniff_video`: AVI, MP4/MOV,
Matroska/WebM, FLV, MPEG-PS), never from its name. Its frame count and size
come from ``cv2.VideoCapture`` properties, without decoding the video; frames
are then decoded in order, one at a time (frames that are not used are
grabbed, not decoded), as BGR ``uint8`` arrays in OpenCV's layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import InputError, ReadError

__all__ = ["sniff_video", "is_video", "VideoInfo", "probe_video", "select_frames", "video_frames"]


def sniff_video(head: bytes) -> str | None:
    """Name the video container whose magic number starts ``head`` (32 bytes), or None."""
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpg"
    if head[4:8] == b"ftyp":
        brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(len(head), 32) - 3, 4)}
        if brands & {b"avif", b"avis", b"heic", b"heix", b"mif1"}:
            return None  # still images in the same box format
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "mov"
    return None


def is_video(spec: Any) -> bool:
    """True when ``spec`` is the path of a file whose first bytes are a video container's."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    path = os.fspath(spec)
    if not isinstance(path, str) or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            return sniff_video(fh.read(32)) is not None
    except OSError:
        return False


@dataclass(frozen=True)
class VideoInfo:
    """What ``cv2.VideoCapture`` says of a video before decoding it."""

    name: str
    frames: int
    height: int
    width: int
    fps: float

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded BGR frame."""
        return self.height * self.width * 3


def _open(path: str, name: str) -> Any:
    import cv2

    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise InputError(f"{name}: OpenCV cannot open this video (no decoder for its codec?)")
    return cap


def probe_video(spec: Any) -> VideoInfo:
    """Frame count and size from the container, without decoding frames."""
    import cv2

    path = os.fspath(spec)
    cap = _open(path, path)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if count <= 0 or width <= 0 or height <= 0:
        raise InputError(
            f"{path}: the video does not state its frame count and size ({count} frames, {width}x{height})"
        )
    return VideoInfo(path, count, height, width, fps)


def select_frames(count: int, frames: slice | None = None, sample: int | None = None) -> list[int]:
    """Frame indices used: ``frames`` (Python slice semantics), then ``sample`` evenly spaced ones of those."""
    chosen = list(range(count)[frames if frames is not None else slice(None)])
    if sample is not None and sample < len(chosen):
        # evenly spaced, the first and the last included (numpy.linspace rounded down)
        picks = np.linspace(0, len(chosen) - 1, sample) if sample > 1 else np.array([0.0])
        chosen = [chosen[int(p)] for p in np.floor(picks)]
    return chosen


def video_frames(info: VideoInfo, indices: list[int]) -> Iterator[np.ndarray]:
    """Decode the frames ``indices`` of the video, in increasing order, into one reused BGR buffer.

    Raises
    ------
    ReadError
        The video ends before a frame it declared, or a frame has another size.
    """
    wanted = sorted(set(indices))
    if wanted != list(indices):
        raise ValueError("video frames are read in increasing order, each once")
    cap = _open(info.name, info.name)
    frame = np.empty((info.height, info.width, 3), np.uint8)
    try:
        position = 0
        for index in wanted:
            while position < index:  # skipped frames are demuxed, not decoded
                if not cap.grab():
                    raise ReadError(f"{info.name}: the video ends at frame {position}, it declares {info.frames}")
                position += 1
            ok, got = cap.read(frame)
            position += 1
            if not ok or got is None:
                raise ReadError(f"{info.name}: cannot decode frame {index} (of {info.frames} declared)")
            if got.shape != frame.shape or got.dtype != np.uint8:
                raise ReadError(f"{info.name}: frame {index} is {got.shape} {got.dtype}, expected {frame.shape} uint8")
            if got is not frame and not np.shares_memory(got, frame):
                frame[...] = got
            yield frame
    finally:
        cap.release()
