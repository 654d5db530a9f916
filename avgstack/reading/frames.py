"""Frames from an iterable (a generator, ``map``, a camera loop): one at a time, in OpenCV's layout.

A one-shot iterable cannot be read twice nor in bands, so it is reduced frame
by frame through :class:`avgstack.Accumulator`; :func:`is_one_shot` tells such
inputs from sequences, which the band engine reads as files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ..buffers import Buffer
from ..errors import UnsupportedInputError, UsageError
from ..windows import Band
from .files import FilePool
from .layout import swap_red_blue

__all__ = ["is_one_shot", "opencv_frames"]


def is_one_shot(inputs: Any) -> bool:
    """True for iterables that are not sequences (generators, iterators, ``map``, sets ...)."""
    if isinstance(inputs, (str, bytes, os.PathLike, np.ndarray, Sequence)):
        return False
    return isinstance(inputs, Iterable)


def opencv_frames(items: Iterable[Any], budget: int | None = None) -> Iterator[np.ndarray]:
    """Yield each item as an array in OpenCV's layout: arrays as they are, image files decoded whole.

    Files are decoded into one buffer reused for every file of the same shape
    (the yielded array is overwritten by the next file). Files of other colour
    meanings than gray, RGB and RGBA are refused.
    """
    from . import open_source

    buffer: np.ndarray | None = None
    with FilePool() as pool:
        for index, item in enumerate(items):
            if isinstance(item, np.ndarray):
                yield item
                continue
            if not isinstance(item, (str, os.PathLike)):
                raise UsageError(f"frame #{index}: expected a numpy array or a path, got {type(item).__name__}")
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
