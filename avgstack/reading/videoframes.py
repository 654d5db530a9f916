"""A video's frames as frames of a stack, for methods that need every frame's rows at once.

Each selected frame of a video is one input of the stack (a
:class:`VideoFrameSource`), all of them sharing one :class:`VideoCursor`: the
engine reads a stack's inputs in order, so one pass over the stack decodes the
video once, from its start, sequentially. Frames that are not selected are
grabbed (demuxed), not decoded; nothing ever seeks. A job in several passes
(bands of rows that do not fit at once) decodes the video once per pass.

The frame count comes from ``cv2.VideoCapture`` (``CAP_PROP_FRAME_COUNT``),
checked when the stack is opened by grabbing every frame once, without
decoding: a container that misstates it is counted to its real end (with a
warning). A video that then ends earlier in a pass is a :class:`ReadError`
naming the file.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ..errors import ReadError
from ..windows import Band
from .base import ImageInfo, Source
from .layout import swap_red_blue
from .video import VideoInfo, _open, probe_video, select_frames

__all__ = ["CUBE_METHODS", "VideoCursor", "VideoFrameSource", "open_video_frames", "DECODER_FRAMES"]

log = logging.getLogger("avgstack")

#: Methods whose reducer holds every frame's rows of a band (the input cube): videos run through the band engine.
CUBE_METHODS = frozenset({"median", "percentile", "std", "var", "sigma-clip", "minmax"})

#: The decoder's own working memory, measured (peak RSS over an interpreter that imported cv2, MJPG in AVI
#: and FFV1 in MKV from 160x120 to 1920x1080): about 6.3 MiB of demuxer and codec state and touched
#: library pages, up to 4.7 decoded BGR frames (its YUV picture, the converted picture OpenCV copies
#: from, reference and frame-thread pictures) and the demuxer's packet buffers (FFV1's packets are as
#: large as frames). Declared: 7 MiB + 5 frames + 4 average packets.
DECODER_FRAMES = 5
DECODER_PACKETS = 4
DECODER_FIXED = 7 * 2**20


def real_frame_count(info: VideoInfo) -> int:
    """Frames the video really holds, counted by grabbing each (demuxed, not decoded)."""
    cap = _open(info.name, info.name)
    try:
        count = 0
        while cap.grab():
            count += 1
    finally:
        cap.release()
    return count


class VideoCursor:
    """One video read forward: frames are asked for in increasing order within a pass; asking for an
    earlier frame starts a new pass (the video is opened again and read from its start)."""

    def __init__(self, info: VideoInfo, last: int) -> None:
        self.info = info
        self.last = last
        self.cap: Any = None
        self.position = 0
        self.passes = 0
        size = os.path.getsize(info.name)
        self.bytes_per_frame = size // max(1, info.frames)

    def read(self, index: int, out: np.ndarray) -> None:
        """Decode frame ``index`` (BGR) into ``out``."""
        info = self.info
        if self.cap is None or index < self.position:
            self.close()
            self.cap = _open(info.name, info.name)
            self.position = 0
            self.passes += 1
        cap = self.cap
        while self.position < index:  # skipped frames are demuxed, not decoded
            if not cap.grab():
                self._ended(index)
            self.position += 1
        ok, got = cap.read(out)
        if not ok or got is None:
            self._ended(index)
        self.position += 1
        if got.shape != out.shape or got.dtype != np.uint8:
            raise ReadError(f"{info.name}: frame {index} is {got.shape} {got.dtype}, expected {out.shape} uint8")
        if got is not out and not np.shares_memory(got, out):
            out[...] = got
        if index >= self.last:
            self.close()  # the pass is over for this video: one capture open at a time

    def _ended(self, index: int) -> None:
        at = self.position
        self.close()
        raise ReadError(
            f"{self.info.name}: the video ends at frame {at} in pass {self.passes}, before frame {index}; "
            f"it held {self.info.frames} frames when the job was planned (changed since?)"
        )

    def close(self) -> None:
        """Release the capture (a later read opens it again)."""
        if self.cap is not None:
            cap, self.cap = self.cap, None
            cap.release()


class VideoFrameSource(Source):
    """Frame ``frame`` of a video, decoded whole through the video's shared cursor, in RGB order."""

    def __init__(self, cursor: VideoCursor, frame: int, *, owns: bool = False) -> None:
        v = cursor.info
        self.cursor = cursor
        self.frame = frame
        self._owns = owns
        self.info = ImageInfo(
            f"{v.name} frame {frame}", v.height, v.width, 3, np.dtype(np.uint8), photometric="rgb",
            format="video", streamable=False, segment_height=v.height,
            scratch_bytes=DECODER_FIXED + DECODER_FRAMES * v.frame_bytes + DECODER_PACKETS * cursor.bytes_per_frame,
        )

    def read_band(self, band: Band, out: np.ndarray) -> int:
        if band.start != 0 or band.height != self.info.height:
            raise ValueError("video frames are decoded whole")
        self.cursor.read(self.frame, out)
        swap_red_blue(out, inplace=True)  # sources hold stored (RGB) order
        return self.cursor.bytes_per_frame

    def close(self) -> None:
        if self._owns:
            self.cursor.close()


def open_video_frames(
    path: str, frames: slice | None = None, sample: int | None = None
) -> tuple[VideoCursor, list[VideoFrameSource]]:
    """The selected frames of the video at ``path`` as sources sharing one cursor (closed by the caller)."""
    declared = probe_video(path)
    real = real_frame_count(declared)
    if real != declared.frames:
        log.warning(
            "%s: the container declares %d frames but holds %d; using the %d", path, declared.frames, real, real
        )
    if real <= 0:
        raise ReadError(f"{path}: the video holds no frame that can be read")
    info = VideoInfo(declared.name, real, declared.height, declared.width, declared.fps)
    chosen = select_frames(real, frames, sample)
    log.info(
        "%s: %d of %d frames (%s%s), decoded in order once per pass",
        path, len(chosen), real,
        "all" if frames is None else f"frames {frames.start}:{frames.stop}:{frames.step}",
        f", {sample} evenly spaced" if sample is not None else "",
    )
    if not chosen:
        from ..errors import UsageError

        raise UsageError(f"{path}: no frame selected (frames {frames}) of its {real}")
    cursor = VideoCursor(info, chosen[-1])
    return cursor, [VideoFrameSource(cursor, k) for k in chosen]


def open_video_frame(path: str, frame: int) -> VideoFrameSource:
    """One frame of a video with a cursor of its own (a worker reopening an input from its description)."""
    info = probe_video(path)
    return VideoFrameSource(VideoCursor(info, frame), frame, owns=True)
