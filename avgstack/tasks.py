"""The band task: read one band of rows from every input, reduce it, return the rows.

:func:`run_band` is a module-level function over picklable values
(:class:`BandTask`, made of :class:`InputRef` descriptions and a
:class:`~avgstack.reducers.base.ReduceSpec`), so worker threads, process pools
and cluster workers all run the same code and get the same bits. Statistics
(clipped samples, bytes read) come back in the :class:`BandResult`, as values.

Where the task runs, a :class:`Workspace` holds what it works with: the opened
inputs, the reducer and the buffers they were declared with. Local threads
keep one workspace each for the whole job; a remote worker opens one per task
(:meth:`Workspace.open`), reopening the inputs from their descriptions.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .buffers import Buffer, find, opaque
from .errors import ReadError
from .reducers import reducer_class
from .reducers.base import CUBE, Reducer, ReduceSpec, input_buffer_name
from .windows import Band

__all__ = ["InputRef", "BandTask", "BandResult", "Workspace", "run_band", "Cancelled"]


class Cancelled(Exception):
    """A worker noticed that the run was abandoned."""


@dataclass(frozen=True)
class InputRef:
    """A picklable description of one input: a path (with its page suffix) or an array.

    Attributes
    ----------
    index : int
        Position in the stack.
    path : str or None
        File path as given (``'scan.tif[2]'`` keeps its page).
    array : ndarray or None
        An in-memory frame (OpenCV layout), for array inputs.
    frame : int or None
        For a video's frame: its index in the video at ``path``.
    """

    index: int
    path: str | None = None
    array: np.ndarray | None = None
    frame: int | None = None

    @classmethod
    def of(cls, spec: Any, index: int) -> "InputRef":
        if isinstance(spec, np.ndarray):
            return cls(index, array=spec)
        return cls(index, path=os.fspath(spec))

    def open(self, pool: Any) -> Any:
        """Open the input from its headers (a :class:`~avgstack.reading.Source`)."""
        from .reading import open_source

        if self.frame is not None:
            from .reading.videoframes import open_video_frame

            assert self.path is not None
            return open_video_frame(self.path, self.frame)
        spec = self.array if self.array is not None else self.path
        assert spec is not None
        return open_source(spec, pool, self.index)


@dataclass(frozen=True)
class Geometry:
    """What a workspace needs to know of the stack besides its reduction."""

    height: int
    width: int
    samples: int
    streamable: bool
    scratch_bytes: int
    #: Inputs must be read in order, one at a time (video frames share one decoder): no read-ahead.
    sequential: bool = False


@dataclass(frozen=True)
class BandTask:
    """One band of work: every input's rows of ``band``, reduced by ``reduce``."""

    inputs: tuple[InputRef, ...]
    band: Band
    reduce: ReduceSpec
    geometry: Geometry


@dataclass(frozen=True)
class BandResult:
    """The finished rows of a band and what it took."""

    band: Band
    rows: np.ndarray
    clipped: int
    bytes_read: int
    #: Optional extra outputs by name: ``'counts'``, the frames kept per sample (for the count map).
    extras: dict[str, np.ndarray] | None = None


