"""Alpha as coverage (``alpha='coverage'`` / ``--alpha coverage``): colour averaged weighted by alpha.

For unassociated (straight) alpha the colour of a pixel is
``sum(a_i * c_i) / sum(a_i)`` and its alpha the mean alpha, so the hidden
colour of fully transparent pixels does not bleed into the mean. Where every
frame is fully transparent the colour is the plain mean (K copies of a file
give it back) and alpha is 0. Integer samples are summed exactly (int64 holds
``2**32 * count`` for 16-bit samples) and divided once, rounded half to even;
float samples are summed in float64. Associated (premultiplied) alpha is
already coverage-weighted: its plain mean is the answer, and only the counts
differ. Counts (for the count map) are per pixel: frames with alpha > 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..buffers import Buffer, opaque
from ..errors import UsageError
from .base import Reducer, ReduceSpec

__all__ = ["CoverageMean", "coverage_params", "ALPHA_PARAM"]

#: ReduceSpec param naming the alpha handling: ``'coverage'`` (unassociated) or ``'coverage-associated'``.
ALPHA_PARAM = "alpha"
_CHUNK = 1 << 14


def coverage_params(stack: object, options: object, missing: object = None) -> dict[str, object]:
    """ReduceSpec params for ``alpha='coverage'``, checked against the stack (empty for ``'channel'``)."""
    if getattr(options, "alpha", "channel") != "coverage":
        return {}
    extras = tuple(getattr(stack, "extrasamples", ()))
    samples = stack.shape[2]  # type: ignore[attr-defined]
    if len(extras) != 1 or samples not in (2, 4):
        raise UsageError(
            "alpha (--alpha) coverage needs gray+alpha or RGBA inputs with one alpha sample; "
            f"these have {samples} sample(s)"
        )
    if getattr(options, "weights", None) is not None:
        raise UsageError("alpha (--alpha) coverage works with the mean, not with weights (yet)")
    if getattr(missing, "active", False) or getattr(options, "min_count", None):
        raise UsageError(
            "alpha (--alpha) coverage cannot be combined with a nodata value or --min-count (yet); "
            "use --nodata none"
        )
    return {ALPHA_PARAM: "coverage-associated" if extras[0] == 1 else "coverage"}


class CoverageMean(Reducer):
    """Mean of gray+alpha or RGBA frames with colour weighted by (unassociated) alpha."""

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self._associated = spec.param(ALPHA_PARAM) == "coverage-associated"
        self._float = spec.in_dtype.kind == "f"
        self._weighted = self._allocate("coverage sums")  # sum a*c per colour sample, sum a per pixel
        self._plain = self._allocate("plain sums")
        self._covered = self._allocate("covered frames")

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        size = int(np.prod(shape, dtype=np.int64))
        kind = np.float64 if spec.in_dtype.kind == "f" else np.int64
        return [
            Buffer("coverage sums", (size,), kind),
            Buffer("plain sums", (size,), kind),
            Buffer("covered frames", (size // shape[2],), np.int64),
            opaque("arithmetic temporaries", 16 * _CHUNK * 8),
        ]

    def _reset(self, size: int) -> None:
        self._weighted[:size] = 0
        self._plain[:size] = 0
        self._covered[: size // self.shape[2]] = 0

    def _add(self, flat: np.ndarray, index: int) -> None:
        s = self.shape[2]
        pixels = flat.size // s
        work = np.float64 if self._float else np.int64
        step = max(1, _CHUNK // s)
        for p0 in range(0, pixels, step):
            p1 = min(pixels, p0 + step)
            x = flat[p0 * s : p1 * s].reshape(-1, s).astype(work)
            a = x[:, s - 1 : s]
            w = self._weighted[p0 * s : p1 * s].reshape(-1, s)
            w[:, : s - 1] += a * x[:, : s - 1]
            w[:, s - 1 :] += a
            self._plain[p0 * s : p1 * s] += x.reshape(-1)
            self._covered[p0:p1] += (a[:, 0] > 0).astype(np.int64)

    def _finish(self, out: np.ndarray) -> int:
        s, n = self.shape[2], self.count
        pixels = out.size // s
        step = max(1, _CHUNK // s)
        for p0 in range(0, pixels, step):
            p1 = min(pixels, p0 + step)
            plain = self._plain[p0 * s : p1 * s].reshape(-1, s)
            w = self._weighted[p0 * s : p1 * s].reshape(-1, s)
            dst = out[p0 * s : p1 * s].reshape(-1, s)
            total_a = w[:, s - 1 :]
            if self._float:
                mean = plain / n
                with np.errstate(invalid="ignore", divide="ignore"):
                    colour = np.where(total_a > 0, w[:, : s - 1] / np.where(total_a > 0, total_a, 1), mean[:, :-1])
                dst[:, : s - 1] = colour if not self._associated else mean[:, :-1]
                dst[:, s - 1] = mean[:, s - 1]
            else:
                mean = _round_div(plain, n)
                if self._associated:
                    colour = mean[:, :-1]
                else:
                    colour = np.where(total_a > 0, _round_div(w[:, : s - 1], np.maximum(total_a, 1)), mean[:, :-1])
                dst[:, : s - 1] = colour
                dst[:, s - 1] = mean[:, s - 1]
        if self._counts is not None:
            counts = self._counts[: out.size].reshape(-1, s)
            counts[...] = self._covered[:pixels, None]
        return 0


def _round_div(num: np.ndarray, den: Any) -> np.ndarray:
    """``num / den`` for non-negative integers, rounded half to even, exactly."""
    q, r = np.divmod(num, den)
    twice = 2 * r
    up = (twice > den) | ((twice == den) & (q % 2 == 1))
    return q + up
