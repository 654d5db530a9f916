"""Standard deviation and variance over the frames, one frame at a time, with numpy's definitions.

``var = sum((x_i - mean)**2) / (N - ddof)`` and ``std = sqrt(var)``, as
``np.var`` / ``np.std`` define them (``ddof`` 0 by default). A frame reducer:
it keeps running sums per sample, never the frames, so ``average()`` and
:class:`avgstack.Accumulator` compute it the same way, bit for bit.

* **Integers of 16 bits or less** (output float32 by default): exact sums
  ``S1 = sum(x)`` and ``S2 = sum(x*x)`` in int64 (``x*x < 2**32``: exact for up
  to ``2**31`` frames). At the end, with ``m = S1 // n`` and ``r = S1 - m*n``,
  ``T = S2 - m*(m*n + 2*r) = sum((x - m)**2)`` is an exact int64 and the
  numerator ``n*S2 - S1**2 = n*T - r**2`` is formed from an exact product
  (Dekker) and one subtraction, so ``var = (n*T - r**2) / (n*(n - ddof))`` is
  within a few float64 roundings of exact: within 1 ulp once stored as float32.
* **Floats, and 32/64-bit integers** (output float64): a per-sample shift
  ``K``, the first valid value; double-double sums of ``d = x - K`` (TwoSum) and
  of ``d*d`` (exact products by Dekker's split, TwoSum), then
  ``(S2 - S1**2/n) / (n - ddof)`` in double-double. ``K`` is a sample, so the
  cancellation ``S2 / (S2 - S1**2/n)`` is at most ``2n + 1`` and the rounding
  of ``d`` costs at most about ``2*sqrt(2n)`` ulps relative: far inside 1e-12.
  int32/uint32 values and their differences are exact in float64 (int64 ones
  are rounded to float64 first, as numpy's float64 reference does).

K copies of a value give ``d = 0`` (integers: ``T = 0``), so exactly +0.0.
NaN propagates; an infinity makes the result NaN, as in numpy. Finite float64
values whose differences or squares overflow give NaN or inf (numpy: inf).

With missing data each sample has its own count ``n`` of valid frames (``K``
is its first valid value; invalid samples add nothing), and ``ddof`` counts
against that ``n``. A sample with ``n <= ddof`` (but at least ``min_count``)
has no defined value: it becomes nodata, as ``numpy.ma.var`` masks it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..arithmetic import CHUNK, _chunks, _round_into, _scratch, _two_prod_scalar, sample_range
from ..buffers import Buffer
from .base import Reducer, ReduceSpec, take

__all__ = ["Moments", "exact_integers"]

_SPLITTER = 134217729.0  # 2**27 + 1


def exact_integers(dtype: np.dtype) -> bool:
    """Whether ``dtype`` samples take the exact int64 path (integers of 16 bits or less)."""
    return dtype.kind in "uib" and dtype.itemsize <= 2


class Moments(Reducer):
    """``std`` or ``var`` of every sample over the frames, from running sums."""

    incremental = True

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.ddof = int(spec.param("ddof", 0) or 0)
        self.root = spec.method == "std"
        self.exact = exact_integers(spec.in_dtype)
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        if self.exact and spec.count >= 2**31:
            raise ValueError(f"cannot sum the squares of {spec.count} frames of {spec.in_dtype} exactly in 64 bits")
        self._sums = self._allocate("moment sums")
        self._tmp = self._allocate("moment chunks")
        self._shift = None if self.exact else self._allocate("shift")

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        chunk = min(CHUNK, size)
        if exact_integers(spec.in_dtype):  # S1, S2
            return [Buffer("moment sums", (2, size), np.int64), Buffer("moment chunks", (4, chunk), np.float64),
                    _scratch()]
        return [  # S1 and S2 in double-double (hi, lo, hi, lo), and the shift K
            Buffer("moment sums", (4, size), np.float64),
            Buffer("shift", (size,), np.float64),
            Buffer("moment chunks", (7, chunk), np.float64),
            _scratch(),
        ]

    def _reset(self, size: int) -> None:
        self._sums[:, :size] = 0

    def neutral(self) -> float:
        return 0.0

    # -- adding ------------------------------------------------------------------

    def _add(self, flat: np.ndarray, index: int) -> None:
        self._accumulate(flat, None)

    def _add_masked(self, flat: np.ndarray, index: int, valid: np.ndarray) -> None:
        self._accumulate(flat, valid)

    def _accumulate(self, flat: np.ndarray, valid: np.ndarray | None) -> None:
        if flat.dtype == np.bool_:
            flat = flat.view(np.uint8)
        counts = None if self._counts is None else self._counts[: flat.size]
        if self.exact:
            if valid is not None:
                np.copyto(flat, 0, where=~valid)
            s1, s2 = self._sums[0, : flat.size], self._sums[1, : flat.size]
            for start in _chunks(flat.size):
                stop = min(start + CHUNK, flat.size)
                x = flat[start:stop]
                np.add(s1[start:stop], x, out=s1[start:stop], casting="unsafe")
                sq = self._tmp[0, : stop - start].view(np.int64)  # x*x < 2**32: exact in int64
                np.multiply(x, x, out=sq, dtype=np.int64)
                np.add(s2[start:stop], sq, out=s2[start:stop])
            return
        assert self._shift is not None
        shift = self._shift[: flat.size]
        if self.added == 1:  # the first frame: the shift wherever it is valid
            shift[...] = flat
        elif self._masked and counts is not None:  # samples whose first valid frame this is
            first = counts == 1 if valid is None else (counts == 1) & valid
            np.copyto(shift, flat, where=first, casting="unsafe")
        hi1, lo1, hi2, lo2 = (self._sums[i, : flat.size] for i in range(4))
        d, p, e, s, t, h, u = self._tmp
        with np.errstate(invalid="ignore", over="ignore"):
            for start in _chunks(flat.size):
                stop = min(start + CHUNK, flat.size)
                k = stop - start
                dk, pk, ek, sk, tk, hk, uk = d[:k], p[:k], e[:k], s[:k], t[:k], h[:k], u[:k]
                np.subtract(flat[start:stop], shift[start:stop], out=dk, dtype=np.float64)
                if valid is not None:
                    np.copyto(dk, 0.0, where=~valid[start:stop])
                # exact square: pk + ek == dk * dk (Dekker's split of dk into hk + uk)
                np.multiply(dk, dk, out=pk)
                np.multiply(dk, _SPLITTER, out=hk)
                np.subtract(hk, dk, out=uk)
                np.subtract(hk, uk, out=hk)  # high half
                np.subtract(dk, hk, out=uk)  # low half
                np.multiply(hk, hk, out=ek)
                np.subtract(ek, pk, out=ek)
                np.multiply(hk, uk, out=tk)
                np.add(tk, tk, out=tk)
                np.add(ek, tk, out=ek)
                np.multiply(uk, uk, out=tk)
                np.add(ek, tk, out=ek)
                np.add(lo2[start:stop], ek, out=lo2[start:stop])
                _two_sum_into(hi2[start:stop], lo2[start:stop], pk, sk, tk)
                _two_sum_into(hi1[start:stop], lo1[start:stop], dk, sk, tk)  # last: it overwrites dk

    # -- result ------------------------------------------------------------------

    def _finish(self, out: np.ndarray) -> int:
        if self.valid_counts is None and self.count <= self.ddof:
            raise ValueError(f"ddof {self.ddof} needs more than {self.count} frames")
        out_int = self.out_dtype.kind in "uib"
        lo_r, hi_r = self.out_range
        clipped = 0
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for start in _chunks(out.size):
                stop = min(start + CHUNK, out.size)
                if self.valid_counts is None:
                    n: Any = self.count
                    void = None
                else:
                    counts = self.valid_counts[start:stop].astype(np.int64)
                    void = counts <= self.ddof
                    n = np.maximum(counts, self.ddof + 1)
                var = self._exact_var(start, stop, n) if self.exact else self._float_var(start, stop, n)
                if self.root:
                    np.sqrt(var, out=var)
                if void is not None and void.any():
                    var[void] = 0.0  # nodata, written by the base class or below
                dst = out[start:stop]
                if out_int:
                    clipped += _round_into(var, dst, lo_r, hi_r)
                else:
                    dst[...] = var
                if void is not None and void.any() and self.missing.nodata is not None:
                    nodata = self.missing.nodata
                    dst[void] = dst.dtype.type(nodata) if dst.dtype.kind == "f" else int(nodata)
        return clipped

    def _exact_var(self, start: int, stop: int, n: Any) -> np.ndarray:
        s1, s2 = self._sums[0, start:stop], self._sums[1, start:stop]
        m = s1 // n
        r = s1 - m * n  # 0 <= r < n
        t = s2 - m * (m * n + 2 * r)  # sum((x - m)**2), exact
        tf = self._tmp[0, : stop - start]
        tf[...] = t
        nf = np.asarray(n, np.float64)
        p, e = _two_prod_scalar(tf, nf)  # type: ignore[arg-type]  # elementwise
        num = (p - (r * r).astype(np.float64)) + e  # n*T - r**2, to about one rounding
        np.maximum(num, 0.0, out=num)
        tf[...] = num / (nf * (nf - self.ddof))
        return tf

    def _float_var(self, start: int, stop: int, n: Any) -> np.ndarray:
        hi1, lo1, hi2, lo2 = (self._sums[i, start:stop] for i in range(4))
        nf = np.asarray(n, np.float64)
        # S1**2 / n in double-double
        p, e = _two_prod_scalar(hi1, hi1)  # type: ignore[arg-type]  # elementwise
        e = e + 2.0 * hi1 * lo1
        q = p / nf
        qp, qe = _two_prod_scalar(q, nf)  # type: ignore[arg-type]
        ql = ((p - qp) - qe + e) / nf
        # S2 - S1**2 / n
        s = hi2 - q
        bb = s - hi2
        err = (hi2 - (s - bb)) + (-q - bb)
        num = s + (err + lo2 - ql)
        num = np.where(np.isnan(num) | (num > 0), num, 0.0)  # never below zero; NaN stays NaN
        var = self._tmp[0, : stop - start]
        np.divide(num, nf - self.ddof, out=var)
        return var

    # -- incremental use ---------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        size = self._size
        names = ("sum", "sum of squares") if self.exact else (
            "sum", "sum low part", "sum of squares", "sum of squares low part")
        state = {name: self._sums[i, :size] for i, name in enumerate(names)}
        if self._shift is not None:
            state["shift"] = self._shift[:size]
        if self._counts is not None:
            state["valid counts"] = self._counts[:size]
        return state

    def _restore(self, state: Any) -> None:
        if not self.added:
            return
        size = self._size
        if self.exact:
            for i, name in enumerate(("sum", "sum of squares")):
                self._sums[i, :size] = take(state, name, (size,), np.dtype(np.int64))
        else:
            f64 = np.dtype(np.float64)
            names = ("sum", "sum low part", "sum of squares", "sum of squares low part")
            for i, name in enumerate(names):
                self._sums[i, :size] = take(state, name, (size,), f64)
            assert self._shift is not None
            self._shift[:size] = take(state, "shift", (size,), f64)
        if self._counts is not None:
            counts = self._counts[:size]
            counts[...] = take(state, "valid counts", (size,), counts.dtype, widen=True)
            if (counts > self.added).any():
                raise ValueError("state 'valid counts' exceeds the frames added")
            if (counts < self.added).any():
                self._masked = True
                self.valid_counts = counts


def _two_sum_into(hi: np.ndarray, lo: np.ndarray, x: np.ndarray, s: np.ndarray, t: np.ndarray) -> None:
    """``hi + lo += x`` in double-double (TwoSum); ``x``, ``s`` and ``t`` are scratch."""
    np.add(hi, x, out=s)
    np.subtract(s, hi, out=t)  # bb
    np.subtract(x, t, out=x)  # x - bb
    np.subtract(s, t, out=t)  # s - bb
    np.subtract(hi, t, out=t)  # hi - (s - bb)
    np.add(t, x, out=t)
    np.add(lo, t, out=lo)
    hi[...] = s
