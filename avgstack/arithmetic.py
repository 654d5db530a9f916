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

All work is done in chunks of :data:`CHUNK` samples so temporaries stay small
and cache resident.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .buffers import Buffer, opaque
from .reducers.base import Reducer, ReduceSpec, take

__all__ = [
    "Accumulator",
    "reducer_class",
    "IntegerMean",
    "CompensatedMean",
    "WeightedSum",
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


class WeightedSum(Accumulator):
    """``sum_i w_i * x_i`` in float64, or in float32 where that is provably within the contract.

    For integer inputs of up to 16 bits rounded to an integer output, a float32
    accumulator updated by ``cv2.addWeighted`` is several times faster; it is
    used only when its worst-case error bound (``2 * count * 2**-24`` times the
    largest possible partial sum) stays below a quarter unit, so results stay
    within 1 unit of a float64 reference.

    Incremental use (open-ended specs, weights arriving with the frames): the
    float64 sum is always kept, and while the weights seen so far allow it, the
    float32 sum too (that condition, once false, stays false); :meth:`finish`
    takes the one a job over the same frames and weights would have used, so
    the result is the same bit for bit.
    """

    incremental = True

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        weights = spec.weights or ()
        if len(weights) != spec.count and not spec.open_ended:
            raise ValueError(f"{len(weights)} weights for {spec.count} frames")
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        self.weights = list(weights)
        self.fast = self._fast(spec)
        self._acc = self._allocate("accumulator")
        self._t = self._allocate("product chunk")
        self._wvalid = self._allocate("valid weights") if spec.param("renormalize") else None
        self._shadow: np.ndarray | None = None
        if self._shadows(spec):
            self._shadow = self._allocate("float32 accumulator")
        if self.fast or self._shadow is not None:
            import cv2  # only this path needs OpenCV; importing it costs ~0.1 s

            self._add_weighted = cv2.addWeighted
            self._cv_32f = cv2.CV_32F

    @staticmethod
    def uses_float32(
        in_dtype: np.dtype, out_dtype: np.dtype, weights: Sequence[float], offset: int | None = None
    ) -> bool:
        """Whether a float32 accumulator meets the accuracy contract for this job."""
        in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
        if offset or in_dtype.kind not in "uib" or in_dtype.itemsize > 2 or out_dtype.kind not in "uib":
            return False
        info = np.iinfo(np.uint8 if in_dtype == np.bool_ else in_dtype)
        largest = max(abs(int(info.min)), int(info.max)) * sum(abs(w) for w in weights)
        return 2 * len(weights) * largest * 2.0**-24 < 0.25

    @classmethod
    def _fast(cls, spec: ReduceSpec) -> bool:
        """Whether a job of ``spec`` (known weights) accumulates in float32."""
        return (
            not spec.open_ended and not spec.param("renormalize")
            and cls.uses_float32(spec.in_dtype, spec.out_dtype, spec.weights or (), spec.param("signed_offset"))
        )

    @classmethod
    def _shadows(cls, spec: ReduceSpec) -> bool:
        """Open-ended: whether a float32 sum is kept beside the float64 one (small integer types)."""
        return (
            spec.open_ended and not spec.param("renormalize")
            and cls.uses_float32(spec.in_dtype, spec.out_dtype, (), spec.param("signed_offset"))
        )

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        fast = cls._fast(spec)
        buffers = [
            Buffer("accumulator", (size,), np.float32 if fast else np.float64),
            Buffer("product chunk", (min(CHUNK, size),), np.float64),
            _scratch(),
        ]
        if cls._shadows(spec):
            buffers.append(Buffer("float32 accumulator", (size,), np.float32))
        if spec.param("renormalize"):
            buffers.append(Buffer("valid weights", (size,), np.float64))
        return buffers

    def set_weight(self, index: int, weight: float) -> None:
        if index != len(self.weights):
            raise ValueError(f"weight of frame {index} given after {len(self.weights)} weights")
        self.weights.append(float(weight))

    def _reset(self, size: int) -> None:
        self._first = True
        self._whole = 0.0  # weights of the frames added without a missing sample
        self._any_masked = False
        if self._shadows(self.spec) and self._shadow is None:  # a new run after the float32 sum was dropped
            self._shadow = self._allocate("float32 accumulator")

    def neutral(self) -> float:
        return 0

    def _add(self, flat: np.ndarray, index: int) -> None:
        self._whole += self.weights[index]
        self._accumulate(flat, index)

    def _add_masked(self, flat: np.ndarray, index: int, valid: np.ndarray) -> None:
        if self._wvalid is not None:
            wv = self._wvalid[: flat.size]
            if not self._any_masked:
                wv[...] = 0.0
                self._any_masked = True
            wv += valid * self.weights[index]
        np.copyto(flat, flat.dtype.type(0), where=~valid)
        self._accumulate(flat, index)

    def _renormalize(self, size: int) -> np.ndarray | None:
        """Scale sums by ``sum(w) / sum(valid w)`` where frames were missing; return where that sum is 0."""
        if self._wvalid is None or not self._any_masked or self.valid_counts is None:
            return None
        total = 0.0
        for w in self.weights:
            total += w
        zero = np.zeros(size, bool)
        for start in _chunks(size):
            stop = min(start + CHUNK, size)
            wv = self._wvalid[start:stop]
            wv += self._whole  # frames without missing samples are valid everywhere
            some_missing = self.valid_counts[start:stop] < self.count
            z = some_missing & (wv == 0)
            zero[start:stop] = z
            factor = np.where(some_missing & ~z, total / np.where(z | ~some_missing, 1.0, wv), 1.0)
            acc = self._acc[start:stop]
            acc *= factor
        return zero

    def _accumulate(self, flat: np.ndarray, index: int) -> None:
        w = self.weights[index]
        if self._shadow is not None:
            if self.uses_float32(self.spec.in_dtype, self.out_dtype, self.weights[: index + 1]):
                self._add_float32(self._shadow[: flat.size], flat, w)
            else:
                self._shadow = None  # these weights rule it out for good
        if self.fast:
            self._add_float32(self._acc[: flat.size], flat, w)
        else:
            self._add_float64(self._acc[: flat.size], flat, w)
        self._first = False

    def _add_float32(self, acc: np.ndarray, flat: np.ndarray, w: float) -> None:
        src = flat.view(np.uint8) if flat.dtype == np.bool_ else flat
        if self._first:
            np.multiply(src, np.float32(w), out=acc, casting="unsafe")
        else:
            a = acc.reshape(-1, 1)
            self._add_weighted(a, 1.0, src.reshape(-1, 1), w, 0.0, dst=a, dtype=self._cv_32f)

    def _add_float64(self, acc: np.ndarray, flat: np.ndarray, w: float) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            if self._first:
                np.multiply(flat, w, out=acc, casting="unsafe")
                return
            for start in _chunks(flat.size):
                stop = min(start + CHUNK, flat.size)
                t = self._t[: stop - start]
                np.multiply(flat[start:stop], w, out=t, casting="unsafe")
                a = acc[start:stop]
                np.add(a, t, out=a)

    def _finish(self, out: np.ndarray) -> int:
        offset = self.spec.param("signed_offset")
        if offset:
            # CIELab a*/b* were summed as a + offset: take off the surplus offset * (sum(w) - 1)
            ab = self._acc[: out.size].reshape(-1, self.shape[2])[:, 1:3]
            ab -= offset * (math.fsum(self.weights) - 1.0)
        zero = self._renormalize(out.size)
        clipped = self._store(out)
        if zero is not None and zero.any() and self.missing.nodata is not None:
            nodata = self.missing.nodata
            out[zero] = out.dtype.type(nodata) if out.dtype.kind == "f" else int(nodata)
        return clipped

    def _store(self, out: np.ndarray) -> int:
        if self.out_dtype.kind not in "uib":
            clipped = 0
            for start in _chunks(out.size):
                stop = min(start + CHUNK, out.size)
                clipped += store_float(self._acc[start:stop], out[start:stop])
            return clipped
        lo, hi = self.out_range
        # open-ended: the float32 sum while the weights allow it, as a job over the same frames would
        source = self._shadow if self._shadow is not None else self._acc
        clipped = 0
        for start in _chunks(out.size):
            stop = min(start + CHUNK, out.size)
            if self.fast:
                # the float32 sums of integers are finite: round them in place, the band is done with
                t = self._acc[start:stop]
                np.rint(t, out=t)
                clipped += _clip_into(t, out[start:stop], lo, hi)
                continue
            t = self._t[: stop - start]
            t[...] = source[start:stop]  # float32 to float64 is exact: rint gives the same integers
            clipped += _round_into(t, out[start:stop], lo, hi)
        return clipped

    def _state(self) -> dict[str, np.ndarray]:
        state = {"sum": self._acc[: self._size], "weights": np.array(self.weights, np.float64)}
        if self._shadow is not None:
            state["float32 sum"] = self._shadow[: self._size]
        return state

    def _restore(self, state: Any) -> None:
        self._first = self.added == 0
        weights = take(state, "weights", (self.added,), np.dtype(np.float64))
        if not np.isfinite(weights).all():
            raise ValueError("state holds weights that are not finite")
        self.weights = [float(w) for w in weights]
        if self._first:
            return
        self._acc[: self._size] = take(state, "sum", (self._size,), self._acc.dtype)
        if "float32 sum" in state and self._shadow is not None:
            self._shadow[: self._size] = take(state, "float32 sum", (self._size,), np.dtype(np.float32))
        else:
            self._shadow = None


def reducer_class(spec: ReduceSpec) -> type[Reducer]:
    """The frame reducer of a mean or weighted-sum spec."""
    if spec.param("alpha"):
        from .alpha import CoverageMean

        return CoverageMean
    if spec.weights is not None:
        return WeightedSum
    if spec.in_dtype.kind in "ui" and spec.in_dtype.itemsize == 8:
        from .wide import WideIntegerMean

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
