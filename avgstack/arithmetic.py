"""The arithmetic: accumulate bands of frames, then round them into the output.

Pure numpy on arrays, no I/O. Three accumulators cover every case:

* :class:`IntegerMean` -- plain mean of integer samples. Sums are exact in the
  smallest integer type that cannot overflow; the division is done once, in
  integers, rounding half to even. The result is the exactly rounded mean.
* :class:`CompensatedMean` -- plain mean of float samples. A double-double
  (TwoSum) accumulator keeps the sum to about 106 bits and the final division
  is corrected with an exact product, so the mean of K copies of ``x`` is
  ``x`` again, bit for bit, for float16, float32 and float64.
* :class:`WeightedSum` -- any weights: a float64 accumulator of ``w_i * x_i``.

The first lives here with the helpers every reducer shares (chunking, rounding
half to even, saturation, exact products); the other two in
:mod:`avgstack.reducers.compensated` and :mod:`avgstack.reducers.weighted`.

All work is done in chunks of :data:`CHUNK` samples so temporaries stay small
and cache resident.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .buffers import Buffer, opaque
from .reducers.base import Reducer, ReduceSpec, take

__all__ = [
    "Accumulator",
    "reducer_class",
    "IntegerMean",
    "make_accumulator",
    "sample_range",
    "CHUNK",
    "ARITHMETIC_SCRATCH",
]

#: Samples per chunk of the inner loops: 16 Ki float64 temporaries are 128 KiB, cache resident.
CHUNK = 1 << 14

#: Upper bound of the chunk-sized temporaries alive at once (about a dozen float64).
ARITHMETIC_SCRATCH = 16 * CHUNK * 8

_SPLITTER = 134217729.0  # 2**27 + 1, Dekker/Veltkamp split constant


def sample_range(dtype: np.dtype, bits: int | None = None) -> tuple[float, float]:
    """Return the representable range of an output sample type.

    ``bits`` narrows an unsigned integer type to a packed bit depth (12-bit
    samples stored in uint16 range from 0 to 4095).
    """
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return 0.0, 1.0
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if bits is not None and dtype.kind == "u" and bits < info.bits:
            return 0.0, float(2**bits - 1)
        if info.bits == 64:  # float(2**64 - 1) rounds up to 2**64: keep to floats the type holds
            return float(info.min), float(np.nextafter(float(info.max), 0.0))
        return float(info.min), float(info.max)
    finfo = np.finfo(dtype)
    return float(finfo.min), float(finfo.max)


def _chunks(n: int) -> range:
    return range(0, n, CHUNK)


def _flat(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    if not np.shares_memory(flat, array):  # pragma: no cover - defensive
        raise ValueError("band buffers must be contiguous")
    return flat


def _round_into(values: np.ndarray, out: np.ndarray, lo: float, hi: float) -> int:
    """Round float64 ``values`` half to even into integer ``out``; return clipped count."""
    np.rint(values, out=values)
    bad = np.isnan(values)
    clipped = int(np.count_nonzero(bad))
    if clipped:
        values[bad] = 0.0
    clipped += int(np.count_nonzero(values < lo)) + int(np.count_nonzero(values > hi))
    np.clip(values, lo, hi, out=values)
    out[...] = values
    return clipped


#: The frame reducers below are the arithmetic's accumulators.
Accumulator = Reducer


def _scratch(name: str = "arithmetic temporaries") -> Buffer:
    """Chunk-sized temporaries numpy allocates inside expressions."""
    return opaque(name, ARITHMETIC_SCRATCH)


def _int_sum_dtype(in_dtype: np.dtype, count: int) -> np.dtype:
    info = np.iinfo(np.uint8 if in_dtype == np.bool_ else in_dtype)
    lo, hi = info.min * count, info.max * count
    for candidate in (np.uint16, np.int16, np.uint32, np.int32, np.int64):
        c = np.iinfo(candidate)
        if c.bits <= info.bits:
            continue
        if c.min <= lo and hi <= c.max:
            return np.dtype(candidate)
    if lo >= np.iinfo(np.int64).min and hi <= np.iinfo(np.int64).max:  # pragma: no cover
        return np.dtype(np.int64)
    raise ValueError(f"cannot sum {count} frames of {in_dtype} exactly in 64 bits")


class IntegerMean(Accumulator):
    """Exact mean of integer (or bilevel) samples, rounded half to even."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        in_dtype, count = spec.in_dtype, spec.count
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        self.sum_dtype = _int_sum_dtype(in_dtype, count)
        info = np.iinfo(np.uint8 if in_dtype == np.bool_ else in_dtype)
        self._largest_sum = max(abs(int(info.min)), int(info.max)) * count
        # a mean lies within its inputs' range: clip only if the output range is narrower
        lo, hi = self.out_range
        self._may_clip = info.min < lo or info.max > hi or in_dtype == np.bool_ and hi < 1
        self._acc = self._allocate("accumulator")
        self._t = self._allocate("rounding chunk")

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        sum_dtype = _int_sum_dtype(spec.in_dtype, spec.count)
        info = np.iinfo(np.uint8 if spec.in_dtype == np.bool_ else spec.in_dtype)
        ftype = np.float32 if max(abs(int(info.min)), int(info.max)) * spec.count < 2**23 else np.float64
        return [
            Buffer("accumulator", (size,), sum_dtype),
            Buffer("rounding chunk", (min(CHUNK, size),), ftype),
            _scratch(),
        ]

    def _reset(self, size: int) -> None:
        self._first = True

    def _add(self, flat: np.ndarray, index: int) -> None:
        acc = self._acc[: flat.size]
        if self._first:  # a copy costs less than zeroing and adding
            acc[...] = flat
            self._first = False
        else:
            np.add(acc, flat, out=acc, casting="unsafe")

    def neutral(self) -> float:
        return 0

    def _divisors(self, start: int, stop: int) -> Any:
        """The frame count, or per-sample valid counts (at least 1) when frames had missing samples."""
        if self.valid_counts is None:
            return self.count
        return np.maximum(self.valid_counts[start:stop], 1)

    def _finish(self, out: np.ndarray) -> int:
        n = self.count
        lo, hi = self.out_range
        out_int = self.out_dtype.kind in "uib"
        if not out_int:
            clipped = 0
            for start in _chunks(out.size):
                stop = min(start + CHUNK, out.size)
                # one correctly rounded division
                divisor = self._divisors(start, stop)
                clipped += store_float(self._acc[start:stop] / np.float64(divisor), out[start:stop])
            return clipped
        if n == 1 or self._largest_sum >= 2**52 or self.valid_counts is not None and self._largest_sum >= 2**23:
            return self._finish_exact(out, lo, hi)
        # |sum| < 2**23 (float32) or 2**52 (float64): the sum is exact in that float type and the
        # correctly rounded quotient lies closer to the true mean than the true mean lies to any
        # x.5 it is not equal to (at least 1/(2n) away), so rint() rounds it exactly half to even.
        t = self._t
        divisor = t.dtype.type(n)
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            q = t[: stop - start]
            q[...] = self._acc[start:stop]
            np.divide(q, divisor if self.valid_counts is None else self._divisors(start, stop), out=q)
            np.rint(q, out=q)
            if self._may_clip:
                clipped += _clip_into(q, out[start:stop], lo, hi)
            else:
                out[start:stop] = q
        return clipped

    incremental = True

    def _state(self) -> dict[str, np.ndarray]:
        return {"sum": self._acc[: self._size]}

    def _restore(self, state: Any) -> None:
        self._first = self.added == 0
        if not self._first:  # a sum saved with a smaller capacity is widened exactly
            self._acc[: self._size] = take(state, "sum", (self._size,), self.sum_dtype, widen=True)

    def _finish_exact(self, out: np.ndarray, lo: float, hi: float) -> int:
        """Integer division with remainder, for sums too large for a float type."""
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            s = self._acc[start:stop]
            n = self._divisors(start, stop)
            if self.count == 1:
                q = s
            else:
                q, r = np.divmod(s, n)
                # round half to even: up when 2r > n, or 2r == n and q is odd
                r <<= 1
                up = r > n
                up |= (r == n) & (q & 1).astype(bool)
                q += up
            clipped += _clip_into(q, out[start:stop], lo, hi)
        return clipped


