"""Frame reducers for minimum, maximum and the exact sum.

Each is fed one frame's band at a time, like the mean, so it holds one
accumulator row per band row whatever the number of frames.

* ``min`` / ``max``: ``np.minimum`` / ``np.maximum`` folded over the frames in
  order, as ``np.min(axis=0)`` does: stored values out, NaN propagates.
* ``sum``: integers are summed exactly (in the smallest integer type that
  cannot overflow) and saturated to the output type, counting the saturated
  samples; floats are summed in double-double, as the mean is, and rounded
  once into the output type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..arithmetic import (
    CHUNK,
    CompensatedMean,
    IntegerMean,
    _chunks,
    _clip_into,
    _round_into,
    _scratch,
    sample_range,
)
from ..buffers import Buffer
from .base import Reducer, ReduceSpec

__all__ = ["Extremum", "FloatSum", "IntegerSum", "Maximum", "Minimum", "sum_class"]


class Extremum(Reducer):
    """Running minimum or maximum of the frames."""

    fold: Callable[..., Any] = staticmethod(np.minimum)

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        self._acc = self._allocate("accumulator")
        self._t = self._allocate("rounding chunk")

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        return [
            Buffer("accumulator", (size,), spec.in_dtype),
            Buffer("rounding chunk", (min(CHUNK, size),), np.dtype(np.float64)),
            _scratch(),
        ]

    def _reset(self, size: int) -> None:
        self._first = True

    def _add(self, flat: np.ndarray, index: int) -> None:
        acc = self._acc[: flat.size]
        if self._first:
            acc[...] = flat
            self._first = False
        else:
            self.fold(acc, flat, out=acc)

    def _finish(self, out: np.ndarray) -> int:
        acc = self._acc[: out.size]
        if out.dtype.kind not in "uib":
            out[...] = acc
            return 0
        lo, hi = self.out_range
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            if acc.dtype.kind == "f":
                t = self._t[: stop - start]
                t[...] = acc[start:stop]
                clipped += _round_into(t, out[start:stop], lo, hi)
            else:
                clipped += _clip_into(acc[start:stop], out[start:stop], lo, hi)
        return clipped


class Minimum(Extremum):
    """Smallest value of every sample over the frames."""

    fold = staticmethod(np.minimum)


class Maximum(Extremum):
    """Largest value of every sample over the frames."""

    fold = staticmethod(np.maximum)


class IntegerSum(IntegerMean):
    """Exact sum of integer samples, saturated to the output type (saturated samples are counted)."""

    def _finish(self, out: np.ndarray) -> int:
        lo, hi = self.out_range
        acc = self._acc[: out.size]
        if out.dtype.kind not in "uib":
            out[...] = acc  # one rounding of the exact integer
            return 0
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            clipped += _clip_into(acc[start:stop], out[start:stop], lo, hi)
        return clipped


class FloatSum(CompensatedMean):
    """Sum of float samples in double-double, rounded once into the output type."""

    def _finish(self, out: np.ndarray) -> int:
        out_int = self.out_dtype.kind in "uib"
        lo_r, hi_r = self.out_range
        clipped = 0
        with np.errstate(invalid="ignore", over="ignore"):
            for start in _chunks(out.size):
                stop = min(start + CHUNK, out.size)
                hi, lo = self._hi[start:stop], self._lo[start:stop]
                # an exact sum keeps its sign (-0.0 + -0.0); an infinite or NaN one its value
                s = np.where(np.isfinite(hi) & (lo != 0), hi + lo, hi)
                if self._scaled is not None:
                    scaled = self._scaled[start:stop]
                    s[scaled] *= 2.0**self._shift  # sums that overflowed the float64 range
                dst = out[start:stop]
                if out_int:
                    clipped += _round_into(s, dst, lo_r, hi_r)
                else:
                    dst[...] = s
        return clipped


def sum_class(spec: ReduceSpec) -> type[Reducer]:
    """The reducer of an unweighted sum."""
    return IntegerSum if spec.in_dtype.kind in "uib" else FloatSum
