"""Standard deviation and variance over the frames, with numpy's definitions.

``var = sum((x_i - mean)**2) / (N - ddof)`` and ``std = sqrt(var)``, as
``np.var`` / ``np.std`` define them (``ddof`` 0 by default). Computed in
float64 by the corrected two-pass algorithm (Chan, Golub & LeVeque): the mean
first, exact (integers) or in double-double (floats), then
``(sum(d**2) - sum(d)**2 / N) / (N - ddof)`` with ``d = x - mean``, whose
correction term removes the mean's own rounding error. A stack of identical
values has deviations of exactly zero, so K copies of a file give zeros.
NaN propagates; an infinity makes the result NaN, as in numpy.

With missing data each sample has its own count ``n`` of valid frames, and
``ddof`` counts against that ``n``. A sample with ``n <= ddof`` (but at least
``min_count``) has no defined value: it becomes nodata, as ``numpy.ma.var``
masks it (numpy's ``var`` gives NaN or inf there, with a warning).
"""

from __future__ import annotations

import numpy as np

from .base import ReduceSpec
from .clipping import mean_of_rows
from .cube import CubeReducer

__all__ = ["Moments"]


class Moments(CubeReducer):
    """``std`` or ``var`` of every sample over the frames."""

    float_rows = 6

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.ddof = int(spec.param("ddof", 0) or 0)
        self.root = spec.method == "std"
        kind = spec.in_dtype.kind
        if kind in "uib":
            info = np.iinfo(np.uint8 if spec.in_dtype == np.bool_ else spec.in_dtype)
            self.exact_sum = max(abs(int(info.min)), int(info.max)) * spec.count < 2**53
        else:
            self.exact_sum = False

    @classmethod
    def chunk(cls, spec: ReduceSpec, shape: tuple[int, ...]) -> int:
        size = max(1, int(np.prod(shape, dtype=np.int64)))
        return min(size, 1 << 13)

    def _mean(self, rows: list[np.ndarray], k: int) -> np.ndarray:
        n = float(len(rows))
        hi = self._float(0, k)
        if self.exact_sum:  # integers whose sums are exact in float64: one rounding
            hi[...] = rows[0]
            for r in rows[1:]:
                np.add(hi, r, out=hi)
            np.divide(hi, n, out=hi)
            return hi
        hi[...] = mean_of_rows(rows, len(rows))  # double-double, scaled where sums could overflow
        return hi

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        k = len(out)
        n = len(rows)
        mean = self._mean(rows, k)
        d, sd, sq = self._float(2, k), self._float(3, k), self._float(4, k)
        sd[...] = 0.0
        sq[...] = 0.0
        for r in rows:
            np.subtract(r, mean, out=d, dtype=np.float64)
            np.add(sd, d, out=sd)
            np.multiply(d, d, out=d)
            np.add(sq, d, out=sq)
        # corrected two-pass: sum(d**2) - sum(d)**2 / N, never below zero
        np.multiply(sd, sd, out=sd)
        np.divide(sd, float(n), out=sd)
        np.subtract(sq, sd, out=sq)
        np.maximum(sq, 0.0, out=sq)  # NaN stays NaN
        np.divide(sq, float(n - self.ddof), out=sq)
        if self.root:
            np.sqrt(sq, out=sq)
        return self.store(sq, out)


    def _masked_values(self, s, order, k):
        m = len(k)
        inside = np.arange(len(s))[:, None] < k
        rows = list(s)
        n = np.maximum(k, 1).astype(np.float64)
        if self.exact_sum:  # exact integer sums in float64: one rounding
            mean = np.where(inside, s, 0).sum(axis=0, dtype=np.float64) / n
        else:
            mean = mean_of_rows(rows, np.maximum(k, 1), inside)
        sd, sq = np.zeros(m), np.zeros(m)
        for r, ok in zip(rows, inside, strict=True):
            d = np.where(ok, np.subtract(r, mean, dtype=np.float64), 0.0)
            sd += d
            sq += d * d
        var = np.maximum(sq - sd * sd / n, 0.0) / np.maximum(k - self.ddof, 1)  # NaN stays NaN
        if self.root:
            var = np.sqrt(var)
        return var, None, k <= self.ddof
