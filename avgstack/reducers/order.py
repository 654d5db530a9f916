"""Order statistics over the frames: median and percentiles.

Both select stored values with a pruned sorting network (:mod:`.networks`)
and touch them only where numpy's definitions ask for arithmetic:

* median of an odd count: the middle stored value; of an even count, the mean
  of the two middle values, exact (integers: rounded half to even; floats:
  ``(a + b) / 2`` in float64, one rounding into the output type).
* percentile ``p``: numpy's default ``linear`` method on the stored values,
  virtual index ``(N - 1) * (p / 100)``, interpolated with numpy's ``_lerp``
  in float64, rounded half to even into integer outputs; between two equal
  values, that value (numpy would turn ``-0.0`` into ``0.0`` and two equal
  infinities into NaN).

A column holding a NaN gives NaN, as ``np.median`` and ``np.percentile`` do.

With missing data, a sample's median and percentile are those of its ``k``
valid values (``np.ma.median``; the percentile's virtual index
``(k - 1) * (p / 100)``), computed the same way.
"""

from __future__ import annotations

import math

import numpy as np

from .base import ReduceSpec
from .cube import CubeReducer
from .networks import order_rows

__all__ = ["Median", "Percentile", "percentile_index"]


def percentile_index(count: int, percentile: float) -> tuple[int, int, float]:
    """``(previous, next, gamma)`` of numpy's linear method for ``count`` values."""
    virtual = (count - 1) * (float(percentile) / 100.0)
    previous = min(max(math.floor(virtual), 0), count - 1)
    following = min(previous + 1, count - 1)
    return previous, following, virtual - previous


class _Order(CubeReducer):
    """Selects positions ``needed`` of each sorted column."""

    needed: tuple[int, ...]

    def _select(self, rows: list[np.ndarray]) -> list[np.ndarray]:
        return order_rows(rows, self.sort_rows, self.needed, others=False)

    @staticmethod
    def _at(s: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Row ``index[j]`` of every column ``j`` of ``s`` (indices clipped to the rows)."""
        return s[np.clip(index, 0, s.shape[0] - 1), np.arange(s.shape[1])]


class Median(_Order):
    """Median of every sample over the frames."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        n = spec.count
        self.odd = n % 2 == 1
        self.needed = (n // 2,) if self.odd else (n // 2 - 1, n // 2)

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        nan = self.nan_columns(rows)
        ordered = self._select(rows)
        if self.odd:
            middle = ordered[self.needed[0]]
            if nan is None:
                return self.store(middle, out)
            values = self._float(1, len(out))
            values[...] = middle
        else:
            a, b = (ordered[i] for i in self.needed)
            if not self.in_float and self.out_int:
                return self.store(_half_even_midpoint(a, b), out)
            values = self._float(1, len(out))
            midpoint(a, b, values)
        self.propagate_nan(values, rows, nan)
        return self.store(values, out)

    def _masked_values(self, s, order, k):
        a, b = self._at(s, (k - 1) // 2), self._at(s, k // 2)  # equal for odd counts
        if not self.in_float and self.out_int:
            return _half_even_midpoint(a, b), None, None
        values = midpoint(a, b, np.empty(len(k)))
        odd = k % 2 == 1
        values[odd] = a[odd]  # the stored value
        return values, None, None


def _half_even_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a + b) / 2`` of integers, rounded half to even, exactly (int64)."""
    s = a.astype(np.int64)
    s += b
    q = s >> 1  # floor
    q += (s & 1) & (q & 1)  # a half: round up when the floor is odd
    return q


def midpoint(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Correctly rounded ``(a + b) / 2`` in float64 (halves first where the sum overflows)."""
    np.add(a, b, out=out, dtype=np.float64)
    np.multiply(out, 0.5, out=out)
    over = np.isinf(out) & np.isfinite(a) & np.isfinite(b)
    if over.any():
        aa, bb = np.asarray(a, np.float64)[over], np.asarray(b, np.float64)[over]
        out[over] = aa * 0.5 + bb * 0.5
    return out


class Percentile(_Order):
    """The ``percentile``-th percentile of every sample over the frames (numpy's linear method)."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.previous, self.following, self.gamma = percentile_index(spec.count, spec.param("percentile"))
        self.needed = tuple(sorted({self.previous, self.following}))

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        nan = self.nan_columns(rows)
        ordered = self._select(rows)
        a = ordered[self.previous]
        if self.gamma == 0.0:
            if nan is None:
                return self.store(a, out)
            values = self._float(1, len(out))
            values[...] = a
        else:
            b = ordered[self.following]
            values = self._float(1, len(out))
            diff = self._float(2, len(out))
            t = self.gamma
            # numpy's _lerp: a + (b - a) * t, or b - (b - a) * (1 - t) from t = 0.5 up
            np.subtract(b, a, out=diff, dtype=np.float64)
            if t >= 0.5:
                np.multiply(diff, 1.0 - t, out=diff)
                np.subtract(b, diff, out=values, dtype=np.float64)
            else:
                np.multiply(diff, t, out=diff)
                np.add(a, diff, out=values, dtype=np.float64)
            # equal neighbours give their value: numpy's lerp turns -0.0 into 0.0 and two infinities into NaN
            same = a == b
            if same.any():
                values[same] = a[same]
        self.propagate_nan(values, rows, nan)
        return self.store(values, out)

    def _masked_values(self, s, order, k):
        # percentile_index per column: the same float64 arithmetic, vectorised
        virtual = (k - 1).astype(np.float64) * (float(self.spec.param("percentile")) / 100.0)
        previous = np.clip(np.floor(virtual).astype(np.int64), 0, np.maximum(k - 1, 0))
        following = np.minimum(previous + 1, np.maximum(k - 1, 0))
        t = virtual - previous
        a, b = self._at(s, previous), self._at(s, following)
        diff = np.subtract(b, a, dtype=np.float64)
        low = np.add(a, diff * t, dtype=np.float64)
        high = np.subtract(b, diff * (1.0 - t), dtype=np.float64)
        values = np.where(t >= 0.5, high, low)
        same = (t == 0.0) | (a == b)  # the stored value, as the unmasked path gives it
        values[same] = a[same]
        return values, None, None
