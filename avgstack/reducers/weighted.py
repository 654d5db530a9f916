"""Weighted sums ``sum_i w_i * x_i``, in float64 or, where provably within 1 unit, in float32.

See :class:`WeightedSum`. Helpers (chunking, rounding) live in :mod:`avgstack.arithmetic`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..arithmetic import (
    CHUNK,
    _chunks,
    _clip_into,
    _round_into,
    _scratch,
    sample_range,
    store_float,
)
from ..buffers import Buffer
from .base import Reducer as Accumulator
from .base import ReduceSpec, take

__all__ = ["WeightedSum"]


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
