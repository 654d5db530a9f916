"""Declared buffers: every allocation a job makes, described before any pixel is read.

Each part that allocates (reducers, readers' decode scratch, sinks and their
encoders) declares its buffers as :class:`Buffer` values for a given band
height. The planner sums the declarations to choose the band height; the
executor allocates from the very same values (:meth:`Buffer.allocate`). There
is no second estimate: a buffer that is not declared is not allocated.

Buffers held by a library (a codec's output, an encoder's scratch) are
declared with ``owned=False``: counted by the planner, allocated by the
library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["Buffer", "opaque", "total", "breakdown", "find"]


@dataclass(frozen=True)
class Buffer:
    """One declared allocation: ``copies`` arrays of ``shape`` and ``dtype``.

    Attributes
    ----------
    name : str
        What it holds, for plans and messages (``'accumulator'``, ``'encoder'``).
    shape : tuple of int
        Shape of one copy.
    dtype : numpy.dtype
        Element type.
    copies : int
        How many such arrays exist at once (per thread, double buffering).
    owned : bool
        True when avgstack allocates it (with :meth:`allocate`); False when a
        library does and the declaration only counts it.
    """

    name: str
    shape: tuple[int, ...]
    dtype: Any = np.dtype(np.uint8)  # anything np.dtype() takes; stored as a numpy dtype
    copies: int = 1
    owned: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if any(n < 0 for n in self.shape) or self.copies < 0:
            raise ValueError(f"buffer {self.name!r}: negative size {self.shape} x {self.copies}")

    @property
    def nbytes(self) -> int:
        """Bytes of every copy together."""
        return math.prod(self.shape) * self.dtype.itemsize * self.copies

    def allocate(self) -> np.ndarray:
        """Allocate one copy (uninitialised)."""
        if not self.owned:
            raise TypeError(f"buffer {self.name!r} is allocated by a library, not by avgstack")
        return np.empty(self.shape, self.dtype)

    def times(self, copies: int) -> "Buffer":
        """The same buffer, ``copies`` times as many (one per thread, say)."""
        return Buffer(self.name, self.shape, self.dtype, self.copies * copies, self.owned)


def opaque(name: str, nbytes: int, copies: int = 1) -> Buffer:
    """A buffer of ``nbytes`` that a library allocates (decoder or encoder scratch)."""
    return Buffer(name, (max(0, int(nbytes)),), np.uint8, copies, owned=False)


def total(buffers: Iterable[Buffer]) -> int:
    """Bytes of all ``buffers``."""
    return sum(b.nbytes for b in buffers)


def breakdown(buffers: Iterable[Buffer]) -> dict[str, int]:
    """Bytes per buffer name (buffers of one name added up)."""
    out: dict[str, int] = {}
    for b in buffers:
        out[b.name] = out.get(b.name, 0) + b.nbytes
    return out


def find(buffers: Sequence[Buffer], name: str) -> Buffer:
    """The declared buffer called ``name``."""
    for b in buffers:
        if b.name == name:
            return b
    raise KeyError(f"no buffer {name!r} declared")
