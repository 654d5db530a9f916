"""Rejection, then the mean of the survivors: sigma clipping and minmax rejection.

* ``sigma-clip``: per sample, the semantics of
  ``astropy.stats.sigma_clip(x, axis=0, sigma_lower=L, sigma_upper=H, maxiters=I,
  cenfunc='median', stdfunc='std')`` in float64: repeat at most ``I`` times,
  until nothing changes: centre = median of the survivors, scale = their
  standard deviation (ddof 0), reject values below ``centre - L * scale`` or
  above ``centre + H * scale`` (values exactly on a bound stay). Survivors of
  a sorted column are always a contiguous run ``[lo, hi)``, so the column is
  sorted once and each iteration only moves ``lo`` and ``hi``.
* ``minmax``: drop the ``nlow`` lowest and ``nhigh`` highest values (IRAF
  imcombine's ``minmax`` rejection). A network that places only those
  extremes leaves the survivors, unsorted, in the middle rows.

Then the exact mean of the survivors: integers summed exactly and divided
once, rounded half to even; floats summed in double-double, divided with a
corrected quotient. With weights, each survivor counts with its frame's
weight, normalised over the survivors (``sum(w x) / sum(w)`` in float64);
rejection looks at values only, and among equal values the frame earlier in
the stack ranks lower (a stable sort). A sample whose values are all
rejected (possible only with a sigma below 1) gives NaN, or 0 counted as
clipped in an integer output. NaN in a sample gives NaN.
"""

from __future__ import annotations

import numpy as np

from ..arithmetic import _two_prod_scalar
from ..buffers import Buffer, opaque
from .base import ReduceSpec
from .cube import CubeReducer, chunk_for
from .networks import order_rows
from .order import midpoint

__all__ = ["SigmaClip", "MinMax", "divide_half_even", "mean_of_rows"]


def divide_half_even(s: np.ndarray, n: np.ndarray | int) -> np.ndarray:
    """``s / n`` of int64 arrays (``n > 0``), rounded half to even, exactly."""
    q, r = np.divmod(s, n)
    r <<= 1
    up = r > n
    up |= (r == n) & (q & 1).astype(bool)
    q += up
    return q


def mean_of_rows(rows, count, mask=None) -> np.ndarray:
    """Correctly rounded mean (float64) of the float ``rows`` selected by ``mask`` (rows x columns).

    The sum starts from -0.0 (so that a mean of -0.0 values stays -0.0) and is
    kept in double-double; ``count`` is the number of selected rows per column.
    """
    k = len(rows[0])
    hi = np.full(k, -0.0)
    lo = np.zeros(k)
    for i, r in enumerate(rows):
        x = np.where(mask[i], r, -0.0) if mask is not None else np.asarray(r, np.float64)
        s = hi + x
        bb = s - hi
        lo += (hi - (s - bb)) + (x - bb)
        hi = s
    n = np.asarray(count, np.float64)
    q = hi / n
    p, e = _two_prod_scalar(q, n)  # type: ignore[arg-type]  # elementwise on arrays too
    r = (hi - p) - e + lo
    refined = q + r / n
    return np.where(np.isfinite(refined) & (r != 0), refined, q)