class Workspace:
    """Opened inputs, a reducer and the buffers of one worker, allocated from their declarations.

    Parameters
    ----------
    sources : sequence of Source
        The opened inputs (shared between workspaces of one process).
    spec : ReduceSpec
        The reduction.
    geometry : Geometry
        Image size and how inputs are read.
    rows : int
        Tallest band this workspace handles.
    readers : int
        Frames decoded at once (whole-frame inputs read ahead on ``pool``).
    pool : Executor, optional
        Where read-ahead decodes run.
    cancel : threading.Event, optional
        Set when the run is abandoned.
    """

    def __init__(
        self,
        sources: Sequence[Any],
        spec: ReduceSpec,
        geometry: Geometry,
        rows: int,
        *,
        readers: int = 1,
        pool: Executor | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.sources = list(sources)
        self.spec = spec
        self.geometry = geometry
        self.cancel = cancel
        self.pool = pool if readers > 1 else None
        shape = (rows, geometry.width, geometry.samples)
        self.buffers = self.declare(spec, geometry, rows, readers)
        cls = reducer_class(spec)
        self.reducer: Reducer = cls(spec, shape)
        self.kind = cls.kind
        self.input = find(self.buffers, input_buffer_name(cls.kind)).allocate() if self._reads_rows else None
        self.frames = [] if geometry.streamable else [
            find(self.buffers, "decoded frames").allocate() for _ in range(max(1, readers))
        ]
        self._opened: contextlib.ExitStack | None = None

    @property
    def _reads_rows(self) -> bool:
        return self.geometry.streamable or self.kind == CUBE

    @staticmethod
    def declare(spec: ReduceSpec, geometry: Geometry, rows: int, readers: int = 1) -> list[Buffer]:
        """Every buffer one worker needs for bands of ``rows`` rows."""
        cls = reducer_class(spec)
        shape = (rows, geometry.width, geometry.samples)
        reads_rows = geometry.streamable or cls.kind == CUBE
        buffers = cls.declare(spec, shape, inputs=reads_rows)
        if geometry.streamable:
            buffers.append(opaque("decode scratch", geometry.scratch_bytes))
        else:
            frame = (geometry.height, geometry.width, geometry.samples)
            buffers.append(Buffer("decoded frames", frame, spec.in_dtype, copies=max(1, readers)))
            buffers.append(opaque("decode scratch", geometry.scratch_bytes, copies=max(1, readers)))
        return buffers

    @classmethod
    def open(cls, task: BandTask) -> "Workspace":
        """A workspace for one task where it runs: inputs reopened from their descriptions."""
        from .reading import FilePool

        stack = contextlib.ExitStack()
        pool = stack.enter_context(FilePool())
        try:
            sources = [stack.enter_context(ref.open(pool)) for ref in task.inputs]
            g = task.geometry
            for source in sources:
                if source.info.shape != (g.height, g.width, g.samples) or source.info.dtype != task.reduce.in_dtype:
                    raise ReadError(f"{source.info.name}: changed since the job was planned")
            workspace = cls(sources, task.reduce, g, task.band.height)
        except BaseException:
            stack.close()
            raise
        workspace._opened = stack
        return workspace

    def close(self) -> None:
        """Close inputs this workspace opened itself."""
        if self._opened is not None:
            self._opened.close()

    # -- reading ---------------------------------------------------------------

    def _check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def read_frames(self, band: Band) -> Iterator[tuple[int, np.ndarray, int]]:
        """Yield ``(index, rows, bytes read)`` for every input's rows of ``band``, in order."""
        h = band.height
        if self.geometry.streamable:
            assert self.input is not None
            view = self.input[:h] if self.kind != CUBE else None
            for i, source in enumerate(self.sources):
                self._check()
                target = view if view is not None else self.input[i, :h]
                yield i, target, source.read_band(band, target)
            return
        for i, frame, nbytes in self._decoded(band):
            yield i, frame[band.toslice()], nbytes

    def _decoded(self, band: Band) -> Iterator[tuple[int, np.ndarray, int]]:
        """Whole frames, decoded in order, ``len(self.frames)`` at a time when a pool is given."""
        whole = Band(0, self.geometry.height)
        if self.pool is None:
            frame = self.frames[0]
            for i, source in enumerate(self.sources):
                self._check()
                yield i, frame, source.read_band(whole, frame)
            return
        depth = len(self.frames)
        pending: deque[Future] = deque()

        def decode(source: Any, frame: np.ndarray) -> tuple[np.ndarray, int]:
            return frame, source.read_band(whole, frame)

        def submit(i: int) -> None:
            assert self.pool is not None
            pending.append(self.pool.submit(decode, self.sources[i], self.frames[i % depth]))

        for i in range(min(depth, len(self.sources))):
            submit(i)
        try:
            for i in range(len(self.sources)):
                self._check()
                frame, nbytes = pending.popleft().result()
                yield i, frame, nbytes
                if i + depth < len(self.sources):
                    submit(i + depth)
        finally:
            for f in pending:
                f.cancel()
            for f in pending:
                with contextlib.suppress(BaseException):
                    f.result()


def run_band(
    task: BandTask,
    workspace: Workspace | None = None,
    out: np.ndarray | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    counts_out: np.ndarray | None = None,
) -> BandResult:
    """Read ``task.band`` of every input, reduce it and return the finished rows.

    Parameters
    ----------
    task : BandTask
        What to compute.
    workspace : Workspace, optional
        Opened inputs and buffers to reuse; without one, the inputs are
        reopened here and the buffers allocated for this band (a remote worker).
    out : ndarray, optional
        Where to write the ``(rows, width, samples)`` result; a new array if None.
    on_frame : callable, optional
        Called with ``(index, bytes read)`` after each input is added.
    counts_out : ndarray, optional
        Where to write the per-sample counts of kept frames (the spec must ask for ``counts``).
    """
    own = workspace is None
    ws = Workspace.open(task) if workspace is None else workspace
    try:
        band, g = task.band, task.geometry
        if out is None:
            out = np.empty((band.height, g.width, g.samples), task.reduce.out_dtype)
        reducer = ws.reducer
        reducer.reset(band.height)
        total = 0
        if ws.kind == CUBE:
            for i, rows, nbytes in ws.read_frames(band):
                if not g.streamable:
                    assert ws.input is not None
                    ws.input[i, : band.height] = rows
                total += nbytes
                if on_frame is not None:
                    on_frame(i, nbytes)
            assert ws.input is not None
            clipped = reducer.reduce(ws.input[:, : band.height], out)
        else:
            for i, rows, nbytes in ws.read_frames(band):
                reducer.add(rows, i)
                total += nbytes
                if on_frame is not None:
                    on_frame(i, nbytes)
            clipped = reducer.finish(out)
        extras = None
        counts = reducer.counts()
        if counts is not None:
            if counts_out is not None:
                counts_out[...] = counts[..., : counts_out.shape[2]]
            extras = {"counts": counts_out if counts_out is not None else counts.copy()}
        return BandResult(band, out, clipped, total, extras)
    finally:
        if own:
            ws.close()
