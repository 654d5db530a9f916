"""The reducer contract: what to compute over a band's frames, and which buffers that needs.

Two kinds, as dask's reductions split chunk work from aggregation:

* **frame** reducers are fed one frame's rows at a time (mean, weighted sum,
  later min, max, variance): ``reset(rows)``, ``add(rows, index)`` for every
  frame, then ``finish(out)``.
* **cube** reducers need the rows of all N frames of a band at once (median,
  percentiles, clipping): ``reset(rows)``, then ``reduce(cube, out)`` with a
  ``(N, rows, width, samples)`` array.

**Incremental use** (:class:`avgstack.Accumulator`): a reducer class with
``incremental = True`` also accepts an *open-ended* spec (``open_ended=True``:
``count`` is then a capacity, the most frames its state must hold exactly, and
:meth:`Reducer.finish` reduces the frames added so far, :attr:`Reducer.added`),
a weight with each frame (:meth:`Reducer.set_weight`), an exact copy of its
state as named arrays (:meth:`Reducer.state`) that :meth:`Reducer.restore`
loads back bit for bit, and a :meth:`Reducer.finish` that leaves that state
unchanged, so more frames can be added after a result.

**Missing data.** When the spec carries a nodata value (params ``nodata``,
``renormalize``, ``min_count``; see :mod:`avgstack.missing`) or asks for
counts (param ``counts``), the base class keeps a per-sample count of valid
frames (``valid counts``, declared here) and hands reducers masks:

* frame reducers: :meth:`Reducer.add` takes ``valid``, a boolean array of the
  rows' shape (True where the sample is valid); without one the base class
  computes it from the nodata value into its ``valid mask`` buffer. Frames
  with an invalid sample go to :meth:`Reducer._add_masked`, whose default
  overwrites the invalid samples *in place* with :meth:`Reducer.neutral` (the
  rows are the reducer's input buffer: reducers may change them) and calls
  ``_add``. ``_finish`` divides by :attr:`Reducer.valid_counts` where it needs
  the number of frames (mean: per-sample count instead of ``count``).
* cube reducers: :meth:`Reducer.reduce` takes ``valid`` of the cube's shape
  (computed into the declared ``valid cube`` when None); they reduce over the
  valid frames only and must write the count of frames they kept (after their
  own rejection) into :attr:`Reducer.valid_counts`.
* after ``_finish``/``reduce``, the base class writes the nodata value where
  fewer than ``min_count`` (at least 1) frames were counted; :meth:`counts`
  returns the band's counts (for the count map).

Each reducer declares every buffer it needs for a band of a given height,
including the input rows it is fed (:meth:`Reducer.declare`), and allocates
from those same declarations. A :class:`ReduceSpec` is the picklable
description of the job's reduction, from which any thread, process or cluster
worker builds the same reducer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..buffers import Buffer, find
from ..missing import count_dtype, from_spec, valid_mask

__all__ = ["FRAME", "CUBE", "ReduceSpec", "Reducer", "input_buffer_name", "take"]

FRAME = "frame"
CUBE = "cube"


@dataclass(frozen=True)
class ReduceSpec:
    """What a job computes, as a picklable value.

    Attributes
    ----------
    method : str
        ``'mean'``, ``'weighted'``, ...
    count : int
        Number of frames.
    in_dtype, out_dtype : numpy.dtype
        Sample types of the inputs (as decoded) and of the result.
    weights : tuple of float, optional
        One per frame, for weighted methods.
    out_bits : int, optional
        Packed bit depth of the output, which narrows its range.
    params : tuple of (str, value)
        Method parameters (percentile, sigma bounds, ...).
    open_ended : bool
        Incremental use: frames (and their weights) arrive one by one, and
        ``count`` is the capacity the state is sized for, not the frame count.
    """

    method: str
    count: int
    in_dtype: np.dtype
    out_dtype: np.dtype
    weights: tuple[float, ...] | None = None
    out_bits: int | None = None
    params: tuple[tuple[str, Any], ...] = ()
    open_ended: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "in_dtype", np.dtype(self.in_dtype))
        object.__setattr__(self, "out_dtype", np.dtype(self.out_dtype))
        if self.weights is not None:
            object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))

    def param(self, name: str, default: Any = None) -> Any:
        """Value of a method parameter."""
        return dict(self.params).get(name, default)


def input_buffer_name(kind: str) -> str:
    """Name of the declared buffer a reducer of ``kind`` is fed from."""
    return "input cube" if kind == CUBE else "input band"


class Reducer(ABC):
    """Reduces the frames of one band of rows at a time into output rows.

    Parameters
    ----------
    spec : ReduceSpec
        What to compute.
    shape : tuple of int
        ``(rows, width, samples)`` of the tallest band this reducer handles.
    """

    kind: ClassVar[str] = FRAME
    #: Implements incremental use: open-ended specs, :meth:`set_weight`, :meth:`state` and :meth:`restore`.
    incremental: ClassVar[bool] = False

    def __init__(self, spec: ReduceSpec, shape: tuple[int, int, int]) -> None:
        self.spec = spec
        rows, width, samples = (int(n) for n in shape)
        self.shape: tuple[int, int, int] = (rows, width, samples)
        self.count = spec.count
        self.out_dtype = spec.out_dtype
        self._rows = self.shape[0]
        self._size = int(np.prod(self.shape, dtype=np.int64))
        self._declared = self.state_buffers(spec, self.shape)
        #: Frames added to the current band.
        self.added = 0
        self._declared = [*self.state_buffers(spec, self.shape), *self.missing_buffers(spec, self.shape)]
        self.missing = from_spec(spec)
        names = {b.name for b in self._declared}
        self._mask = self._allocate("valid mask") if "valid mask" in names else None
        self._mask_cube = self._allocate("valid cube") if "valid cube" in names else None
        self._counts = self._allocate("valid counts") if "valid counts" in names else None
        #: Per-sample valid frame counts of the band so far; None when every frame is always valid.
        self.valid_counts: np.ndarray | None = None

    # -- declarations ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def state_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        """Buffers the reducer itself holds for bands of ``shape``."""

    @classmethod
    def input_buffer(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> Buffer:
        """The input rows it is fed: one frame's band, or every frame's (a cube)."""
        if cls.kind == CUBE:
            return Buffer(input_buffer_name(CUBE), (spec.count, *shape), spec.in_dtype)
        return Buffer(input_buffer_name(FRAME), shape, spec.in_dtype)

    @classmethod
    def missing_buffers(cls, spec: ReduceSpec, shape: tuple[int, int, int]) -> list[Buffer]:
        """The valid mask and per-sample counts, when the spec has missing data or asks for counts."""
        size = int(np.prod(shape, dtype=np.int64))
        buffers = []
        if from_spec(spec).active:
            mask = (spec.count, size) if cls.kind == CUBE else (size,)
            buffers.append(Buffer("valid cube" if cls.kind == CUBE else "valid mask", mask, np.bool_))
        if from_spec(spec).active or spec.param("counts"):
            buffers.append(Buffer("valid counts", (size,), count_dtype(spec.count)))
        return buffers

    @classmethod
    def declare(cls, spec: ReduceSpec, shape: tuple[int, int, int], *, inputs: bool = True) -> list[Buffer]:
        """Every buffer a band of ``shape`` needs: input rows (unless ``inputs`` is False) and state."""
        state = [*cls.state_buffers(spec, shape), *cls.missing_buffers(spec, shape)]
        return [cls.input_buffer(spec, shape), *state] if inputs else state

    def _allocate(self, name: str) -> np.ndarray:
        """Allocate the declared state buffer ``name``."""
        return find(self._declared, name).allocate()

    # -- work ------------------------------------------------------------------

    def reset(self, rows: int) -> None:
        """Start a band of ``rows`` rows (at most the declared height)."""
        if rows > self.shape[0]:
            raise ValueError(f"band of {rows} rows exceeds planned {self.shape[0]}")
        self._rows = rows
        self._size = rows * int(np.prod(self.shape[1:], dtype=np.int64))
        self.added = 0
        if self._counts is not None:
            self._counts[: self._size] = 0
        self.valid_counts = None
        self._masked = False
        self._reset(self._size)

    def _reset(self, size: int) -> None:
        """Prepare state for a band of ``size`` samples."""

    def add(
        self, frame: np.ndarray, index: int, valid: np.ndarray | None = None, *, weight: float | None = None
    ) -> None:
        """Frame reducers: add band rows ``frame`` of input ``index``.

        ``valid`` (bool, the rows' shape) marks valid samples; without it,
        samples equal to the spec's nodata value are invalid. Invalid samples
        of ``frame`` may be overwritten. ``weight`` is the frame's weight in
        incremental use (:meth:`set_weight`).
        """
        if frame.shape[0] != self._rows or frame.size != self._size:
            raise ValueError(f"frame band {frame.shape} does not match band of {self._rows} rows")
        if weight is not None:
            self.set_weight(index, weight)
        flat = np.ascontiguousarray(frame).reshape(-1)
        self.added += 1
        counts = None if self._counts is None else self._counts[: self._size]
        if valid is None and self._mask is not None and self.missing.nodata is not None:
            valid = valid_mask(flat, self.missing.nodata, self._mask[: self._size])
        if valid is not None:
            vflat = np.ascontiguousarray(valid).reshape(-1)
            if counts is not None:
                np.add(counts, vflat, out=counts, casting="unsafe")
            if not vflat.all():
                self._masked = True
                self.valid_counts = counts
                self._add_masked(flat, index, vflat)
                return
        elif counts is not None:
            counts += 1
        self._add(flat, index)

    def set_weight(self, index: int, weight: float) -> None:
        """Incremental use: the weight of frame ``index``, given before the frame is added."""
        raise TypeError(f"{type(self).__name__} takes no weights")

    def _add(self, flat: np.ndarray, index: int) -> None:
        raise TypeError(f"{type(self).__name__} is fed whole cubes, not frames")

    def neutral(self) -> float:
        """The value an invalid sample is replaced with before ``_add`` (0 for sums)."""
        raise TypeError(f"{type(self).__name__} does not handle missing data")

    def _add_masked(self, flat: np.ndarray, index: int, valid: np.ndarray) -> None:
        """Add a frame with invalid samples: by default they become :meth:`neutral`, in place."""
        np.copyto(flat, flat.dtype.type(self.neutral()), where=~valid)
        self._add(flat, index)

    def counts(self) -> np.ndarray | None:
        """The band's per-sample counts of valid (kept) frames, ``(rows, width, samples)``, or None."""
        if self._counts is None:
            return None
        return self._counts[: self._size].reshape(self._rows, *self.shape[1:])

    def _fill_missing(self, flat: np.ndarray) -> None:
        """Write the nodata value where fewer than ``min_count`` frames were counted."""
        if not self.missing.active or self._counts is None:
            return
        nodata = self.missing.nodata
        assert nodata is not None
        counts = self._counts[: self._size]
        short = counts < self.missing.min_count
        if short.any():
            flat[short] = flat.dtype.type(nodata) if flat.dtype.kind == "f" else int(nodata)

    def finish(self, out: np.ndarray) -> int:
        """Frame reducers: write the band's result into ``out``; return the clipped sample count."""
        if out.size != self._size:
            raise ValueError(f"output band {out.shape} does not match band of {self._rows} rows")
        if self.spec.open_ended:
            if not self.added:
                raise ValueError("no frames added")
            self.count = self.added  # what _finish divides by and checks against
        if out.flags.c_contiguous:
            clipped = self._finish(out.reshape(-1))
            self._fill_missing(out.reshape(-1))
            return clipped
        flat = np.empty(self._size, self.out_dtype)
        clipped = self._finish(flat)
        self._fill_missing(flat)
        out[...] = flat.reshape(out.shape)
        return clipped

    def _finish(self, out: np.ndarray) -> int:
        raise TypeError(f"{type(self).__name__} is fed whole cubes, not frames")

    def reduce(self, cube: np.ndarray, out: np.ndarray, valid: np.ndarray | None = None) -> int:
        """Cube reducers: reduce ``cube`` ``(count, rows, width, samples)`` into ``out``; return clipped.

        ``valid`` (bool, the cube's shape) marks valid samples; None: computed
        from the nodata value (into the declared ``valid cube``) when there is
        one, else every sample is valid. Subclasses implement :meth:`_reduce`
        and, with a mask, write their kept-frame counts into ``valid_counts``.
        """
        if valid is None and self._mask_cube is not None and self.missing.nodata is not None:
            mask = self._mask_cube[:, : self._size].reshape(cube.shape)
            for i in range(cube.shape[0]):
                valid_mask(cube[i].reshape(-1), self.missing.nodata, mask[i].reshape(-1))
            valid = mask
        counts = None if self._counts is None else self._counts[: self._size]
        if counts is not None:
            if valid is None:
                counts[...] = cube.shape[0]
            else:
                np.sum(valid.reshape(cube.shape[0], -1), axis=0, out=counts, dtype=counts.dtype)
        self.valid_counts = counts if valid is not None else None
        clipped = self._reduce(cube, out, valid)
        if out.flags.c_contiguous:
            self._fill_missing(out.reshape(-1))
        else:
            flat = np.ascontiguousarray(out).reshape(-1)
            self._fill_missing(flat)
            out[...] = flat.reshape(out.shape)
        return clipped

    def _reduce(self, cube: np.ndarray, out: np.ndarray, valid: np.ndarray | None) -> int:
        raise TypeError(f"{type(self).__name__} is fed one frame at a time")

    # -- incremental use -------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """The exact state of the current band, as named arrays (views of the reducer's own buffers)."""
        if not self.incremental:
            raise TypeError(f"{type(self).__name__} cannot save its state")
        out = self._state()
        out["added"] = np.array(self.added, np.int64)
        return out

    def restore(self, state: Any) -> None:
        """Load a :meth:`state` back (a mapping of names to arrays, read one at a time).

        Raises
        ------
        ValueError
            An array is missing or does not have the shape and type this reducer needs.
        """
        if not self.incremental:
            raise TypeError(f"{type(self).__name__} cannot restore a state")
        self.reset(self.shape[0])
        added = int(take(state, "added", (), np.dtype(np.int64)))
        if added < 0 or added > self.spec.count:
            raise ValueError(f"{added} frames added, more than the capacity {self.spec.count}")
        self.added = added
        self._restore(state)

    def _state(self) -> dict[str, np.ndarray]:
        raise TypeError(f"{type(self).__name__} cannot save its state")

    def _restore(self, state: Any) -> None:
        raise TypeError(f"{type(self).__name__} cannot restore a state")


def take(
    state: Any, name: str, shape: tuple[int, ...], dtype: np.dtype | None = None, *, widen: bool = False
) -> np.ndarray:
    """Array ``name`` of a state mapping, checked for ``shape`` and ``dtype``.

    With ``widen``, any type that casts safely to ``dtype`` is accepted (a sum
    saved in a narrower integer type). Raises ValueError otherwise.
    """
    try:
        array = np.asarray(state[name])
    except KeyError:
        raise ValueError(f"state has no {name!r}") from None
    if array.shape != tuple(shape):
        raise ValueError(f"state {name!r} has shape {array.shape}, expected {tuple(shape)}")
    if dtype is not None and array.dtype != dtype:
        if not (widen and np.can_cast(array.dtype, dtype, "safe")):
            raise ValueError(f"state {name!r} holds {array.dtype}, expected {np.dtype(dtype)}")
    return array
