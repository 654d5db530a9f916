"""Frames from an iterable (a generator, ``map``, a camera loop): one at a time, in OpenCV's layout.

A one-shot iterable cannot be read twice nor in bands, so it is reduced frame
by frame through :class:`avgstack.Accumulator`; :func:`is_one_shot` tells such
inputs from sequences, which the band engine reads as files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..buffers import Buffer
from ..errors import UnsupportedInputError, UsageError
from ..windows import Band
from .files import FilePool
from .layout import swap_red_blue

log = logging.getLogger("avgstack")

__all__ = ["is_one_shot", "opencv_frames", "has_video", "count_frames"]


def has_video(inputs: Any) -> bool:
    """True when a sequence of inputs holds a video file."""
    from .video import is_video

    if isinstance(inputs, (str, os.PathLike)):
        return is_video(inputs)
    return isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)) and any(is_video(i) for i in inputs)


def count_frames(inputs: Sequence[Any], frames: slice | None = None, sample: int | None = None) -> int:
    """Frames a sequence of inputs yields: the frames chosen of each video, one for every other input."""
    from .video import is_video, probe_video, select_frames

    return sum(
        len(select_frames(probe_video(i).frames, frames, sample)) if is_video(i) else 1 for i in inputs
    )


def is_one_shot(inputs: Any) -> bool:
    """True for iterables that are not sequences (generators, iterators, ``map``, sets ...)."""
    if isinstance(inputs, (str, bytes, os.PathLike, np.ndarray, Sequence)):
        return False
    return isinstance(inputs, Iterable)


def opencv_frames(
    items: Iterable[Any], budget: int | None = None, frames: slice | None = None, sample: int | None = None
) -> Iterator[np.ndarray]:
    """Yield each item as an array in OpenCV's layout: arrays as they are, image files decoded whole,
    and the frames of video files (``frames`` of each, then ``sample`` evenly spaced ones of those).

    Files are decoded into one buffer reused for every file of the same shape
    (the yielded array is overwritten by the next file). Files of other colour
    meanings than gray, RGB and RGBA are refused.
    """
    from . import open_source
    from .video import is_video, probe_video, select_frames, video_frames

    buffer: np.ndarray | None = None
    with FilePool() as pool:
        for index, item in enumerate(items):
            if isinstance(item, np.ndarray):
                yield item
                continue
            if not isinstance(item, (str, os.PathLike)):
                raise UsageError(f"frame #{index}: expected a numpy array or a path, got {type(item).__name__}")
            if is_video(item):
                video = probe_video(item)
                chosen = select_frames(video.frames, frames, sample)
                log.info(
                    "%s: %d of %d frames (%s%s)", video.name, len(chosen), video.frames,
                    "all" if frames is None else f"frames {frames.start}:{frames.stop}:{frames.step}",
                    f", {sample} evenly spaced" if sample is not None else "",
                )
                yield from video_frames(video, chosen)
                continue
            with open_source(item, pool, index, budget=budget) as source:
                info = source.info
                if info.photometric not in ("minisblack", "rgb") or info.samples == 2:
                    raise UnsupportedInputError(
                        f"{info.name}: frames from an iterable are gray, RGB or RGBA, not {info.describe()}"
                    )
                if buffer is None or buffer.shape != info.shape or buffer.dtype != info.dtype:
                    buffer = None
                    buffer = Buffer("decoded frame", info.shape, info.dtype).allocate()
                source.read_band(Band(0, info.height), buffer)
            if info.photometric == "rgb":
                swap_red_blue(buffer, inplace=True)
            yield buffer[:, :, 0] if info.samples == 1 else buffer
