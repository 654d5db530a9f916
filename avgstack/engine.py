"""The engine: a stack, a reduction and a sink planned together within a budget, then run.

:func:`declare` lists every buffer a job allocates for a band height and a
thread count, from the declarations of its parts (the reducer and its input
rows, the readers' decode scratch, the sink and its encoder); :func:`plan`
picks the thread count and the tallest band whose declarations fit the
budget; :class:`Engine` runs the plan with the local executor, allocating
from the same declarations.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterator

import numpy as np

from .buffers import Buffer, total
from .errors import BudgetError, UsageError
from .executor import Progress, ProgressCallback, Stats, readers, run_bands, worker_rows
from .options import DTYPES, check_weights, parse_dtype
from .planning import Plan, format_size, plan_declared
from .reducers.base import ReduceSpec
from .stack import Stack, stack_inputs
from .tasks import Geometry, Workspace
from .windows import Band
from .writing.sinks import Layout, Sink

__all__ = [
    "Engine", "Progress", "ProgressCallback", "Stats", "declare", "plan", "reduce_spec", "layout_of",
    "DTYPES", "parse_dtype", "check_weights", "stack_inputs", "peak_rss", "clock", "TARGET_BAND_BYTES",
]

log = logging.getLogger(__name__)

#: Working-set target of one band per thread (accumulator + input + output rows): small
#: bands stay in the CPU caches while every input is added to them.
TARGET_BAND_BYTES = 8 * 2**20


def reduce_spec(stack: Stack, weights: tuple[float, ...] | None, method: str = "mean", **params) -> ReduceSpec:
    """The reduction of a job over ``stack``."""
    name = "weighted" if weights is not None and method in ("mean", "sum") else method
    if stack.info.photometric == "cielab" and stack.shape[2] >= 3:
        from .reading.lab import offset_of

        if method in ("std", "var"):
            raise UsageError(
                f"method {method} of CIELab images is not supported: a* and b* are written back as CIELab "
                "samples, which cannot hold a spread; convert to another colour space first"
            )
        params.setdefault("signed_offset", offset_of(stack.in_dtype))  # a*/b* are read offset (reading/lab.py)
    return ReduceSpec(
        name, stack.count, stack.in_dtype, stack.out_dtype, weights, stack.out_bits,
        tuple(sorted(params.items())),
    )


def layout_of(stack: Stack) -> Layout:
    """What a sink receives from ``stack``."""
    return Layout(
        stack.shape, stack.out_dtype, stack.info.photometric, stack.extrasamples, stack.out_bits,
        stack.carried_metadata,
    )


def geometry_of(stack: Stack) -> Geometry:
    """How the stack's inputs are read."""
    h, w, s = stack.shape
    return Geometry(h, w, s, stack.streamable, stack.scratch_bytes(), stack.has_video)


def declare(stack: Stack, spec: ReduceSpec, sink: Sink, rows: int, threads: int) -> list[Buffer]:
    """Every buffer the job allocates for bands of ``rows`` rows on ``threads`` threads."""
    geometry = geometry_of(stack)
    overlapped = geometry.streamable and threads > 1
    if overlapped:
        workers, part = worker_rows(rows, threads, stack.segment_rows()) if rows else (threads, 0)
        buffers = [b.times(workers) for b in Workspace.declare(spec, geometry, part)]
    else:
        buffers = Workspace.declare(spec, geometry, rows, readers=readers(geometry, threads, stack.count))
    if spec.param("counts"):  # a count map: its band buffers, like the output's
        from .countmap import count_band_buffers

        h, w, s = stack.shape
        shape = (h, w, 1 if spec.param("alpha") else s)  # alpha coverage: one count per pixel
        buffers += count_band_buffers(shape, spec.count, rows, overlapped)
    return [*buffers, *sink.declare(rows, threads, overlapped)]


