"""The cluster engine: band tasks planned within the budget, run on Dask, streamed out in row order.

A task is a band of output rows aligned to the inputs' and the output's strips
or tiles; it reads every frame of those rows (frames are never split), so its
arithmetic is the local run's and so are the bits. Each task's buffers fit
``max_memory`` on its worker; the client keeps a bounded number of tasks in
flight (earlier rows first) and its own buffers (results in flight, a whole
result for non-TIFF outputs) within ``max_memory`` too.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..buffers import Buffer, opaque, total
from ..engine import geometry_of
from ..errors import AvgstackError, ProcessingError
from ..executor import Progress, ProgressCallback, Stats
from ..planning import Plan, format_size, plan_declared
from ..reading.tiff import split_page_suffix
from ..reducers.base import ReduceSpec
from ..stack import Stack
from ..tasks import Workspace
from ..windows import Band, cover
from ..writing.sinks import OUTPUT_BANDS, Sink, TiffSink
from .connect import check_workers, scheduler_name, wait_for_workers
from .remote import RemoteStack, TaskResult, hold, run_task

__all__ = ["IN_FLIGHT_PER_THREAD", "TASKS_PER_THREAD", "ClusterEngine", "task_buffers"]

log = logging.getLogger("avgstack")

#: Tasks per worker thread at least (when the budget allows), so that workers finish together.
TASKS_PER_THREAD = 4
#: Results in flight per worker thread at most: one running, one waiting to be written.
IN_FLIGHT_PER_THREAD = 2
#: Seconds between checks that the cluster still has workers, while waiting for a result.
POLL = 5.0
#: Seconds without any worker after which the run gives up.
NO_WORKERS = 120.0


def _result_bytes(sink: Sink, rows: int, shape: tuple[int, int, int], dtype: np.dtype) -> int:
    """Bytes of one task's result as it travels: encoded strips/tiles, or rows."""
    _, w, s = shape
    if isinstance(sink, TiffSink):
        from ..writing.tiff import encoded_bytes

        return encoded_bytes(sink.options, rows, w, s, dtype.itemsize)
    return rows * w * s * dtype.itemsize


def task_buffers(stack: Stack, spec: ReduceSpec, sink: Sink, rows: int) -> list[Buffer]:
    """Every buffer one task allocates on its worker for a band of ``rows`` rows."""
    _, w, s = stack.shape
    buffers = [*Workspace.declare(spec, geometry_of(stack), rows), Buffer(OUTPUT_BANDS, (rows, w, s), spec.out_dtype)]
    if isinstance(sink, TiffSink):
        from ..writing.tiff import encode_scratch

        buffers.append(opaque("encoder", encode_scratch(sink.options, w, s, spec.out_dtype.itemsize, 1)))
        # the encoded strips/tiles, and their copy as they are serialised
        buffers.append(opaque("encoded band", _result_bytes(sink, rows, stack.shape, spec.out_dtype), copies=2))
    return buffers


def client_buffers(stack: Stack, spec: ReduceSpec, sink: Sink, rows: int, in_flight: int) -> list[Buffer]:
    """The client's buffers: the whole result for sinks that need one, and the results in flight."""
    own = sink.declare(rows, 1, False) if sink.whole else []
    size = _result_bytes(sink, rows, stack.shape, spec.out_dtype)
    return [*own, opaque("results in flight", size, copies=in_flight)]


def plan_tasks(stack: Stack, spec: ReduceSpec, sink: Sink, budget: int, threads: int) -> tuple[Plan, int]:
    """The band of each task and how many tasks are in flight, within ``budget`` on workers and client.

    Bands are as tall as the budget allows but leave :data:`TASKS_PER_THREAD`
    tasks per worker thread; whole-frame stacks take the fewest passes.
    """
    height = stack.shape[0]

    def declare(rows: int) -> list[Buffer]:
        task, client = task_buffers(stack, spec, sink, rows), client_buffers(stack, spec, sink, rows, 1)
        return task if total(task) >= total(client) else client

    if stack.streamable:
        align, prefer = sink.align, stack.segment_rows()
        cap = math.ceil(height / (TASKS_PER_THREAD * max(1, threads)))
    else:  # whole frames are decoded once per task: as few tasks as fit
        align, prefer, cap = 1, 1, height
    what = f"{spec.method} of {stack.count} frames of {stack.info.describe()} on a Dask worker"
    chosen = plan_declared(height, budget=budget, declare=declare, align=align, prefer_align=prefer,
                           max_rows=cap, what=what)
    rows = chosen.band_height
    room = budget - total(client_buffers(stack, spec, sink, rows, 0))
    in_flight = max(1, min(IN_FLIGHT_PER_THREAD * max(1, threads), room // _result_bytes(sink, rows, stack.shape,
                                                                                          spec.out_dtype)))
    task = task_buffers(stack, spec, sink, rows)
    buffers = (*task, *client_buffers(stack, spec, sink, rows, in_flight))
    plan = Plan(rows, tuple(cover(height, rows)), total(task), {b.name: b.nbytes for b in buffers}, buffers)
    return plan, in_flight


