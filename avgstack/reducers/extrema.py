"""Frame reducers for minimum, maximum and the exact sum.

Each is fed one frame's band at a time, like the mean, so it holds one
accumulator row per band row whatever the number of frames.

* ``min`` / ``max``: ``np.minimum`` / ``np.maximum`` folded over the frames in
  order, as ``np.min(axis=0)`` does: stored values out, NaN propagates.
* ``sum``: integers are summed exactly (in the smallest integer type that
  cannot overflow) and saturated to the output type, counting the saturated
  samples; floats are summed in double-double, as the mean is, and rounded
  once into the output type.

Missing data: an invalid sample becomes the fold's neutral value (``min``:
+inf or the type's largest value; ``max``: -inf or its smallest; ``sum``: 0),
so it changes nothing; a sample with no valid frame becomes nodata. CIELab
sums take off the offset their a*/b* were read with once per valid frame but
one (see :mod:`avgstack.reading.lab`). All three are incremental
(:class:`avgstack.Accumulator`): their state is the running extremum or sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..arithmetic import (
    CHUNK,
    IntegerMean,
    _chunks,
    _clip_into,
    _round_into,
    _scratch,
    sample_range,
    store_float,
)
from ..buffers import Buffer
from .base import Reducer, ReduceSpec, take
from .compensated import CompensatedMean

__all__ = ["Extremum", "FloatSum", "IntegerSum", "Maximum", "Minimum", "sum_class"]


class Extremum(Reducer):
    """Running minimum or maximum of the frames."""

    fold: Callable[..., Any] = staticmethod(np.minimum)
    #: +1: the neutral value is the largest (minimum); -1: the smallest (maximum).
    side: ClassVar[int] = 1
    incremental = True

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

    def neutral(self) -> float:
        dtype = self.spec.in_dtype
        if dtype.kind == "f":
            return math.inf * self.side
        if dtype == np.bool_:
            return int(self.side > 0)
        info = np.iinfo(dtype)
        return int(info.max) if self.side > 0 else int(info.min)

    def _finish(self, out: np.ndarray) -> int:
        acc = self._acc[: out.size]
        if out.dtype.kind not in "uib":  # finite values too large for the type saturate, as means do
            return store_float(acc, out)
        lo, hi = self.out_range
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            if acc.dtype.kind == "f":
                t = self._t[: stop - start]
                t[...] = acc[start:stop]
                if self.valid_counts is not None:  # no valid frame: nodata, not an infinity clipped
                    t[self.valid_counts[start:stop] == 0] = 0.0
                clipped += _round_into(t, out[start:stop], lo, hi)
            else:
                clipped += _clip_into(acc[start:stop], out[start:stop], lo, hi)
        return clipped

    def _state(self) -> dict[str, np.ndarray]:
        return {"extremum": self._acc[: self._size]}

    def _restore(self, state: Any) -> None:
        self._first = self.added == 0
        if not self._first:
            self._acc[: self._size] = take(state, "extremum", (self._size,), self._acc.dtype)


class Minimum(Extremum):
    """Smallest value of every sample over the frames."""

    fold = staticmethod(np.minimum)


class Maximum(Extremum):
    """Largest value of every sample over the frames."""

    fold = staticmethod(np.maximum)
    side = -1


class IntegerSum(IntegerMean):
    """Exact sum of integer samples, saturated to the output type (saturated samples are counted)."""

    def _finish(self, out: np.ndarray) -> int:
        lo, hi = self.out_range
        acc = self._acc[: out.size]
        offset = self.spec.param("signed_offset")
        if out.dtype.kind not in "uib" and not offset:
            return store_float(acc, out)  # one rounding of the exact integer
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            s = acc[start:stop]
            if offset:
                s = self._lab_corrected(s, start, stop, int(offset))
            if out.dtype.kind not in "uib":
                clipped += store_float(s, out[start:stop])
            else:
                clipped += _clip_into(s, out[start:stop], lo, hi)
        return clipped

    def _lab_corrected(self, s: np.ndarray, start: int, stop: int, offset: int) -> np.ndarray:
        """CIELab a*/b* sums (samples 1 and 2) read as ``a + offset``: take off ``offset * (n - 1)``."""
        frames: Any = self.count if self.valid_counts is None else self.valid_counts[start:stop].astype(np.int64)
        channel = np.arange(start, stop) % self.shape[2]
        ab = (channel == 1) | (channel == 2)
        return s.astype(np.int64) - np.where(ab, offset * (np.asarray(frames, np.int64) - 1), 0)


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
                    clipped += store_float(s, dst)
        return clipped


def sum_class(spec: ReduceSpec) -> type[Reducer]:
    """The reducer of an unweighted sum."""
    return IntegerSum if spec.in_dtype.kind in "uib" else FloatSum
