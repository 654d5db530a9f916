"""The mean of float samples: a double-double sum and a corrected division.

See :class:`CompensatedMean`. Helpers (chunking, rounding, exact products) live in
:mod:`avgstack.arithmetic`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arithmetic import (
    CHUNK,
    _chunks,
    _round_into,
    _scratch,
    _two_prod_scalar,
    sample_range,
    store_float,
)
from ..buffers import Buffer
from .base import Reducer as Accumulator
from .base import ReduceSpec, take

__all__ = ["CompensatedMean"]


class CompensatedMean(Accumulator):
    """Mean of float samples with a double-double sum and a corrected division.

    float64 samples so large that their sum overflows (GIS NoData such as
    ``-1.7976931348623157e308``) switch, sample by sample, to a sum scaled by
    ``2**-E`` with ``2**E >= 2 * count``; scaling by a power of two is exact for
    such magnitudes, so their mean comes back exactly too.
    """

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        self._hi = self._allocate("accumulator")
        self._lo = self._allocate("accumulator (low part)")
        self._x, self._s, self._t = self._allocate("sum chunks")
        self._can_overflow = spec.in_dtype.itemsize >= 8
        self._shift = int(np.ceil(np.log2(max(spec.count, 1)))) + 1
        self._scaled: np.ndarray | None = None  # allocated when a sum first overflows

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        buffers = [
            Buffer("accumulator", (size,), np.float64),
            Buffer("accumulator (low part)", (size,), np.float64),
            Buffer("sum chunks", (3, min(CHUNK, size)), np.float64),
            _scratch(),
        ]
        if spec.in_dtype.itemsize >= 8:
            buffers.append(Buffer("overflow flags", (size,), np.bool_))
        return buffers

    def _reset(self, size: int) -> None:
        self._lo[:size] = 0.0
        self._first = True
        if self._scaled is not None:
            self._scaled[:size] = False

    def _add(self, flat: np.ndarray, index: int) -> None:
        if self._first:
            # start from the first frame, not from +0.0, so that -0.0 survives
            with np.errstate(invalid="ignore"):  # signalling NaNs stay NaN, quietly
                self._hi[: flat.size] = flat
            self._first = False
            return
        down = 2.0**-self._shift
        with np.errstate(invalid="ignore", over="ignore"):
            for start in _chunks(flat.size):
                stop = min(start + CHUNK, flat.size)
                k = stop - start
                hi, lo = self._hi[start:stop], self._lo[start:stop]
                x, s, t = self._x[:k], self._s[:k], self._t[:k]
                x[...] = flat[start:stop]
                scaled = None if self._scaled is None else self._scaled[start:stop]
                if scaled is not None and scaled.any():
                    x[scaled] *= down
                np.add(hi, x, out=s)
                overflow = None
                if self._can_overflow and not np.isfinite(s).all():
                    overflow = ~np.isfinite(s) & np.isfinite(hi) & np.isfinite(x)
                    if overflow.any():
                        saved = hi[overflow], lo[overflow], x[overflow]
                    else:
                        overflow = None
                # TwoSum: s + e == hi + x exactly
                np.subtract(s, hi, out=t)  # t = bb
                np.subtract(x, t, out=x)  # x - bb
                np.subtract(s, t, out=t)  # s - bb
                np.subtract(hi, t, out=t)  # hi - (s - bb)
                np.add(t, x, out=t)  # e
                np.add(lo, t, out=lo)
                hi[...] = s
                if overflow is not None:
                    self._rescale(start, overflow, *saved)

    incremental = True

    def _state(self) -> dict[str, np.ndarray]:
        size = self._size
        state = {"sum": self._hi[:size], "sum low part": self._lo[:size], "shift": np.array(self._shift, np.int64)}
        if self._scaled is not None:
            state["overflowed"] = self._scaled[:size]
        return state

    def _restore(self, state: Any) -> None:
        self._first = self.added == 0
        if self._first:
            return
        size = self._size
        f64 = np.dtype(np.float64)
        self._hi[:size] = take(state, "sum", (size,), f64)
        self._lo[:size] = take(state, "sum low part", (size,), f64)
        if "overflowed" not in state:
            return
        shift = int(take(state, "shift", (), np.dtype(np.int64)))
        if not 1 <= shift <= 64:
            raise ValueError(f"state 'shift' is {shift}, expected 1 to 64")
        if self._scaled is None:
            self._scaled = self._allocate("overflow flags")
        flags = self._scaled[:size]
        flags[...] = take(state, "overflowed", (size,), np.dtype(np.bool_))
        if shift != self._shift:  # saved with another capacity: rescale by a power of two, exactly
            factor = 2.0 ** (shift - self._shift)
            self._hi[:size][flags] *= factor
            self._lo[:size][flags] *= factor

    def _rescale(self, start: int, where: np.ndarray, hi: np.ndarray, lo: np.ndarray, x: np.ndarray) -> None:
        """Redo the sums that overflowed at ``where`` (chunk-relative) scaled by ``2**-shift``."""
        if self._scaled is None:
            self._scaled = self._allocate("overflow flags")
            self._scaled[...] = False
        idx = np.flatnonzero(where) + start
        down = 2.0**-self._shift
        a, b, lo = hi * down, x * down, lo * down
        s = a + b
        bb = s - a
        e = (a - (s - bb)) + (b - bb)
        self._hi[idx] = s
        self._lo[idx] = lo + e
        self._scaled[idx] = True

    def neutral(self) -> float:
        return -0.0  # x + -0.0 == x for every x, -0.0 included

    def _finish(self, out: np.ndarray) -> int:
        out_int = self.out_dtype.kind in "uib"
        lo_r, hi_r = self.out_range
        clipped = 0
        with np.errstate(invalid="ignore", over="ignore"):
            for start in _chunks(out.size):
                stop = min(start + CHUNK, out.size)
                hi = self._hi[start:stop]
                lo = self._lo[start:stop]
                # the exact product below splits q, which overflows above ~2**996: scale those down
                up = np.where(np.abs(hi) >= 2.0**990, 2.0**64, 1.0)
                if (up != 1.0).any():
                    hi, lo = hi / up, lo / up
                if self._scaled is not None:
                    up[self._scaled[start:stop]] *= 2.0**self._shift  # undo the overflow scaling too
                big = up != 1.0
                n = float(self.count) if self.valid_counts is None else (
                    np.maximum(self.valid_counts[start:stop], 1).astype(np.float64)
                )
                q = hi / n
                if self.count > 1:
                    p, e = _two_prod_scalar(q, n)
                    r = (hi - p) - e + lo
                    refined = q + r / n
                    # inf and nan sums keep the plain quotient, as do exact ones
                    # (adding +0.0 would turn -0.0 into +0.0)
                    q = np.where(np.isfinite(refined) & (r != 0), refined, q)
                if big.any():
                    q *= up
                dst = out[start:stop]
                if out_int:
                    clipped += _round_into(q, dst, lo_r, hi_r)
                else:
                    clipped += store_float(q, dst)
        return clipped
