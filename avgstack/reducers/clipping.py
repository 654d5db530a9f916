"""Rejection, then the mean of the survivors: sigma clipping and minmax rejection.

* ``sigma-clip``: per sample, the semantics of
  ``astropy.stats.sigma_clip(x, axis=0, sigma_lower=L, sigma_upper=H, maxiters=I,
  cenfunc='median', stdfunc='std')`` (astropy's C implementation) in float64:
  at most ``I`` times, until nothing changes or nothing is left: centre =
  median of the values still in, scale = their standard deviation (ddof 0),
  drop the values below ``centre - L * scale`` or above ``centre + H * scale``
  (values exactly on a bound stay). The survivors are then every value within
  the last bounds (a value dropped early comes back if they include it). The
  values still in are always a contiguous run ``[lo, hi)`` of the sorted
  column, so it is sorted once and each iteration only moves ``lo`` and ``hi``.
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

With missing data, rejection and the mean look at each sample's valid values
only (astropy's ``sigma_clip`` of a masked array); minmax drops ``nlow`` and
``nhigh`` of the ``k`` valid values, and a sample with ``k <= nlow + nhigh``
has no survivor. A sample with no survivor becomes nodata (its kept count, 0,
is below any ``min_count``). The count map counts the survivors.
"""

from __future__ import annotations

import numpy as np

from ..arithmetic import _two_prod_scalar
from ..buffers import Buffer, opaque
from .base import ReduceSpec
from .cube import CubeReducer, chunk_for, work_dtype
from .networks import order_rows
from .order import midpoint

__all__ = ["MinMax", "SigmaClip", "divide_half_even", "mean_of_rows"]

#: Columns iterated at once, each through several (N, SUBCHUNK) float64 temporaries.
SUBCHUNK = 2048


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
    Columns holding magnitudes of ``2**990`` and more, whose sums or the split of
    the exact product could overflow, are summed scaled by ``2**-70`` (exact).
    """
    big = None
    if rows[0].dtype.itemsize >= 8:
        for r in rows:
            found = np.abs(r) >= 2.0**990
            big = found if big is None else big | found
    if big is not None and big.any():
        out = _mean_of_rows(rows, count, mask)
        cols = np.flatnonzero(big)
        sub_count = np.asarray(count)[cols] if np.ndim(count) else count
        sub_mask = None if mask is None else np.asarray(mask)[:, cols]
        scaled = [np.asarray(r, np.float64)[cols] * 2.0**-70 for r in rows]
        out[cols] = _mean_of_rows(scaled, sub_count, sub_mask) * 2.0**70
        return out
    return _mean_of_rows(rows, count, mask)


def _mean_of_rows(rows, count, mask=None) -> np.ndarray:
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
    rejects = True

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.weights = None if spec.weights is None else np.asarray(spec.weights, np.float64)
        self.values = self._allocate("sorted values") if spec.weights is not None else None

    @classmethod
    def chunk(cls, spec: ReduceSpec, shape: tuple[int, ...]) -> int:
        size = max(1, int(np.prod(shape, dtype=np.int64)))
        if spec.weights is not None:  # every column goes through (N, chunk) float64 temporaries
            return min(size, SUBCHUNK)
        return chunk_for(spec.count, work_dtype(spec.in_dtype).itemsize, size, ceiling=1 << 15)

    @classmethod
    def extra_buffers(cls, spec: ReduceSpec, chunk: int) -> list[Buffer]:
        sub = min(chunk, SUBCHUNK)
        buffers = [
            opaque("rejection temporaries", cls.clip_rows * (spec.count + 1) * sub * 8),
            opaque("chunk temporaries (rows)", 12 * chunk * 8),
        ]
        if spec.weights is not None:
            buffers.append(Buffer("sorted values", (spec.count, chunk), np.dtype(np.float64)))
        return buffers

    def _sorted(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Sorted float64 values ``(N, k)`` and each value's weight (weighted jobs)."""
        k = len(rows[0])
        assert self.values is not None and self.weights is not None
        s = self.values[:, :k]
        for i, r in enumerate(rows):
            s[i] = r
        order = np.argsort(s, axis=0, kind="stable")
        s[...] = np.take_along_axis(s, order, axis=0)
        return s, self.weights[order]

    def _survivor_values(self, s: np.ndarray, w: np.ndarray | None, inside: np.ndarray, count) -> np.ndarray:
        """Mean of the survivors ``inside`` of sorted ``s`` (``count`` per column): int64 for integer
        inputs into integer outputs (rounded half to even), float64 otherwise (NaN where none survive)."""
        count = np.asarray(count)
        empty = count == 0
        if w is not None:
            num = np.where(inside, w * s, 0.0).sum(axis=0)
            den = np.where(inside, w, 0.0).sum(axis=0)
            values = num / den
        elif not self.in_float:
            total = np.where(inside, s, 0.0).sum(axis=0)  # exact: integers below 2**53
            if self.out_int:
                return divide_half_even(total.astype(np.int64), np.maximum(count.astype(np.int64), 1))
            values = total / count
        else:
            values = mean_of_rows(s, count, inside)
        if np.any(empty):
            values[empty] = np.nan
        return values

    def _store_values(self, values: np.ndarray, empty: np.ndarray | None, rows, out) -> int:
        """Store survivors' means; samples with no survivor become NaN (0, clipped, in integers)."""
        if values.dtype.kind == "i" and (empty is None or not empty.any()):
            return self.store(values, out)
        floats = self._float(1, len(out))
        floats[...] = values
        if empty is not None and empty.any():
            floats[empty] = np.nan
        self.propagate_nan(floats, rows, self.nan_columns(rows))
        return self.store(floats, out)


