"""What every cube reducer shares: chunks of samples that stay in cache, NaN propagation, storing results.

A cube reducer gets the band rows of all N frames at once. It walks the band
in chunks of :meth:`CubeReducer.chunk` samples; each chunk is N rows (one per
frame, views into the cube, never copied) that :meth:`CubeReducer._chunk`
reduces into one output row. Scratch rows are declared buffers sized to the
chunk, so the planner counts them and the work stays in the CPU caches.

Missing data (see :mod:`.base`): a chunk whose frames are all valid takes
:meth:`CubeReducer._chunk` unchanged. In a chunk with invalid samples, the
columns whose frames are all valid are gathered into the declared
``gathered rows`` and take ``_chunk`` too; the others, in pieces of at most
:data:`MASKED_COLUMNS`, are sorted with their valid values first (ascending,
NaN last among them) and reduced by :meth:`CubeReducer._masked_values` over
each column's own count of valid values. A valid NaN gives NaN, as in the
unmasked path.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..arithmetic import _clip_into, _round_into, sample_range
from ..buffers import Buffer, opaque
from ..missing import from_spec
from .base import CUBE, Reducer, ReduceSpec

__all__ = ["CubeReducer", "MASKED_COLUMNS", "chunk_for", "work_dtype"]

#: Bytes of the N + 2 scratch rows of one chunk: about an L2 cache.
CHUNK_BYTES = 1 << 20
#: Columns with invalid frames sorted at once: (N, MASKED_COLUMNS) temporaries.
MASKED_COLUMNS = 2048
#: (N, columns) 8-byte temporaries of the masked path alive at once (values, order, keys, floats).
MASKED_ROWS = 8


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
    #: Drops values: :meth:`_chunk` sets :attr:`kept` (frames kept per column, or one number for all).
    rejects: ClassVar[bool] = False
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
        names = {b.name for b in self._declared}
        self.gathered = self._allocate("gathered rows") if "gathered rows" in names else None
        self.gathered_out = self._allocate("gathered output") if "gathered output" in names else None
        #: Rejecting reducers: kept frames per column of the last chunk (a number: the same for all).
        self.kept: Any = None
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
            *cls.masked_buffers(spec, c),
        ]

    @classmethod
    def masked_buffers(cls, spec: ReduceSpec, chunk: int) -> list[Buffer]:
        """The masked path's buffers, when samples can be missing (see the module docstring)."""
        if not from_spec(spec).active:
            return []
        m = min(chunk, MASKED_COLUMNS)
        return [
            Buffer("gathered rows", (spec.count, chunk), work_dtype(spec.in_dtype)),
            Buffer("gathered output", (chunk,), spec.out_dtype),
            opaque("masked temporaries", MASKED_ROWS * (spec.count + 1) * m * 8),
        ]

    @classmethod
    def extra_buffers(cls, spec: ReduceSpec, chunk: int) -> list[Buffer]:
        """Further buffers of chunk length a subclass needs."""
        return []

    # -- work --------------------------------------------------------------------

    def _reduce(self, cube: np.ndarray, out: np.ndarray, valid: np.ndarray | None) -> int:
        n, rows = cube.shape[0], cube.shape[1]
        if n != self.count or rows != self._rows or cube[0].size != self._size:
            raise ValueError(f"cube {cube.shape} does not match {self.count} frames of {self._rows} rows")
        flat_out = out.reshape(-1)
        if not np.shares_memory(flat_out, out):
            raise ValueError("output band must be contiguous")
        frames = [cube[i].reshape(-1) for i in range(n)]  # each frame's band rows are contiguous
        if self.in_dtype == np.bool_:
            frames = [f.view(np.uint8) for f in frames]
        vflat = None if valid is None else np.asarray(valid, bool).reshape(n, -1)
        counts = None if self._counts is None else self._counts[: self._size]
        clipped = 0
        c = self.chunk_size
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for start in range(0, self._size, c):
                stop = min(start + c, self._size)
                chunk = [f[start:stop] for f in frames]
                dst = flat_out[start:stop]
                kept = None if counts is None else counts[start:stop]
                if vflat is not None:
                    v = vflat[:, start:stop]
                    if not v.all():
                        clipped += self._mixed(chunk, v, dst, kept)
                        continue
                clipped += self._chunk(chunk, dst)
                if kept is not None and self.rejects:
                    kept[...] = self.kept
        return clipped

    def _mixed(self, rows: list[np.ndarray], valid: np.ndarray, out: np.ndarray, kept: np.ndarray | None) -> int:
        """A chunk with invalid samples: whole columns through :meth:`_chunk`, the others masked."""
        full = valid.all(axis=0)
        clipped = 0
        if full.any():
            assert self.gathered is not None and self.gathered_out is not None
            idx = np.flatnonzero(full)
            m = len(idx)
            gathered = self.gathered[:, :m]
            for i, r in enumerate(rows):
                np.take(r, idx, out=gathered[i])
            result = self.gathered_out[:m]
            clipped += self._chunk(list(gathered), result)
            out[idx] = result
            if kept is not None and self.rejects:
                kept[idx] = self.kept
        cols = np.flatnonzero(~full)
        for start in range(0, len(cols), MASKED_COLUMNS):
            clipped += self._masked_columns(rows, valid, cols[start : start + MASKED_COLUMNS], out, kept)
        return clipped

    def _masked_columns(
        self, rows: list[np.ndarray], valid: np.ndarray, cols: np.ndarray, out: np.ndarray, kept: np.ndarray | None
    ) -> int:
        """Columns ``cols`` of a chunk over their valid values only."""
        ok = valid[:, cols]
        values = np.stack([r[cols] for r in rows])
        order = np.lexsort((values, ~ok), axis=0)  # valid first, ascending, NaN last among them; stable
        s = np.take_along_axis(values, order, axis=0)
        k = ok.sum(axis=0)
        result, survivors, void = self._masked_values(s, order, k)
        if self.in_float:  # a valid NaN (the last valid value when there is one) gives NaN
            last = s[np.maximum(k - 1, 0), np.arange(len(cols))]
            nan = np.isnan(last) & (k > 0)
            if nan.any():
                result = result.astype(np.float64)
                result[nan] = last[nan]
        empty = k == 0 if survivors is None else survivors == 0
        void = empty if void is None else void | empty
        if void.any():
            result = np.where(void, 0, result)  # written as nodata below, not counted as clipped
        assert self.gathered_out is not None
        dst = self.gathered_out[: len(cols)]
        clipped = self.store(result, dst)
        if void.any() and self.missing.nodata is not None:
            nodata = self.missing.nodata
            dst[void] = dst.dtype.type(nodata) if dst.dtype.kind == "f" else int(nodata)
        out[cols] = dst
        if kept is not None:
            kept[cols] = k if survivors is None else survivors
        return clipped

    def _masked_values(
        self, s: np.ndarray, order: np.ndarray, k: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Reduce sorted columns ``s`` (N, m), each's ``k`` valid values first (``order``: their frames).

        Returns the values (float64 or int64), the frames kept per column (None: ``k``), and the
        columns that must become nodata whatever their count (None: none).
        """
        raise NotImplementedError

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