class _Rejection(CubeReducer):
    """Shared by both: survivors' mean, weighted or not."""

    clip_rows = 10  # (N, chunk) float64 temporaries alive at once

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.weights = None if spec.weights is None else np.asarray(spec.weights, np.float64)
        self.values = self._allocate("sorted values")

    @classmethod
    def chunk(cls, spec: ReduceSpec, shape: tuple[int, ...]) -> int:
        size = max(1, int(np.prod(shape, dtype=np.int64)))
        return chunk_for(spec.count, 8, size, floor=1024, ceiling=1 << 14)

    @classmethod
    def extra_buffers(cls, spec: ReduceSpec, chunk: int) -> list[Buffer]:
        return [
            Buffer("sorted values", (spec.count, chunk), np.dtype(np.float64)),
            opaque("rejection temporaries", cls.clip_rows * spec.count * chunk * 8),
        ]

    def _sorted(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Sorted float64 values ``(N, k)`` and, with weights, each value's weight."""
        k = len(rows[0])
        s = self.values[:, :k]
        if self.weights is None:
            for i, r in enumerate(order_rows(rows, self.sort_rows[:, :k])):
                s[i] = r
            return s, None
        for i, r in enumerate(rows):
            s[i] = r
        order = np.argsort(s, axis=0, kind="stable")
        s[...] = np.take_along_axis(s, order, axis=0)
        return s, self.weights[order]

    def _survivor_mean(self, s: np.ndarray, w: np.ndarray | None, inside: np.ndarray, count, rows, out) -> int:
        """Store the mean of the survivors ``inside`` (``count`` per column)."""
        nan = self.nan_columns(rows)
        k = len(out)
        values = self._float(1, k)
        empty = np.asarray(count) == 0
        if w is not None:
            num = np.where(inside, w * s, 0.0).sum(axis=0)
            den = np.where(inside, w, 0.0).sum(axis=0)
            np.divide(num, den, out=values)
        elif not self.in_float and self.out_int:
            total = np.where(inside, s, 0.0).sum(axis=0)  # exact: integers below 2**53
            q = divide_half_even(total.astype(np.int64), np.maximum(np.asarray(count, np.int64), 1))
            if not np.any(empty):
                return self.store(q, out)
            values[...] = q
        elif not self.in_float:
            total = np.where(inside, s, 0.0).sum(axis=0)
            np.divide(total, count, out=values)
        else:
            values[...] = mean_of_rows(s, count, inside)
        if np.any(empty):
            values[empty] = np.nan
        self.propagate_nan(values, rows, nan)
        return self.store(values, out)


class SigmaClip(_Rejection):
    """Iterative sigma clipping around the median, then the mean of the survivors."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.low = float(spec.param("sigma_low", 3.0))
        self.high = float(spec.param("sigma_high", 3.0))
        self.iterations = int(spec.param("max_iters", 5))

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        s, w = self._sorted(rows)
        n, k = s.shape
        cols = np.arange(k)
        index = np.arange(n)[:, None]
        lo = np.zeros(k, np.int64)
        hi = np.full(k, n, np.int64)
        centre = self._float(2, k)
        inside = np.ones((n, k), bool)
        for _ in range(self.iterations):
            count = hi - lo
            midpoint(s[(lo + hi - 1) // 2, cols], s[(lo + hi) // 2, cols], centre)
            kept = np.where(inside, s, 0.0)
            mean = kept.sum(axis=0) / count
            dev = np.where(inside, s - mean, 0.0)
            std = np.sqrt((dev * dev).sum(axis=0) / count)
            lower = centre - std * self.low
            upper = centre + std * self.high
            new_lo = lo + ((s < lower) & inside).sum(axis=0)
            new_hi = hi - ((s > upper) & inside).sum(axis=0)
            new_hi = np.maximum(new_hi, new_lo)
            if np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi):
                break
            lo, hi = new_lo, new_hi
            inside = (index >= lo) & (index < hi)
        return self._survivor_mean(s, w, inside, hi - lo, rows, out)


class MinMax(_Rejection):
    """Drop the ``nlow`` lowest and ``nhigh`` highest values, then the mean of the rest."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.nlow = int(spec.param("nlow", 1))
        self.nhigh = int(spec.param("nhigh", 1))
        n = spec.count
        self.needed = (*range(self.nlow), *range(n - self.nhigh, n))
        self.survivors = n - self.nlow - self.nhigh

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        n, k = len(rows), len(out)
        if self.weights is not None:
            s, w = self._sorted(rows)
            inside = np.zeros((n, k), bool)
            inside[self.nlow : n - self.nhigh] = True
            return self._survivor_mean(s, w, inside, self.survivors, rows, out)
        ordered = order_rows(rows, self.sort_rows[:, :k], self.needed) if self.needed else list(rows)
        middle = ordered[self.nlow : n - self.nhigh]  # the survivors, in no particular order
        if self.in_float:
            nan = self.nan_columns(rows)
            values = self._float(1, k)
            values[...] = mean_of_rows(middle, self.survivors)
            self.propagate_nan(values, rows, nan)
            return self.store(values, out)
        total = np.zeros(k, np.int64)
        for r in middle:
            np.add(total, r, out=total, casting="unsafe")
        if self.out_int:
            return self.store(divide_half_even(total, self.survivors), out)
        values = self._float(1, k)
        np.divide(total, float(self.survivors), out=values)
        return self.store(values, out)
