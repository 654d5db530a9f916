"""What every cube reducer shares: chunks of samples that stay in cache, NaN propagation, storing results.

A cube reducer gets the band rows of all N frames at once. It walks the band
in chunks of :meth:`CubeReducer.chunk` samples; each chunk is N rows (one per
frame, views into the cube, never copied) that :meth:`CubeReducer._chunk`
reduces into one output row. Scratch rows are declared buffers sized to the
chunk, so the planner counts them and the work stays in the CPU caches.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..arithmetic import _clip_into, _round_into, sample_range
from ..buffers import Buffer, opaque
from .base import CUBE, Reducer, ReduceSpec

__all__ = ["CubeReducer", "chunk_for", "work_dtype"]

#: Bytes of the N + 2 scratch rows of one chunk: about an L2 cache.
CHUNK_BYTES = 1 << 20


def work_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the networks compare in: the input's (bool as uint8)."""
    dtype = np.dtype(dtype)
    return np.dtype(np.uint8) if dtype == np.bool_ else dtype


def chunk_for(count: int, itemsize: int, size: int, *, floor: int = 1024, ceiling: int = 1 << 16) -> int:
    """Samples per chunk: a power of two whose ``count + 2`` rows fill about :data:`CHUNK_BYTES`."""
    per = CHUNK_BYTES // max(1, (count + 2) * itemsize)
    chunk = 1 << max(0, per.bit_length() - 1)
    return max(1, min(max(floor, min(chunk, ceiling)), size))


class CubeReducer(Reducer):
    """A reducer fed ``(N, rows, width, samples)`` cubes, reducing them chunk by chunk.

    Subclasses implement :meth:`_chunk` and may add state buffers with
    :meth:`extra_buffers` (sized to :meth:`chunk`).
    """

    kind: ClassVar[str] = CUBE
    #: Float64 rows of chunk length used by the subclass besides the sort rows (counted by the planner).
    float_rows: ClassVar[int] = 4

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        super().__init__(spec, shape)
        self.in_dtype = spec.in_dtype
        self.out_range = sample_range(self.out_dtype, spec.out_bits)
        self.out_int = self.out_dtype.kind in "uib"
        self.in_float = spec.in_dtype.kind == "f"
        self.chunk_size = self.chunk(spec, self.shape)
        self.sort_rows = self._allocate("sort rows")
        self.floats = self._allocate("float rows")
        if self.in_dtype.kind in "uib":
            info = np.iinfo(work_dtype(self.in_dtype))
            lo, hi = self.out_range
            self._may_clip = info.min < lo or info.max > hi
        else:
            self._may_clip = True

    @classmethod
    def chunk(cls, spec: ReduceSpec, shape: tuple[int, ...]) -> int:
        """Samples per chunk for bands of ``shape``."""
        size = int(np.prod(shape, dtype=np.int64))
        return chunk_for(spec.count, max(work_dtype(spec.in_dtype).itemsize, 4), max(1, size))

    @classmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        c = cls.chunk(spec, shape)
        return [
            Buffer("sort rows", (spec.count + 2, c), work_dtype(spec.in_dtype)),
            Buffer("float rows", (cls.float_rows, c), np.dtype(np.float64)),
            *cls.extra_buffers(spec, c),
            opaque("chunk temporaries", 8 * c * 8),
        ]

    @classmethod
    def extra_buffers(cls, spec: ReduceSpec, chunk: int) -> list[Buffer]:
        """Further buffers of chunk length a subclass needs."""
        return []

    # -- work --------------------------------------------------------------------

    def reduce(self, cube: np.ndarray, out: np.ndarray) -> int:
        n, rows = cube.shape[0], cube.shape[1]
        if n != self.count or rows != self._rows or cube[0].size != self._size:
            raise ValueError(f"cube {cube.shape} does not match {self.count} frames of {self._rows} rows")
        flat_out = out.reshape(-1)
        if not np.shares_memory(flat_out, out):
            raise ValueError("output band must be contiguous")
        frames = [cube[i].reshape(-1) for i in range(n)]  # each frame's band rows are contiguous
        if self.in_dtype == np.bool_:
            frames = [f.view(np.uint8) for f in frames]
        clipped = 0
        c = self.chunk_size
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for start in range(0, self._size, c):
                stop = min(start + c, self._size)
                clipped += self._chunk([f[start:stop] for f in frames], flat_out[start:stop])
        return clipped

    def _chunk(self, rows: list[np.ndarray], out: np.ndarray) -> int:
        """Reduce N rows (one per frame) into ``out``; return the clipped count."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------

    def _float(self, k: int, length: int) -> np.ndarray:
        """Float64 scratch row ``k`` of ``length`` samples."""
        return self.floats[k, :length]

    def nan_columns(self, rows: list[np.ndarray]) -> np.ndarray | None:
        """Mask of the columns holding a NaN, or None when there is none (always None for integers)."""
        if not self.in_float:
            return None
        probe = self._float(0, len(rows[0]))
        probe[...] = rows[0]
        for r in rows[1:]:
            np.add(probe, r, out=probe)
        if not np.isnan(probe).any():  # NaN in, or inf + -inf: look closer
            return None
        mask = np.isnan(rows[0])
        for r in rows[1:]:
            mask |= np.isnan(r)
        return mask if mask.any() else None

    def propagate_nan(self, values: np.ndarray, rows: list[np.ndarray], mask: np.ndarray | None) -> None:
        """Set ``values`` (float) to the NaN of its column where ``mask`` is set, as numpy's reductions do."""
        if mask is None:
            return
        first = np.full(int(mask.sum()), np.nan, values.dtype)
        for r in reversed(rows):  # the first NaN of the column, payload kept
            picked = r[mask]
            nan = np.isnan(picked)
            first[nan] = picked[nan]
        values[mask] = first

    def store(self, values: np.ndarray, out: np.ndarray) -> int:
        """Write ``values`` into ``out``: integers saturated, floats rounded half to even; return clipped.

        ``values`` may be modified (it is scratch or a row no longer needed).
        """
        if not self.out_int:
            out[...] = values
            return 0
        lo, hi = self.out_range
        if values.dtype.kind == "f":
            if values.dtype != np.float64:
                tmp = self._float(self.float_rows - 1, values.size)
                tmp[...] = values
                values = tmp
            return _round_into(values, out, lo, hi)
        if self._may_clip or out.dtype.kind != values.dtype.kind:
            return _clip_into(values, out, lo, hi)
        out[...] = values
        return 0
