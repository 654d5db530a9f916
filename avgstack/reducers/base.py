"""The reducer contract: what to compute over a band's frames, and which buffers that needs.

Two kinds, as dask's reductions split chunk work from aggregation:

* **frame** reducers are fed one frame's rows at a time (mean, weighted sum,
  later min, max, variance): ``reset(rows)``, ``add(rows, index)`` for every
  frame, then ``finish(out)``.
* **cube** reducers need the rows of all N frames of a band at once (median,
  percentiles, clipping): ``reset(rows)``, then ``reduce(cube, out)`` with a
  ``(N, rows, width, samples)`` array.

Each reducer declares every buffer it needs for a band of a given height,
including the input rows it is fed (:meth:`Reducer.declare`), and allocates
from those same declarations. A :class:`ReduceSpec` is the picklable
description of the job's reduction, from which any thread, process or cluster
worker builds the same reducer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..buffers import Buffer, find

__all__ = ["FRAME", "CUBE", "ReduceSpec", "Reducer", "input_buffer_name"]

FRAME = "frame"
CUBE = "cube"


@dataclass(frozen=True)
class ReduceSpec:
    """What a job computes, as a picklable value.

    Attributes
    ----------
    method : str
        ``'mean'``, ``'weighted'``, ...
    count : int
        Number of frames.
    in_dtype, out_dtype : numpy.dtype
        Sample types of the inputs (as decoded) and of the result.
    weights : tuple of float, optional
        One per frame, for weighted methods.
    out_bits : int, optional
        Packed bit depth of the output, which narrows its range.
    params : tuple of (str, value)
        Method parameters (percentile, sigma bounds, ...).
    """

    method: str
    count: int
    in_dtype: np.dtype
    out_dtype: np.dtype
    weights: tuple[float, ...] | None = None
    out_bits: int | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_dtype", np.dtype(self.in_dtype))
        object.__setattr__(self, "out_dtype", np.dtype(self.out_dtype))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def param(self, name: str, default: Any = None) -> Any:
        """Value of a method parameter."""
        return dict(self.params).get(name, default)


def input_buffer_name(kind: str) -> str:
    """Name of the declared buffer a reducer of ``kind`` is fed from."""
    return "input cube" if kind == CUBE else "input band"


class Reducer(ABC):
    """Reduces the frames of one band of rows at a time into output rows.

    Parameters
    ----------
    spec : ReduceSpec
        What to compute.
    shape : tuple of int
        ``(rows, width, samples)`` of the tallest band this reducer handles.
    """

    kind: ClassVar[str] = FRAME

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        self.spec = spec
        rows, width, samples = (int(n) for n in shape)
        self.shape: tuple[int, int, int] = (rows, width, samples)
        self.count = spec.count
        self.out_dtype = spec.out_dtype
        self._rows = self.shape[0]
        self._size = int(np.prod(self.shape, dtype=np.int64))
        self._declared = self.state_buffers(spec, self.shape)

    # -- declarations ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        """Buffers the reducer itself holds for bands of ``shape``."""

    @classmethod
    def input_buffer(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> Buffer:
        """The input rows it is fed: one frame's band, or every frame's (a cube)."""
        if cls.kind == CUBE:
            return Buffer(input_buffer_name(CUBE), (spec.count, *shape), spec.in_dtype)
        return Buffer(input_buffer_name(FRAME), shape, spec.in_dtype)

    @classmethod
    def declare(cls, spec: ReduceSpec, shape: tuple[int, int, int], *, inputs: bool = True) -> list[Buffer]:
        """Every buffer a band of ``shape`` needs: input rows (unless ``inputs`` is False) and state."""
        state = cls.state_buffers(spec, shape)
        return [cls.input_buffer(spec, shape), *state] if inputs else state

    def _allocate(self, name: str) -> np.ndarray:
        """Allocate the declared state buffer ``name``."""
        return find(self._declared, name).allocate()

    # -- work ------------------------------------------------------------------

    def reset(self, rows: int) -> None:
        """Start a band of ``rows`` rows (at most the declared height)."""
        if rows > self.shape[0]:
            raise ValueError(f"band of {rows} rows exceeds planned {self.shape[0]}")
        self._rows = rows
        self._size = rows * int(np.prod(self.shape[1:], dtype=np.int64))
        self._reset(self._size)

    def _reset(self, size: int) -> None:
        """Prepare state for a band of ``size`` samples."""

    def add(self, frame: np.ndarray, index: int) -> None:
        """Frame reducers: add band rows ``frame`` of input ``index``."""
        if frame.shape[0] != self._rows or frame.size != self._size:
            raise ValueError(f"frame band {frame.shape} does not match band of {self._rows} rows")
        self._add(np.ascontiguousarray(frame).reshape(-1), index)

    def _add(self, flat: np.ndarray, index: int) -> None:
        raise TypeError(f"{type(self).__name__} is fed whole cubes, not frames")

    def finish(self, out: np.ndarray) -> int:
        """Frame reducers: write the band's result into ``out``; return the clipped sample count."""
        if out.size != self._size:
            raise ValueError(f"output band {out.shape} does not match band of {self._rows} rows")
        if out.flags.c_contiguous:
            return self._finish(out.reshape(-1))
        flat = np.empty(self._size, self.out_dtype)
        clipped = self._finish(flat)
        out[...] = flat.reshape(out.shape)
        return clipped

    def _finish(self, out: np.ndarray) -> int:
        raise TypeError(f"{type(self).__name__} is fed whole cubes, not frames")

    def reduce(self, cube: np.ndarray, out: np.ndarray) -> int:
        """Cube reducers: reduce ``cube`` ``(count, rows, width, samples)`` into ``out``; return clipped."""
        raise TypeError(f"{type(self).__name__} is fed one frame at a time")
