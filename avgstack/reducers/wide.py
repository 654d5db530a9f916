"""Exact mean of 64-bit integer samples (uint64, int64), whose sums do not fit in 64 bits.

Each sample ``x`` is split into a high word ``x >> 32`` (signed for int64) and a
low word ``x & 0xFFFFFFFF``; the two are summed in separate 64-bit
accumulators, which cannot overflow for fewer than 2**31 frames. The exact sum
is ``H * 2**32 + L``; it is divided by the frame count in two integer steps
(long division by 32-bit digits) and rounded half to even once, so the result
is the exactly rounded mean, as for narrower integers, and K copies of a file
give that file back.
"""

from __future__ import annotations

import numpy as np

from ..buffers import Buffer, opaque
from .base import Reducer, ReduceSpec

__all__ = ["WideIntegerMean", "is_wide"]

#: Samples per chunk of the division (int64/uint64 temporaries of 128 KiB).
_CHUNK = 1 << 14
_MASK = np.uint64(0xFFFFFFFF)
#: Frames the two-word sums hold without overflow (the high word sum is below 2**31 * count).
MAX_FRAMES = 2**31 - 1


def is_wide(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is a 64-bit integer type (summed in two words)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "ui" and dtype.itemsize == 8


class WideIntegerMean(Reducer):
    """Exact, correctly rounded (half to even) mean of uint64 or int64 samples."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        if spec.count > MAX_FRAMES:
            raise ValueError(f"cannot average more than {MAX_FRAMES} frames of 64-bit integers")
        self._signed = spec.in_dtype.kind == "i"
        self._hi = self._allocate("accumulator")
        self._lo = self._allocate("accumulator (low words)")

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        return [
            Buffer("accumulator", (size,), np.int64),
            Buffer("accumulator (low words)", (size,), np.uint64),
            opaque("arithmetic temporaries", 12 * _CHUNK * 8),
        ]

    def _reset(self, size: int) -> None:
        self._hi[:size] = 0
        self._lo[:size] = 0

    def _add(self, flat: np.ndarray, index: int) -> None:
        n = flat.size
        bits = flat.view(np.uint64)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            x = bits[start:stop]
            lo = self._lo[start:stop]
            lo += x & _MASK
            hi = self._hi[start:stop]
            if self._signed:
                hi += flat[start:stop] >> 32  # arithmetic shift: the signed high word
            else:
                hi += (x >> np.uint64(32)).astype(np.int64)

    def _finish(self, out: np.ndarray) -> int:
        n = self.count
        clipped = 0
        for start in range(0, out.size, _CHUNK):
            stop = min(start + _CHUNK, out.size)
            q, r = self._divide(start, stop)
            clipped += _store(q, r, n, out[start:stop], self.spec)
        return clipped

    def _divide(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """``(q, r)``: the sum's floor quotient by the count (as uint64 bits of the 64-bit result) and remainder."""
        n = self.count
        lo = self._lo[start:stop]
        # carry the low words' overflow past 32 bits into the high words: sum = hi * 2**32 + lo, lo < 2**32
        hi = self._hi[start:stop] + (lo >> np.uint64(32)).astype(np.int64)
        lo = lo & _MASK
        q1, r1 = np.divmod(hi, n)  # floor division: 0 <= r1 < n
        rest = (r1.astype(np.uint64) << np.uint64(32)) | lo  # r1 * 2**32 + lo < n * 2**32 <= 2**63
        q2, r2 = np.divmod(rest, np.uint64(n))
        q = (q1.astype(np.uint64) << np.uint64(32)) + q2  # wraps to the 64-bit pattern of the quotient
        return q, r2


def _store(q: np.ndarray, r: np.ndarray, n: int, out: np.ndarray, spec: ReduceSpec) -> int:
    """Round ``q + r / n`` half to even into ``out``; return how many samples were clipped."""
    in_dtype = spec.in_dtype
    if out.dtype.kind == "f":
        # the nearest float to the exact mean, within one rounding of float64
        exact = q.view(in_dtype).astype(np.float64) + r.astype(np.float64) / n
        out[...] = exact
        return 0
    twice = r << np.uint64(1)
    up = (twice > n) | ((twice == n) & (q & np.uint64(1)).astype(bool))
    q = q + up.astype(np.uint64)
    values = q.view(in_dtype)
    if out.dtype == in_dtype and spec.out_bits is None:
        out[...] = values
        return 0
    info = np.iinfo(out.dtype)
    lo, hi = int(info.min), int(info.max)
    if spec.out_bits is not None and out.dtype.kind == "u":
        hi = min(hi, 2**spec.out_bits - 1)
    low = values < lo if in_dtype.kind == "i" or lo > 0 else np.zeros(values.shape, bool)
    high = values > hi if hi < int(np.iinfo(in_dtype).max) else np.zeros(values.shape, bool)
    clipped = int(np.count_nonzero(low)) + int(np.count_nonzero(high))
    if clipped:
        values = np.where(low, in_dtype.type(max(lo, int(np.iinfo(in_dtype).min))), values)
        values = np.where(high, in_dtype.type(hi), values)
    out[...] = values.astype(out.dtype)
    return clipped