def plan(stack: Stack, spec: ReduceSpec, sink: Sink, budget: int, threads: int) -> tuple[Plan, int]:
    """The tallest bands and the most threads (up to ``threads``) whose buffers fit ``budget``.

    Raises
    ------
    BudgetError
        If even one band on one thread does not fit, with the memory needed.
    """
    height = stack.shape[0]
    what = f"{spec.method} of {stack.count} frames of {stack.info.describe()}"

    def attempt(n: int) -> Plan:
        if stack.streamable:
            prefer = stack.segment_rows()
            row_bytes = max(1, total(declare(stack, spec, sink, 2, 1)) - total(declare(stack, spec, sink, 1, 1)))
            per_thread = max(prefer, TARGET_BAND_BYTES // row_bytes)
            align, max_rows = sink.align, per_thread * n
        else:  # whole frames are decoded once per band: as few bands (passes) as fit
            prefer, align, max_rows = 1, 1, height
        return plan_declared(
            height, budget=budget, declare=lambda rows: declare(stack, spec, sink, rows, n),
            align=align, prefer_align=prefer, max_rows=max_rows, what=what,
        )

    try:
        first = attempt(1)
    except BudgetError as err:
        raise _explain(stack, spec, budget, err) from None
    if stack.has_video:
        return first, 1  # a video's frames are decoded in order by one decoder: no read-ahead to share
    if not stack.streamable:
        # every pass decodes every frame again: pick the thread count with the least decoding per thread
        best, best_n, best_cost = first, 1, len(first.bands) * stack.count
        for n in range(2, min(threads, stack.count) + 1):
            try:
                candidate = attempt(n)
            except BudgetError:
                break
            cost = len(candidate.bands) * math.ceil(stack.count / n)
            if cost < best_cost:
                best, best_n, best_cost = candidate, n, cost
        return best, best_n
    # the most threads that fit: more threads never need less memory, so bisect
    lo, hi, best = 1, max(1, threads), first
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            best_mid = attempt(mid)
        except BudgetError:
            hi = mid - 1
            continue
        lo, best = mid, best_mid
    if lo < threads:
        log.debug("using %d of %d threads to stay within %s", lo, threads, format_size(budget))
    return best, lo


def _explain(stack: Stack, spec: ReduceSpec, budget: int, err: BudgetError) -> BudgetError:
    if stack.has_video:
        video = next(i for i in stack.infos if i.format == "video")
        return BudgetError(
            f"{video.name.rsplit(' frame ', 1)[0]}: a video's frames are decoded whole, one at a time, and "
            f"{spec.method} holds the rows of all {stack.count} frames of a band: {err.needed_text} are needed "
            f"for one row of every frame and one decoded frame, but the budget is {format_size(budget)}; "
            "raise max_memory (--max-memory) or use fewer frames (--sample, --frames)"
        )
    if not stack.streamable:
        whole = next(i for i in stack.infos if not i.streamable)
        return BudgetError(
            f"{whole.name}: {whole.format.upper()} images are decoded whole, one frame at a time, and "
            f"{err.needed_text} are needed for this stack but the budget is {format_size(budget)}; "
            "raise max_memory (--max-memory), or convert the stack to tiled or striped TIFF, which streams in bands"
        )
    worst = max(stack.infos, key=lambda i: i.scratch_bytes)
    if worst.scratch_bytes > budget // 2:
        return BudgetError(
            f"{worst.name}: one strip or tile decodes to {format_size(worst.scratch_bytes)}, "
            f"more than the budget of {format_size(budget)} allows; raise max_memory (--max-memory) "
            "or re-save it tiled (e.g. 256x256 tiles)"
        )
    return err


class Engine:
    """A planned job over an open stack: run it into a sink or a whole array.

    Parameters
    ----------
    stack : Stack
        The open inputs.
    spec : ReduceSpec
        What to compute.
    sink : Sink
        Where the result goes.
    budget : int
        Bytes for buffers.
    threads : int
        Worker threads asked for (fewer are used if their buffers do not fit).
    """

    def __init__(self, stack: Stack, spec: ReduceSpec, sink: Sink, budget: int, threads: int) -> None:
        self.stack = stack
        self.spec = spec
        self.sink = sink
        self.budget = budget
        self.plan, self.threads = plan(stack, spec, sink, budget, threads)
        self.stats = Stats()

    @property
    def passes(self) -> int:
        """Times each input is decoded whole (1 for streamed stacks)."""
        return 1 if self.stack.streamable else len(self.plan.bands)

    def bands(
        self, target: np.ndarray | None = None, progress: ProgressCallback | None = None,
        on_counts: Callable[[Band, np.ndarray], None] | None = None,
    ) -> Iterator[tuple[Band, np.ndarray]]:
        """Yield the finished bands; into ``target`` (the whole result) when given; counts to ``on_counts``."""
        stack = self.stack
        return run_bands(
            stack.sources, stack.refs, self.spec, geometry_of(stack), self.plan,
            threads=self.threads, unit=stack.segment_rows(), target=target, progress=progress, stats=self.stats,
            on_counts=on_counts,
        )


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (0 where unknown)."""
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):  # pragma: no cover
        return 0


def clock() -> float:
    """Monotonic seconds, for reports."""
    return time.perf_counter()
