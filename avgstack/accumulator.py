"""Push-style averaging for OpenCV code: add frames one at a time, take the result, save and resume.

>>> import numpy as np, avgstack
>>> acc = avgstack.Accumulator()
>>> acc.add(np.zeros((2, 2, 3), np.uint8)); acc.add(np.full((2, 2, 3), 3, np.uint8))
>>> acc.result()[0, 0].tolist(), acc.count
([2, 2, 2], 2)

The accumulator is a reducer of :mod:`avgstack.reducers` over one band as tall
as the frame, fed through the incremental part of the reducer contract
(open-ended count, per-frame weights, ``state()``/``restore()``), so its result
equals :func:`avgstack.average` over the same frames bit for bit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

import numpy as np

from .buffers import Buffer, total
from .errors import AvgstackError, BudgetError, InputError, UsageError
from .methods import default_dtype
from .options import parse_dtype
from .planning import DEFAULT_MAX_MEMORY, format_size, parse_size
from .reading.arrays import ArraySource
from .reducers import METHODS, reducer_class
from .reducers.base import Reducer, ReduceSpec
from .stack import check_compatible

__all__ = ["Accumulator", "incremental_methods", "FIRST_CAPACITY", "GROWTH"]

log = logging.getLogger("avgstack")

#: Frames the first state is sized for; it grows by :data:`GROWTH` times when more arrive.
FIRST_CAPACITY = 256
GROWTH = 256


def _reducer_for(method: str, weighted: bool, in_dtype: np.dtype, out_dtype: np.dtype, params: dict) -> type[Reducer]:
    spec = _spec(method, weighted, in_dtype, out_dtype, params, 1)
    return reducer_class(spec)


def _spec(method: str, weighted: bool, in_dtype: Any, out_dtype: Any, params: dict, capacity: int) -> ReduceSpec:
    name = "weighted" if weighted and method == "mean" else method
    return ReduceSpec(
        name, capacity, np.dtype(in_dtype), np.dtype(out_dtype), () if weighted else None, None,
        tuple(sorted(params.items())), open_ended=True,
    )


def incremental_methods(in_dtype: Any = np.uint8) -> list[str]:
    """Methods of :data:`avgstack.reducers.METHODS` whose reducer supports incremental use (for ``in_dtype``)."""
    out = []
    for method in METHODS:
        try:
            cls = _reducer_for(method, method == "weighted", np.dtype(in_dtype), np.dtype(in_dtype), {})
        except (ValueError, TypeError):
            continue
        if cls.incremental:
            out.append(method)
    return out


class Accumulator:
    """Reduce frames given one at a time (a camera loop, ``cv2.VideoCapture``, a generator).

    Parameters
    ----------
    method : str
        What to compute: ``'mean'`` (weighted sum when frames come with
        weights), ``'weighted'``, or another method of
        :data:`avgstack.reducers.METHODS` whose reducer supports incremental use.
    dtype : str or numpy dtype, optional
        Output sample type; default: the frames'.
    max_memory : int or str, optional
        Budget for the state, one frame copy and the result (``'512MiB'``).
    **params
        Method parameters.

    Frames are numpy arrays in OpenCV's layout (2-D gray, BGR, BGRA); the
    first fixes shape and type, and a frame that differs raises
    :class:`~avgstack.IncompatibleInputsError`. The caller's arrays are never
    modified.
    """

    def __init__(
        self, method: str = "mean", dtype: Any = None, max_memory: int | str | None = None, **params: Any
    ) -> None:
        if method not in METHODS:
            raise UsageError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        self.method = method
        self.dtype = parse_dtype(dtype)
        self.budget = DEFAULT_MAX_MEMORY if max_memory is None else parse_size(max_memory)
        self.params = dict(params)
        #: Frames added so far.
        self.count = 0
        #: Samples saturated to the output range by the last :meth:`result`.
        self.clipped = 0
        self._reducer: Reducer | None = None
        self._first: Any = None  # ImageInfo of the first frame
        self._gray = False
        self._weighted: bool | None = True if method == "weighted" else None
        self._frame: np.ndarray | None = None  # copy of a frame that is not contiguous or native
        self._caller_frames = 0  # frames the caller holds meanwhile, counted in the budget (iterables)

    # -- what it holds ----------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Frame shape as given (``(rows, cols)`` or ``(rows, cols, channels)``), once a frame was added."""
        if self._first is None:
            return None
        h, w, c = self._first.shape
        return (h, w) if self._gray else (h, w, c)

    @property
    def in_dtype(self) -> np.dtype | None:
        """Sample type of the frames, once a frame was added."""
        return None if self._first is None else self._first.dtype

    @property
    def out_dtype(self) -> np.dtype | None:
        """Sample type of the result, once a frame was added."""
        return None if self._first is None else (self.dtype or default_dtype(self.method, self._first.dtype))

    def declare(self) -> list[Buffer]:
        """Buffers the accumulator holds: the reducer's state, one frame copy and the result."""
        if self._reducer is None:
            return []
        return self._declare(self._reducer.spec)

    def _declare(self, spec: ReduceSpec) -> list[Buffer]:
        assert self._first is not None
        shape = self._first.shape
        cls = reducer_class(spec)
        declared = [*cls.declare(spec, shape, inputs=True), Buffer("result", shape, spec.out_dtype)]
        if self._caller_frames:
            declared.append(Buffer("caller's frames", shape, spec.in_dtype, self._caller_frames, owned=False))
        return declared

    # -- adding -----------------------------------------------------------------

    def add(self, frame: np.ndarray, weight: float | None = None) -> None:
        """Add one frame (OpenCV layout), with its ``weight`` for a weighted sum.

        Raises
        ------
        IncompatibleInputsError
            The frame's shape or type differs from the first frame's.
        UsageError
            Weights given for some frames and not others, or not finite.
        BudgetError
            The state does not fit ``max_memory``.
        """
        name = f"frame #{self.count}"
        if not isinstance(frame, np.ndarray):
            raise UsageError(f"{name}: expected a numpy array, got {type(frame).__name__}")
        info = ArraySource(frame, name).info
        weighted = weight is not None
        if self._weighted is None:
            self._weighted = weighted
        elif weighted != self._weighted:
            raise UsageError(f"{name}: give a weight with every frame or with none")
        if weighted:
            weight = float(weight)  # type: ignore[arg-type]
            if not np.isfinite(weight):
                raise UsageError(f"{name}: weight must be a finite number, got {weight}")
        if self._first is None:
            self._start(info, frame.ndim == 2)
        else:
            check_compatible([self._first, info])
        assert self._reducer is not None
        if self.count >= self._reducer.spec.count:
            self._grow()
        flat = frame if frame.ndim == 3 else frame[:, :, None]
        if not (flat.flags.c_contiguous and flat.dtype.isnative):
            assert self._frame is not None
            self._frame[...] = flat
            flat = self._frame
        self._reducer.add(flat, self.count, weight=weight)
        self.count += 1

    def _start(self, info: Any, gray: bool) -> None:
        self._first, self._gray = info, gray
        out_dtype = self.dtype or default_dtype(self.method, info.dtype)  # std/var: float
        spec = _spec(self.method, bool(self._weighted), info.dtype, out_dtype, self.params, FIRST_CAPACITY)
        self._reducer = self._build(spec)

    def _build(self, spec: ReduceSpec, also: int = 0) -> Reducer:
        """A reducer for the whole frame; ``also`` bytes are held besides it meanwhile (a state being copied)."""
        assert self._first is not None
        cls = reducer_class(spec)
        if not cls.incremental:
            raise UsageError(
                f"method {self.method!r} cannot be computed frame by frame with an Accumulator "
                f"(methods that can: {', '.join(incremental_methods(spec.in_dtype)) or 'none'}); "
                "use avgstack.average() over a list of frames"
            )
        declared = self._declare(spec)
        needed = total(declared) + also
        if needed > self.budget:
            h, w, c = self._first.shape
            raise BudgetError(
                f"an Accumulator for {spec.method} of {w}x{h}x{c} {spec.in_dtype} frames needs "
                f"{format_size(needed)} but max_memory is {format_size(self.budget)}; raise max_memory"
            )
        reducer = cls(spec, self._first.shape)
        reducer.reset(self._first.shape[0])
        if self._frame is None:
            self._frame = Buffer("frame copy", self._first.shape, spec.in_dtype).allocate()
        return reducer

    def _grow(self) -> None:
        """Re-size the state for more frames (wider integer sums), copying it exactly."""
        old = self._reducer
        assert old is not None
        spec = old.spec
        capacity = spec.count * GROWTH
        log.debug("accumulator: %d frames, state re-sized for %d", self.count, capacity)
        new = self._build(replace(spec, count=capacity), also=total(type(old).state_buffers(spec, old.shape)))
        new.restore(old.state())
        self._reducer = new

    # -- results ----------------------------------------------------------------

    def result(self) -> np.ndarray:
        """The result so far, in the frames' layout; more frames may be added afterwards."""
        if self._reducer is None or self.count == 0:
            raise UsageError("no frames added yet")
        assert self._first is not None
        out = Buffer("result", self._first.shape, self._reducer.spec.out_dtype).allocate()
        self.clipped = self._reducer.finish(out)
        if self.clipped:
            log.warning("%d samples were clipped to the %s range", self.clipped, out.dtype.name)
        return out[:, :, 0] if self._gray else out

    # -- save and resume --------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        assert self._reducer is not None and self._first is not None
        spec = self._reducer.spec
        return {
            "method": self.method,
            "weighted": bool(self._weighted),
            "params": self.params,
            "in_dtype": spec.in_dtype.name,
            "out_dtype": spec.out_dtype.name,
            "dtype": None if self.dtype is None else self.dtype.name,
            "shape": list(self._first.shape),
            "gray": self._gray,
            "count": self.count,
            "capacity": spec.count,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the exact state to ``path`` atomically (a temporary file beside it, renamed on success)."""
        from .writing.atomic import atomic_output

        with atomic_output(os.fspath(path)) as fh:
            self.write(fh)

    def write(self, fh: Any) -> None:
        """Write the exact state to the open binary file ``fh`` (see :mod:`avgstack.statefile`)."""
        from .statefile import write_state

        if self._reducer is None:
            raise UsageError("no frames added yet: nothing to save")
        write_state(fh, self._meta(), self._reducer.state())

    @classmethod
    def load(cls, path: str | os.PathLike[str], max_memory: int | str | None = None) -> "Accumulator":
        """An accumulator restored from a state file written by :meth:`save`.

        Raises
        ------
        InputError
            Missing file, not a state file, another format version, or damaged.
        BudgetError
            The state does not fit ``max_memory``.
        """
        from .statefile import StateFile

        name = os.fspath(path)
        if not os.path.isfile(name):
            raise InputError(f"{name}: no such state file")
        with StateFile(name) as state:
            meta = state.meta
            try:
                acc = cls(meta["method"], meta["dtype"], max_memory, **dict(meta["params"]))
                acc._weighted = bool(meta["weighted"])
                h, w, c = (int(n) for n in meta["shape"])
                gray = bool(meta["gray"])
                count, capacity = int(meta["count"]), int(meta["capacity"])
                in_dtype = np.dtype(meta["in_dtype"])
                if min(h, w, c) < 1 or (gray and c != 1) or not 0 < count <= capacity:
                    raise ValueError(f"shape {h}x{w}x{c}, {count} frames of {capacity}")
                probe = np.empty((1, 1, c), in_dtype)
                info = ArraySource(probe, name).info
                acc._first, acc._gray = replace(info, height=h, width=w), gray
                spec = _spec(acc.method, acc._weighted, in_dtype, meta["out_dtype"], acc.params, capacity)
                acc._reducer = acc._build(spec, also=state.largest())
                acc._reducer.restore(state)
                if acc._reducer.added != count:
                    raise ValueError(f"state holds {acc._reducer.added} frames, meta says {count}")
                acc.count = count
            except AvgstackError:
                raise
            except (KeyError, TypeError, ValueError) as err:
                raise InputError(f"{name}: damaged avgstack state file ({err})") from err
        return acc

    def describe(self) -> str:
        """One line: method, frames, shape and types."""
        if self._first is None:
            return f"{self.method}: no frames"
        h, w, c = self._first.shape
        return f"{self.method} of {self.count} frames of {w}x{h}x{c} {self.in_dtype} into {self.out_dtype}"

