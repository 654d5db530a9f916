"""Palette (indexed colour) TIFFs, expanded through their colour map to RGB while a band is read.

A TIFF colour map holds 16-bit red, green and blue entries. Averaging colour
indices is meaningless, so every band of indices is expanded to RGB before it
is reduced: the output is uint16, or uint8 when every entry is a multiple of
257 (an 8-bit colour stored in 16 bits, as most writers do), so that those
files keep their 8-bit values exactly.

The expansion needs no band-sized buffer of its own: the indices of a band are
decoded into the tail of the band's RGB buffer (they take at most a third of
it), then expanded from the top in chunks of rows, each chunk's indices copied
first into a small scratch (:func:`scratch_bytes`, declared with the reader's
decode scratch). An expanded chunk never reaches indices not yet copied.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from ..errors import InputError, UnsupportedInputError
from .base import ImageInfo

__all__ = ["Palette", "scratch_bytes", "describe", "notes"]

#: Bytes of indices copied and expanded at a time.
CHUNK_BYTES = 64 * 1024


def scratch_bytes(width: int, index_dtype: np.dtype) -> int:
    """Bytes of the index scratch one band read needs (at least one row)."""
    row = width * np.dtype(index_dtype).itemsize
    return max(row, (CHUNK_BYTES // row) * row)


def describe(bits: int, dtype: np.dtype) -> str:
    """What was done, for ``-v`` and reports."""
    return f"{bits}-bit palette expanded through its colour map to RGB {np.dtype(dtype).name}"


class Palette:
    """A TIFF colour map and the RGB type it expands to.

    Parameters
    ----------
    colormap : ndarray
        ``(3, entries)`` uint16, as tifffile reads tag 320.
    bits : int
        Bits per stored index.
    name : str
        The input's name, for messages.
    """

    def __init__(self, colormap: object, bits: int, index_dtype: np.dtype, name: str) -> None:
        if colormap is None:
            raise InputError(f"{name}: damaged TIFF: palette image without a colour map (tag 320)")
        cmap = np.asarray(colormap)
        if cmap.ndim != 2 or cmap.shape[0] != 3 or cmap.shape[1] == 0 or cmap.dtype.kind not in "ui":
            raise InputError(f"{name}: damaged TIFF: colour map of shape {cmap.shape} for {bits}-bit indices")
        if bits > 16:
            raise UnsupportedInputError(f"{name}: {bits}-bit palette indices are not supported")
        cmap = cmap.astype(np.uint16)
        eight = bool(np.all(cmap % 257 == 0))
        self.dtype = np.dtype(np.uint8 if eight else np.uint16)
        #: ``(entries, 3)``: one RGB row per index, in the output type.
        self.table = np.ascontiguousarray((cmap // 257 if eight else cmap).T.astype(self.dtype))
        self.bits = bits
        self.index_dtype = np.dtype(index_dtype)

    def read(self, out: np.ndarray, read_indices: Callable[[np.ndarray], int]) -> int:
        """Fill RGB rows ``out`` ``(rows, width, 3)``: ``read_indices`` decodes the indices into the array it
        is given; returns what it returns (bytes read)."""
        rows, width, _ = out.shape
        if not out.flags.c_contiguous:
            raise ValueError("palette bands are expanded in place and must be contiguous")
        isz = self.index_dtype.itemsize
        raw = out.reshape(-1).view(np.uint8)
        nbytes = rows * width * isz
        indices = raw[raw.size - nbytes :].view(self.index_dtype).reshape(rows, width, 1)
        got = read_indices(indices)
        step = max(1, scratch_bytes(width, self.index_dtype) // (width * isz))
        scratch = np.empty((step, width), self.index_dtype)
        for top in range(0, rows, step):
            k = min(step, rows - top)
            idx = scratch[:k]
            idx[...] = indices[top : top + k, :, 0]
            # 'clip': indices past a short colour map take its last entry (and out= is not buffered)
            np.take(self.table, idx, axis=0, out=out[top : top + k], mode="clip")
        return got


def notes(infos: Iterable[ImageInfo]) -> tuple[str, ...]:
    """One line per kind of palette expansion in a stack, naming the first input and how many."""
    kinds: dict[str, list[str]] = {}
    for info in infos:
        what = info.metadata.get("palette")
        if what:
            kinds.setdefault(what, []).append(info.name)
    return tuple(
        f"{names[0]}{f' and {len(names) - 1} more' if len(names) > 1 else ''}: {what}"
        for what, names in kinds.items()
    )