class ClusterEngine:
    """A planned job over an open stack, run as band tasks on a Dask cluster.

    Offers what :class:`~avgstack.engine.Engine` offers (``plan``, ``threads``,
    ``stats``, ``passes``, :meth:`bands`) and :meth:`chunks` for TIFF outputs,
    whose strips or tiles the workers encode.

    Parameters
    ----------
    client : distributed.Client
        A connected client.
    stack, spec, sink, budget
        As for :class:`~avgstack.engine.Engine`; ``budget`` bounds each task on
        its worker and the client's own buffers.
    """

    def __init__(self, client: Any, stack: Stack, spec: ReduceSpec, sink: Sink, budget: int) -> None:
        self.client = client
        self.stack = stack
        self.spec = spec
        self.sink = sink
        self.budget = budget
        self.scheduler = scheduler_name(client)
        self.workers = wait_for_workers(client)
        self.threads = sum(self.workers.values())
        self.remote = RemoteStack.of(stack.refs)
        paths = [split_page_suffix(r.path)[0] for r in self.remote.refs if r.path is not None]
        names = [split_page_suffix(r.path)[0] for r in stack.refs if r.path is not None]
        check_workers(client, paths, names)
        self.plan, self.in_flight = plan_tasks(stack, spec, sink, budget, self.threads)
        self.stats = Stats()
        log.info("%s", self.describe())

    def describe(self) -> str:
        """One line: where the tasks run and how many are in flight."""
        client = total(b for b in self.plan.buffers if b.name in ("results in flight", "result"))
        return (
            f"Dask scheduler {self.scheduler}: {len(self.workers)} worker(s), {self.threads} thread(s); "
            f"{len(self.plan.bands)} tasks of {self.plan.band_height} rows, {format_size(self.plan.memory)} "
            f"each, at most {self.in_flight} in flight ({format_size(client)} on this machine)"
        )

    @property
    def passes(self) -> int:
        """Times each input is decoded whole (1 for streamed stacks)."""
        return 1 if self.stack.streamable else len(self.plan.bands)

    def bands(self, target: np.ndarray | None = None, progress: ProgressCallback | None = None) -> Iterator[
        tuple[Band, np.ndarray]
    ]:
        """Yield the finished bands, top to bottom; copied into ``target`` (the whole result) when given."""
        for result in self._results(None, progress):
            assert result.rows is not None
            if target is not None:
                target[result.band.toslice()] = result.rows
                yield result.band, target[result.band.toslice()]
            else:
                yield result.band, result.rows

    def chunks(self, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """Yield the output's strips or tiles, encoded on the workers, in file order."""
        assert isinstance(self.sink, TiffSink)
        for result in self._results(self.sink.encoding(), progress):
            yield from result.chunks()

    def _results(self, encoding: Any, progress: ProgressCallback | None) -> Iterator[TaskResult]:
        client, bands = self.client, self.plan.bands
        count, token = self.stack.count, uuid.uuid4().hex[:8]
        # the inputs' descriptions as a task, not scattered data: Dask recomputes it when workers die
        remote = client.submit(hold, self.remote, key=f"avgstack-inputs-{token}", pure=False)
        geometry = geometry_of(self.stack)
        pending: deque[Any] = deque()

        def submit(k: int) -> None:
            band = bands[k]
            pending.append(client.submit(
                run_task, remote, band, self.spec, geometry, encoding,
                key=f"avgstack-rows-{band.start}-{token}", pure=False, retries=0,
            ))

        nxt = 0
        try:
            while nxt < len(bands) and len(pending) < self.in_flight:
                submit(nxt)
                nxt += 1
            for k, band in enumerate(bands):
                result = self._wait(pending.popleft(), band)
                if nxt < len(bands):
                    submit(nxt)
                    nxt += 1
                self.stats.clipped += result.clipped
                self.stats.bytes_read += result.bytes_read
                if progress is not None:
                    progress(Progress((k + 1) * count, len(bands) * count, self.stats.bytes_read, k, len(bands)))
                yield result
        finally:
            if pending:
                client.cancel(list(pending))
            pending.clear()
            remote.release()

    def _wait(self, future: Any, band: Band) -> TaskResult:
        """The task's result; a task that failed raises its error, a lost cluster a ProcessingError."""
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        rows = f"rows {band.start}-{band.stop - 1}"
        idle = 0.0
        try:
            while True:
                try:
                    result = future.result(timeout=POLL)
                    break
                except TimeoutError:
                    idle = idle + POLL if not self.client.nthreads() else 0.0
                    if idle >= NO_WORKERS:
                        raise ProcessingError(
                            f"{self.scheduler}: no Dask worker for {NO_WORKERS:.0f} s while computing {rows}; "
                            "giving up"
                        ) from None
        except AvgstackError:
            raise
        except KilledWorker as err:
            raise ProcessingError(
                f"{self.scheduler}: Dask workers died computing {rows}, as often as the scheduler allows "
                "(distributed.scheduler.allowed-failures); giving up, see the worker logs"
            ) from err
        except (FutureCancelledError, OSError) as err:
            raise ProcessingError(f"{self.scheduler}: lost the Dask cluster computing {rows} ({err})") from err
        future.release()
        return result
