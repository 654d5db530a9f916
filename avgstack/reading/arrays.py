"""numpy arrays as inputs, in OpenCV's layout (BGR/BGRA for colour)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError, UnsupportedInputError
from ..windows import Band
from .base import Source
from .layout import info_for_opencv_layout

__all__ = ["ArraySource"]

_SUPPORTED = set("bBhHiIlLqQefd?")


class ArraySource(Source):
    """An in-memory image laid out as ``cv2.imread`` returns it.

    The caller's array is never modified.
    """

    def __init__(self, array: np.ndarray, name: str) -> None:
        if not isinstance(array, np.ndarray):
            raise InputError(f"{name}: expected a numpy array or a path, got {type(array).__name__}")
        if array.ndim not in (2, 3) or 0 in array.shape:
            raise InputError(f"{name}: expected shape (rows, cols) or (rows, cols, channels), got {array.shape}")
        if array.dtype.char not in _SUPPORTED:
            raise UnsupportedInputError(f"{name}: {array.dtype} samples are not supported")
        self.array = array if array.ndim == 3 else array[:, :, None]
        h, w, c = self.array.shape
        self.info = info_for_opencv_layout(name, h, w, c, array.dtype.newbyteorder("="), "array", True)

    def read_band(self, band: Band, out: np.ndarray) -> int:
        rows = self.array[band.toslice()]
        if rows.shape[2] in (3, 4):  # BGR(A) to RGB(A), channel by channel: no temporary
            out[..., 0], out[..., 1], out[..., 2] = rows[..., 2], rows[..., 1], rows[..., 0]
            if rows.shape[2] == 4:
                out[..., 3] = rows[..., 3]
        else:
            out[...] = rows
        return rows.nbytes