def store_float(values: np.ndarray, out: np.ndarray) -> int:
    """Store float ``values`` into float ``out``, saturating finite values that overflow its type.

    A finite result too large for the output type (a float64 mean stored as
    float16, say) becomes the largest finite value of that sign and is counted
    as clipped, as integer outputs are; infinities and NaN in the inputs pass
    through as IEEE arithmetic gives them. Returns the clipped count.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        out[...] = values
    if out.dtype.itemsize >= values.dtype.itemsize:
        return 0
    overflow = np.isinf(out)
    if not overflow.any():
        return 0
    overflow &= np.isfinite(values)
    clipped = int(np.count_nonzero(overflow))
    if clipped:
        top = np.finfo(out.dtype).max
        out[overflow] = np.where(values[overflow] > 0, top, -top)
    return clipped


def _clip_into(values: np.ndarray, out: np.ndarray, lo: float, hi: float) -> int:
    """Saturate integral ``values`` to ``[lo, hi]`` into ``out``; return how many were clipped."""
    if values.size and (values.min() < lo or values.max() > hi):
        clipped = int(np.count_nonzero(values < lo)) + int(np.count_nonzero(values > hi))
        values = np.clip(values, lo, hi)
    else:
        clipped = 0
    out[...] = values
    return clipped


def _two_prod_scalar(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Return ``p, e`` with ``p + e == a * b`` exactly (Dekker, no FMA needed)."""
    p = a * b
    c = _SPLITTER * a
    ah = c - (c - a)
    al = a - ah
    cb = _SPLITTER * b
    bh = cb - (cb - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def reducer_class(spec: ReduceSpec) -> type[Reducer]:
    """The frame reducer of a mean or weighted-sum spec."""
    from .reducers.compensated import CompensatedMean
    from .reducers.weighted import WeightedSum

    if spec.param("alpha"):
        from .reducers.coverage import CoverageMean

        return CoverageMean
    if spec.weights is not None:
        return WeightedSum
    if spec.in_dtype.kind in "ui" and spec.in_dtype.itemsize == 8:
        from .reducers.wide import WideIntegerMean

        return WideIntegerMean
    if spec.in_dtype.kind in "uib":
        return IntegerMean
    return CompensatedMean


def make_accumulator(
    shape: tuple[int, ...],
    count: int,
    in_dtype: np.dtype,
    out_dtype: np.dtype,
    weights: Sequence[float] | None = None,
    out_bits: int | None = None,
) -> Reducer:
    """Pick the accumulator for a job: exact integer mean, compensated float mean or weighted sum."""
    spec = ReduceSpec(
        "weighted" if weights is not None else "mean", count, np.dtype(in_dtype), np.dtype(out_dtype),
        tuple(weights) if weights is not None else None, out_bits,
    )
    rows, width, samples = shape
    return reducer_class(spec)(spec, (rows, width, samples))
