"""The streaming engine: open a stack, check it, plan bands, and produce the result band by band.

:class:`Stack` owns every open input (one :class:`contextlib.ExitStack`),
validates the stack from headers before any pixel is read, asks
:mod:`.planning` for bands that fit the budget, and yields finished bands of
the result. Writers and the public API consume those bands.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from .arithmetic import ARITHMETIC_SCRATCH, accumulator_bytes_per_sample, make_accumulator
from .errors import BudgetError, IncompatibleInputsError, UsageError
from .planning import Plan, format_size, plan_bands
from .reading import ALPHA_KINDS, FilePool, ImageInfo, InputSpec, Source, open_source
from .windows import Band

__all__ = ["Stack", "Progress", "ProgressCallback", "parse_dtype", "DTYPES", "check_weights", "stack_inputs"]

log = logging.getLogger(__name__)

#: Output types accepted by ``dtype=`` / ``--dtype``.
DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64")

#: Working-set target of one band (accumulator + input + output rows): small
#: bands stay in the CPU caches while every input is added to them.
TARGET_BAND_BYTES = 8 * 2**20


@dataclass(frozen=True)
class Progress:
    """What the engine reports after each input band is added.

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


def parse_dtype(dtype: str | np.dtype | type | None) -> np.dtype | None:
    """Validate an output dtype name (``'uint8'``, ``np.float32``, ...)."""
    if dtype is None:
        return None
    try:
        parsed = np.dtype(dtype)
    except TypeError:
        parsed = None
    if parsed is None or parsed.name not in DTYPES:
        raise UsageError(f"unsupported output dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return parsed


def check_weights(weights: Sequence[float] | None, count: int) -> list[float] | None:
    """Validate weights: one finite number per input."""
    if weights is None:
        return None
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise UsageError(f"weights must be numbers, got {list(weights)!r}") from None
    if len(values) != count:
        raise UsageError(f"{len(values)} weight(s) given for {count} input(s); give one weight per input")
    bad = [w for w in values if not np.isfinite(w)]
    if bad:
        raise UsageError(f"weights must be finite numbers, got {bad[0]}")
    return values


def _alpha_kind(info: ImageInfo) -> tuple[int, ...]:
    return tuple(info.extrasamples)


def _check_compatible(infos: Sequence[ImageInfo]) -> None:
    first = infos[0]
    for info in infos[1:]:
        if info.shape != first.shape:
            raise IncompatibleInputsError(
                f"{info.name}: is {info.width}x{info.height} with {info.samples} channel(s), "
                f"expected {first.width}x{first.height} with {first.samples} like {first.name}"
            )
        if info.dtype != first.dtype or info.bits != first.bits:
            raise IncompatibleInputsError(
                f"{info.name}: has {info.describe()} samples, expected {first.describe()} like {first.name}"
            )
        if info.photometric != first.photometric:
            raise IncompatibleInputsError(
                f"{info.name}: colour is {info.photometric}, expected {first.photometric} like {first.name}"
            )
        for a, b in zip(info.extrasamples, first.extrasamples):
            if a and b and a != b:
                raise IncompatibleInputsError(
                    f"{info.name}: has {ALPHA_KINDS.get(a, a)}, expected {ALPHA_KINDS.get(b, b)} like {first.name}"
                )
        o1, o2 = info.metadata.get("orientation", 1), first.metadata.get("orientation", 1)
        if o1 != o2:
            raise IncompatibleInputsError(
                f"{info.name}: orientation tag is {o1}, expected {o2} like {first.name}"
            )


class Stack:
    """A stack of inputs opened from their headers, ready to be averaged.

    Use as a context manager; every source and descriptor is released on exit.

    Parameters
    ----------
    inputs : sequence of str, path-like or ndarray
        The frames. Arrays are in OpenCV's layout.
    weights : sequence of float, optional
        One per input; None for the plain mean.
    dtype : str or numpy dtype, optional
        Output sample type; defaults to the inputs'.
    """

    def __init__(
        self,
        inputs: Sequence[InputSpec],
        weights: Sequence[float] | None = None,
        dtype: str | np.dtype | None = None,
    ) -> None:
        inputs = stack_inputs(inputs)
        if not inputs:
            raise UsageError("no inputs given")
        self.weights = check_weights(weights, len(inputs))
        out_dtype = parse_dtype(dtype)
        self._exit = contextlib.ExitStack()
        self.pool = self._exit.enter_context(FilePool())
        try:
            self.sources: list[Source] = []
            for i, spec in enumerate(inputs):
                self.sources.append(self._exit.enter_context(open_source(spec, self.pool, i)))
            self.infos = [s.info for s in self.sources]
            _check_compatible(self.infos)
        except BaseException:
            self._exit.close()
            raise
        first = self.infos[0]
        # colour meaning comes from the first input that states it (TIFF over PNG and arrays)
        described = next((i for i in self.infos if i.format == "tiff"), first)
        self.info = described
        self.in_dtype = first.dtype
        self.out_dtype = out_dtype or first.dtype
        self.out_bits = first.bits if self.out_dtype == first.dtype else None
        self.extrasamples = tuple(
            max((i.extrasamples[k] if k < len(i.extrasamples) else 0) for i in self.infos)
            for k in range(len(described.extrasamples))
        )
        self.shape = first.shape
        self.streamable = all(i.streamable for i in self.infos)

    # -- context management ----------------------------------------------------

    def close(self) -> None:
        """Release every input."""
        self._exit.close()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def count(self) -> int:
        """Number of frames."""
        return len(self.sources)

    # -- planning --------------------------------------------------------------

    def plan(
        self,
        budget: int,
        *,
        threads: int = 1,
        output_rows: int = 1,
        output_fixed: Mapping[str, int] | None = None,
        output_band: bool = True,
        max_rows: int | None = None,
    ) -> tuple[Plan, int]:
        """Size bands for ``budget`` bytes, reducing threads before giving up.

        Parameters
        ----------
        budget : int
            Bytes for pixel buffers.
        threads : int
            Worker threads (fewer are used if their buffers do not fit).
        output_rows : int
            Bands must be a multiple of this many rows (output strip/tile).
        output_fixed : mapping, optional
            Fixed buffers of the writer (encoder scratch, whole result).
        output_band : bool
            Whether a band-sized output buffer is needed (False when the
            engine writes into a caller's whole-image array).
        max_rows : int, optional
            Cap on band height; defaults to a cache-friendly size.

        Returns
        -------
        (Plan, int)
            The plan and the number of threads it allows.
        """
        height, width, samples = self.shape
        row_samples = width * samples
        prefer = self.segment_rows()
        in_row = row_samples * self.in_dtype.itemsize
        acc_row = row_samples * accumulator_bytes_per_sample(self.in_dtype, self.count, self.weights, self.out_dtype)
        out_row = row_samples * self.out_dtype.itemsize if output_band else 0
        if max_rows is None:
            # a cache-sized band per thread, tall enough to hold whole input strips or tiles
            per_thread = max(int(prefer), TARGET_BAND_BYTES // max(1, acc_row + in_row + out_row))
            max_rows = per_thread * max(1, threads)
        if not self.streamable:
            max_rows, prefer, output_rows = height, 1, 1
        scratch = max(i.scratch_bytes for i in self.infos)
        last_error: BudgetError | None = None
        for n in range(max(1, threads), 0, -1):
            if self.streamable:
                # row-split: the threads share one band; the writer's band is double-buffered
                rows = {"accumulator": acc_row, "input band": in_row}
                if out_row:
                    rows["output bands"] = out_row * (2 if n > 1 else 1)
                fixed = {"input rounding": (n - 1) * int(prefer) * in_row if n > 1 else 0}
            else:
                rows = {"accumulator": acc_row, "input frames": n * in_row, "output band": out_row}
                fixed = {}
            fixed.update({"decode scratch": n * scratch, "arithmetic scratch": n * ARITHMETIC_SCRATCH})
            fixed.update(output_fixed or {})
            try:
                plan = plan_bands(
                    height,
                    budget=budget,
                    per_row=rows,
                    fixed=fixed,
                    align=output_rows,
                    prefer_align=int(prefer),
                    max_rows=max_rows,
                    what=f"averaging {self.count} frames of {self.info.describe()}",
                )
            except BudgetError as err:  # try fewer threads
                last_error = err
                continue
            return plan, n
        worst = max(self.infos, key=lambda i: i.scratch_bytes)
        if worst.scratch_bytes > budget // 2:
            raise BudgetError(
                f"{worst.name}: one strip or tile decodes to {format_size(worst.scratch_bytes)}, "
                f"more than the budget of {format_size(budget)} allows; raise --max-memory "
                "or re-save it tiled (e.g. 256x256 tiles)"
            ) from None
        if not self.streamable:
            names = [i.name for i in self.infos if not i.streamable][:1]
            raise BudgetError(
                f"{last_error}. {names[0]} and other non-TIFF inputs are decoded whole; "
                "a tiled or striped TIFF stack streams in bands"
            ) from None
        assert last_error is not None
        raise last_error

    def segment_rows(self) -> int:
        """Rows that bands (and their per-thread parts) should be multiples of, so no strip or tile is decoded twice."""
        height = self.shape[0]
        rows = 1
        for info in self.infos:
            rows = math.lcm(rows, info.segment_height)
            if rows > height:
                return max(i.segment_height for i in self.infos)
        return rows

    # -- processing ------------------------------------------------------------

    def bands(
        self,
        plan: Plan,
        *,
        threads: int = 1,
        out: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        stats: dict | None = None,
    ) -> Iterator[tuple[Band, np.ndarray]]:
        """Yield ``(band, result rows)`` for every band of ``plan``, top to bottom.

        The yielded array is reused two bands later, unless ``out`` (a whole
        ``(height, width, samples)`` array) is given, in which case results are
        written into it and views of it are yielded.

        With several threads, TIFF stacks are split by rows: each thread adds
        every input into its own part of the band, and the next band is computed
        while the caller writes this one. Whole-frame stacks are split by input.

        ``stats`` (if given) receives ``clipped`` and ``bytes_read`` counts.
        """
        stats = stats if stats is not None else {}
        stats.setdefault("clipped", 0)
        stats.setdefault("bytes_read", 0)
        if self.streamable and threads > 1:
            yield from self._bands_by_rows(plan, threads, out, progress, stats)
        else:
            yield from self._bands_by_inputs(plan, threads, out, progress, stats)

    def result(
        self,
        plan: Plan,
        *,
        threads: int = 1,
        progress: ProgressCallback | None = None,
        stats: dict | None = None,
    ) -> np.ndarray:
        """Return the whole ``(height, width, samples)`` result, computed band by band into one array.

        The plan must have counted that array (``output_band=False`` with a
        fixed ``result`` buffer).
        """
        result = np.empty(self.shape, self.out_dtype)
        for _ in self.bands(plan, threads=threads, out=result, progress=progress, stats=stats):
            pass
        return result

    def _bands_by_rows(self, plan, threads, out, progress, stats) -> Iterator[tuple[Band, np.ndarray]]:
        height, width, samples = self.shape
        unit = self.segment_rows()
        parts_of = {band: split_rows(band, threads, unit) for band in plan.bands}
        tallest = max(p.height for parts in parts_of.values() for p in parts)
        n_workers = max(len(parts) for parts in parts_of.values())
        accs = [
            make_accumulator((tallest, width, samples), self.count, self.in_dtype, self.out_dtype, self.weights, self.out_bits)
            for _ in range(n_workers)
        ]
        bufs = [np.empty((tallest, width, samples), self.in_dtype) for _ in range(n_workers)]
        outs = None if out is not None else [np.empty((plan.band_height, width, samples), self.out_dtype) for _ in range(2)]
        stop = threading.Event()

        def work(j: int, part: Band, target: np.ndarray) -> tuple[int, int]:
            acc, buf = accs[j], bufs[j][: part.height]
            acc.reset(part.height)
            nbytes = 0
            for i, source in enumerate(self.sources):
                if stop.is_set():
                    raise _Cancelled()
                nbytes += source.read_band(part, buf)
                acc.add(buf, i)
            return nbytes, acc.finish(target)

        def submit(k: int) -> tuple[np.ndarray, list[Future]]:
            band = plan.bands[k]
            target = out[band.toslice()] if out is not None else outs[k % 2][: band.height]
            futures = [
                executor.submit(work, j, part, target[part.start - band.start : part.stop - band.start])
                for j, part in enumerate(parts_of[band])
            ]
            return target, futures

        executor = ThreadPoolExecutor(n_workers, thread_name_prefix="avgstack")
        try:
            pending = submit(0)
            for k, band in enumerate(plan.bands):
                target, futures = pending
                for f in futures:
                    nbytes, clipped = f.result()
                    stats["bytes_read"] += nbytes
                    stats["clipped"] += clipped
                if k + 1 < len(plan.bands):
                    pending = submit(k + 1)  # computed while the caller writes this band
                if progress is not None:
                    done = (k + 1) * self.count
                    progress(Progress(done, len(plan.bands) * self.count, stats["bytes_read"], k, len(plan.bands)))
                yield band, target
        finally:
            stop.set()
            executor.shutdown(wait=True, cancel_futures=True)

    def _bands_by_inputs(self, plan, threads, out, progress, stats) -> Iterator[tuple[Band, np.ndarray]]:
        height, width, samples = self.shape
        bh = plan.band_height
        acc = make_accumulator((bh, width, samples), self.count, self.in_dtype, self.out_dtype, self.weights, self.out_bits)
        buffers = [np.empty((bh, width, samples), self.in_dtype) for _ in range(max(1, threads))]
        out_buffer = None if out is not None else np.empty((bh, width, samples), self.out_dtype)
        total = len(plan.bands) * self.count
        done = 0
        executor = ThreadPoolExecutor(threads, thread_name_prefix="avgstack-read") if threads > 1 else None
        try:
            for b, band in enumerate(plan.bands):
                acc.reset(band.height)
                for i, (frame, nbytes) in enumerate(self._read_all(band, buffers, executor)):
                    acc.add(frame, i)
                    stats["bytes_read"] += nbytes
                    done += 1
                    if progress is not None:
                        progress(Progress(done, total, stats["bytes_read"], b, len(plan.bands)))
                target = out[band.toslice()] if out is not None else out_buffer[: band.height]
                stats["clipped"] += acc.finish(target)
                yield band, target
        finally:
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def _read_all(
        self, band: Band, buffers: list[np.ndarray], executor: ThreadPoolExecutor | None
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Read ``band`` of every input in order, ``len(buffers)`` reads in flight."""
        h = band.height
        if executor is None:
            for source in self.sources:
                view = buffers[0][:h]
                yield view, source.read_band(band, view)
            return
        depth = len(buffers)
        pending: deque[Future] = deque()

        def submit(i: int) -> None:
            view = buffers[i % depth][:h]
            pending.append(executor.submit(lambda s=self.sources[i], v=view: (v, s.read_band(band, v))))

        for i in range(min(depth, self.count)):
            submit(i)
        try:
            for i in range(self.count):
                view, nbytes = pending.popleft().result()
                yield view, nbytes
                if i + depth < self.count:
                    submit(i + depth)
        finally:
            for f in pending:
                f.cancel()
            for f in pending:
                with contextlib.suppress(BaseException):
                    f.result()


class _Cancelled(Exception):
    """A worker noticed that the run was abandoned."""


def split_rows(band: Band, parts: int, unit: int) -> list[Band]:
    """Split ``band`` into at most ``parts`` consecutive bands of whole ``unit``-row groups."""
    units = math.ceil(band.height / unit)
    per = math.ceil(units / max(1, parts)) * unit
    return [Band(start, min(per, band.stop - start)) for start in range(band.start, band.stop, per)]


def stack_inputs(inputs: Sequence[InputSpec] | InputSpec) -> list[InputSpec]:
    """Inputs as a list (a single path or array is a stack of one)."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        return [inputs]
    return list(inputs)


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