class SigmaClip(_Rejection):
    """Iterative sigma clipping around the median, then the mean of the survivors.

    Most samples of a stack lose nothing in the first iteration. A first pass
    over the unsorted rows (a selection network for the median, exact
    integer moments or a two-pass float variance) finds them and gives them the
    mean of all their values; only the others, usually a few per cent, are
    sorted and iterated (:meth:`_iterate`).
    """

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.low = float(spec.param("sigma_low", 3.0))
        self.high = float(spec.param("sigma_high", 3.0))
        self.iterations = int(spec.param("max_iters", 5))
        n = spec.count
        # integers of 16 bits or less: sums of squares are exact, so is the variance's numerator
        self.exact = not self.in_float and work_dtype(spec.in_dtype).itemsize <= 2 and n < 40000
        self.middle = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        if self.weights is not None:
            s, w = self._sorted(rows)
            inside, count = self._iterate(s)
            self.kept = count
            return self._store_values(self._survivor_values(s, w, inside, count), count == 0, rows, out)
        active, values = self._first_pass(rows)
        empty = None
        kept = np.full(len(out), len(rows), np.int64) if active.size and self._counts is not None else None
        self.kept = len(rows) if kept is None else kept
        for start in range(0, active.size, SUBCHUNK):  # bounded (N, SUBCHUNK) temporaries
            cols = active[start : start + SUBCHUNK]
            sub = np.sort(np.stack([r[cols] for r in rows]).astype(np.float64), axis=0)
            inside, count = self._iterate(sub)
            values[cols] = self._survivor_values(sub, None, inside, count)
            if kept is not None:
                kept[cols] = count
            if (count == 0).any():
                if empty is None:
                    empty = np.zeros(len(out), bool)
                empty[cols] = count == 0
        return self._store_values(values, empty, rows, out)

    def _moments(self, s1: np.ndarray, s2: np.ndarray, count) -> np.ndarray:
        """Standard deviation from exact integer sums (``self.exact``): ``sqrt((n*s2 - s1**2) / n**2)``."""
        count = np.asarray(count, np.int64)
        num = count * s2.astype(np.int64) - s1.astype(np.int64) ** 2
        return np.sqrt(num / (count.astype(np.float64) ** 2))

    def _first_pass(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Columns that the first iteration may change, and the mean of all values for the others."""
        n, k = len(rows), len(rows[0])
        ordered = order_rows(rows, self.sort_rows, self.middle, others=False)
        centre = midpoint(ordered[self.middle[0]], ordered[self.middle[-1]], self._float(0, k))
        if self.exact:
            acc = np.dtype(np.int32 if work_dtype(self.in_dtype).itemsize == 1 and n < 33000 else np.int64)
            s1: np.ndarray = np.zeros(k, acc)
            s2, t = np.zeros(k, acc), np.empty(k, acc)
            for r in rows:
                np.add(s1, r, out=s1, casting="unsafe")
                np.multiply(r, r, out=t, dtype=acc)
                np.add(s2, t, out=s2)
            std = self._moments(s1, s2, n)
            margin = 0.0
        else:
            mean = mean_of_rows(rows, n)
            ss, d = np.zeros(k), self._float(2, k)
            for r in rows:
                np.subtract(r, mean, out=d, dtype=np.float64)
                np.multiply(d, d, out=d)
                np.add(ss, d, out=ss)
            std = np.sqrt(ss / n)
            # float sums in another order than _iterate's: decide near-ties there
            margin = 1e-9
        lower = centre - std * self.low
        upper = centre + std * self.high
        if margin:  # (not when std is 0: values equal to the centre stay, any other is out)
            slack = (np.abs(lower) + np.abs(upper)) * margin * (std > 0)
            lower += slack
            upper -= slack
        # a column changes if its smallest value lies below the lower bound or its largest above the upper
        low, high = rows[0].copy(), rows[0].copy()
        for r in rows[1:]:
            np.minimum(low, r, out=low)
            np.maximum(high, r, out=high)
        changed = low < lower
        changed |= high > upper
        active = np.flatnonzero(changed)
        if self.exact:
            # |sum| < 2**52: rint of the float64 quotient rounds the exact mean half to even (see IntegerMean)
            values = np.rint(s1 / n).astype(np.int64) if self.out_int else s1 / n
        elif not self.in_float:
            total = np.zeros(k)
            for r in rows:
                np.add(total, r, out=total)
            values = divide_half_even(total.astype(np.int64), n) if self.out_int else total / n
        else:
            values = mean_of_rows(rows, n)
        return active, values

    def _masked_values(self, s, order, k):
        s = s.astype(np.float64)
        inside, count = self._iterate(s, k)
        w = None if self.weights is None else self.weights[order]
        return self._survivor_values(s, w, inside, count), count, None

    def _iterate(self, s: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """astropy's iterations on sorted columns ``s``: the survivors' mask and count per column.

        As astropy's C implementation (``compute_sigma_clipped_bounds``) does: bounds from the
        median and standard deviation of the values still in, values outside them out; stop when
        nothing changes, nothing is left or after ``max_iters`` bounds. The survivors are then
        every value within the last bounds, so a value dropped early comes back when the last
        bounds include it. NaN bounds (an infinity in the column) drop nothing. ``valid``: the
        count of values of each column (its first rows) to look at, when not all N.
        """
        n, k = s.shape
        cols = np.arange(k)
        lo = np.zeros(k, np.int64)
        hi = np.full(k, n, np.int64) if valid is None else np.asarray(valid, np.int64).copy()
        centre = np.empty(k)
        last_lower, last_upper = np.empty(k), np.empty(k)
        active = np.ones(k, bool)
        index = np.arange(n)[:, None]
        for _ in range(self.iterations):
            count = hi - lo
            inside = (index >= lo) & (index < hi)
            midpoint(s[(lo + hi - 1) // 2, cols], s[np.minimum((lo + hi) // 2, n - 1), cols], centre)
            kept = np.where(inside, s, 0.0)
            if self.exact:
                std = self._moments(kept.sum(axis=0), (kept * kept).sum(axis=0), count)
            else:
                mean = kept.sum(axis=0) / count
                dev = np.where(inside, s - mean, 0.0)
                std = np.sqrt((dev * dev).sum(axis=0) / count)
            lower = centre - std * self.low
            upper = centre + std * self.high
            np.copyto(last_lower, lower, where=active)
            np.copyto(last_upper, upper, where=active)
            new_lo = lo + ((s < lower) & inside).sum(axis=0)
            new_hi = hi - ((s > upper) & inside).sum(axis=0)
            changed = active & ((new_lo != lo) | (new_hi != hi))
            lo = np.where(changed, new_lo, lo)
            hi = np.where(changed, np.maximum(new_hi, new_lo), hi)
            active = changed & (hi > lo)
            if not active.any():
                break
        unbounded = np.isnan(last_lower) | np.isnan(last_upper)
        survivors = ((s >= last_lower) & (s <= last_upper)) | unbounded
        if valid is not None:
            survivors &= index < np.asarray(valid)
        return survivors, survivors.sum(axis=0)


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
            self.kept = self.survivors
            return self._store_values(self._survivor_values(s, w, inside, self.survivors), None, rows, out)
        self.kept = self.survivors
        ordered = order_rows(rows, self.sort_rows, self.needed) if self.needed else list(rows)
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

    def _masked_values(self, s, order, k):
        s = s.astype(np.float64)
        index = np.arange(len(s))[:, None]
        inside = (index >= self.nlow) & (index < k - self.nhigh)
        count = np.maximum(k - self.nlow - self.nhigh, 0)
        w = None if self.weights is None else self.weights[order]
        return self._survivor_values(s, w, inside, count), count, None
