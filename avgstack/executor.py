"""The local executor: band tasks on worker threads, finished bands out in order.

Streamed (TIFF) stacks are split by rows: each band is cut into one part per
worker, every worker runs :func:`~avgstack.tasks.run_band` on its part with its
own :class:`~avgstack.tasks.Workspace`, and the next band is computed while
the caller writes this one. Whole-frame stacks run one task per pass, with the
frames decoded ahead on the worker threads. Every buffer comes from the plan's
declarations.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .buffers import find
from .planning import Plan
from .reducers.base import ReduceSpec
from .tasks import BandTask, Geometry, Workspace, run_band
from .windows import Band

__all__ = ["Progress", "ProgressCallback", "Stats", "split_rows", "worker_rows", "readers", "run_bands"]


@dataclass(frozen=True)
class Progress:
    """What the engine reports as work advances.

    Attributes
    ----------
    done, total : int
        Steps done and planned; one step is one band of one input.
    bytes_read : int
        Bytes read from storage so far.
    band : int
        Index of the current band.
    bands : int
        Number of bands.
    """

    done: int
    total: int
    bytes_read: int
    band: int
    bands: int


ProgressCallback = Callable[[Progress], None]


@dataclass
class Stats:
    """Totals of the band results, summed as they arrive."""

    clipped: int = 0
    bytes_read: int = 0
    extra: dict = field(default_factory=dict)


def split_rows(band: Band, parts: int, unit: int) -> list[Band]:
    """Split ``band`` into at most ``parts`` consecutive bands of whole ``unit``-row groups."""
    units = math.ceil(band.height / unit)
    per = math.ceil(units / max(1, parts)) * unit
    return [Band(start, min(per, band.stop - start)) for start in range(band.start, band.stop, per)]


def worker_rows(rows: int, threads: int, unit: int) -> tuple[int, int]:
    """``(workers, rows per worker)`` for bands of ``rows`` rows split by rows over ``threads``."""
    parts = split_rows(Band(0, rows), threads, unit)
    return len(parts), max(p.height for p in parts)


def readers(geometry: Geometry, threads: int, count: int) -> int:
    """Frames decoded at once: whole-frame stacks read ahead on every thread, streamed ones read in place."""
    return 1 if geometry.streamable or geometry.sequential else max(1, min(threads, count))


def run_bands(
    sources: list,
    refs: tuple,
    spec: ReduceSpec,
    geometry: Geometry,
    plan: Plan,
    *,
    threads: int,
    unit: int,
    target: np.ndarray | None = None,
    progress: ProgressCallback | None = None,
    stats: Stats | None = None,
    on_counts: Callable[[Band, np.ndarray], None] | None = None,
) -> Iterator[tuple[Band, np.ndarray]]:
    """Yield ``(band, rows)`` for every band of ``plan``, top to bottom.

    Rows are written into ``target`` (the whole result) when given, else into
    the plan's output band buffers, each reused two bands later. With
    ``on_counts``, each band's per-sample counts (gathered in the plan's
    ``count bands``) are handed to it before the band is yielded.
    """
    stats = stats if stats is not None else Stats()
    counts = _count_bands(plan) if on_counts is not None else []
    if geometry.streamable and threads > 1:
        yield from _by_rows(sources, refs, spec, geometry, plan, threads, unit, target, progress, stats,
                            counts, on_counts)
    else:
        yield from _by_band(sources, refs, spec, geometry, plan, threads, target, progress, stats,
                            counts, on_counts)


def _count_bands(plan: Plan) -> list[np.ndarray]:
    from .countmap import COUNT_BANDS

    declared = find(plan.buffers, COUNT_BANDS)
    return [declared.allocate() for _ in range(declared.copies)]


def _outputs(plan: Plan, target: np.ndarray | None) -> list[np.ndarray]:
    if target is not None:
        return []
    declared = find(plan.buffers, "output bands")
    return [declared.allocate() for _ in range(declared.copies)]


def _by_rows(sources, refs, spec, geometry, plan, threads, unit, target, progress, stats, counts, on_counts):
    workers, rows = worker_rows(plan.band_height, threads, unit)
    cancel = threading.Event()
    spaces = [Workspace(sources, spec, geometry, rows, cancel=cancel) for _ in range(workers)]
    outs = _outputs(plan, target)
    count = len(sources)

    def submit(k: int) -> tuple[np.ndarray, np.ndarray | None, list[Future]]:
        band = plan.bands[k]
        rows_out = target[band.toslice()] if target is not None else outs[k % len(outs)][: band.height]
        counts_out = counts[k % len(counts)][: band.height] if counts else None
        futures = []
        for j, part in enumerate(split_rows(band, workers, unit)):
            task = BandTask(refs, part, spec, geometry)
            view = rows_out[part.start - band.start : part.stop - band.start]
            cview = None if counts_out is None else counts_out[part.start - band.start : part.stop - band.start]
            futures.append(executor.submit(run_band, task, spaces[j], view, None, cview))
        return rows_out, counts_out, futures

    executor = ThreadPoolExecutor(workers, thread_name_prefix="avgstack")
    try:
        pending = submit(0)
        for k, band in enumerate(plan.bands):
            rows_out, counts_out, futures = pending
            for f in futures:
                result = f.result()
                stats.bytes_read += result.bytes_read
                stats.clipped += result.clipped
            if on_counts is not None and counts_out is not None:
                on_counts(band, counts_out)
            if k + 1 < len(plan.bands):
                pending = submit(k + 1)  # computed while the caller writes this band
            if progress is not None:
                progress(Progress((k + 1) * count, len(plan.bands) * count, stats.bytes_read, k, len(plan.bands)))
            yield band, rows_out
    finally:
        cancel.set()
        executor.shutdown(wait=True, cancel_futures=True)


def _by_band(sources, refs, spec, geometry, plan, threads, target, progress, stats, counts, on_counts):
    n = readers(geometry, threads, len(sources))
    pool = ThreadPoolExecutor(n, thread_name_prefix="avgstack-read") if n > 1 else None
    try:
        space = Workspace(sources, spec, geometry, plan.band_height, readers=n, pool=pool)
        outs = _outputs(plan, target)
        count = len(sources)
        total = len(plan.bands) * count
        for k, band in enumerate(plan.bands):
            rows_out = target[band.toslice()] if target is not None else outs[0][: band.height]
            done = k * count

            def on_frame(i: int, nbytes: int, k: int = k, done: int = done) -> None:
                stats.bytes_read += nbytes
                if progress is not None:
                    progress(Progress(done + i + 1, total, stats.bytes_read, k, len(plan.bands)))

            counts_out = counts[0][: band.height] if counts else None
            result = run_band(BandTask(refs, band, spec, geometry), space, rows_out, on_frame, counts_out)
            stats.clipped += result.clipped
            if on_counts is not None and counts_out is not None:
                on_counts(band, counts_out)
            yield band, rows_out
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
