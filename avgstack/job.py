"""A file job: a stack opened, checked and planned for one output file, then run.

:class:`FileJob` is the engine room of :func:`avgstack.average_to_file` and
of the command line's ``--dry-run``; :class:`JobPlan` and :class:`Report`
describe a job before and after it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .countmap import CountMap, check_count_map
from .engine import Engine, ProgressCallback, clock, layout_of, peak_rss, reduce_spec
from .errors import UsageError
from .missing import rules_for, spec_params, with_missing
from .options import JobOptions, default_threads
from .planning import format_size
from .reading import InputSpec
from .reducers.coverage import coverage_params
from .stack import Stack, stack_inputs
from .writing.atomic import atomic_output, check_output
from .writing.sinks import TiffSink, choose_sink

__all__ = ["FileJob", "JobPlan", "Report", "default_threads", "warn_clipped", "make_engine", "open_stack"]

log = logging.getLogger("avgstack")

@dataclass(frozen=True)
class Report:
    """What :func:`average_to_file` did.

    Attributes
    ----------
    output : str
        Path written.
    shape : tuple of int
        ``(height, width, samples)``.
    dtype : str
        Output sample type.
    frames : int
        Inputs averaged.
    seconds : float
        Wall time.
    peak_memory : int
        Peak resident set size of the process, in bytes.
    clipped : int
        Samples saturated to the output type's range.
    bands : int
        Bands processed.
    band_height : int
        Rows per band.
    planned_memory : int
        Bytes of pixel buffers the plan allocated.
    bytes_read : int
        Bytes read from the inputs.
    bytes_written : int
        Size of the output file.
    bigtiff : bool
        Whether the output is BigTIFF.
    threads : int
        Worker threads.
    method : str
        What was computed, with its parameters (``'median'``, ``'sigma-clip (max_iters=5, ...)'``).
    """

    output: str
    shape: tuple[int, int, int]
    dtype: str
    frames: int
    seconds: float
    peak_memory: int
    clipped: int
    bands: int
    band_height: int
    planned_memory: int
    bytes_read: int
    bytes_written: int
    bigtiff: bool
    threads: int
    method: str = "exact mean"
    #: What was done to the inputs besides reducing them (palette images expanded, ...).
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        """One line for logs."""
        h, w, s = self.shape
        rate = self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return (
            f"{self.output}: {w}x{h}x{s} {self.dtype}, {self.frames} frames, "
            + ("" if self.method in ("exact mean", "weighted sum") else f"{self.method}, ")
            + f"{self.seconds:.2f} s, {rate:.0f} MB/s read, peak memory {format_size(self.peak_memory)}, "
            f"{self.clipped} clipped samples"
        )


def warn_clipped(clipped: int, dtype: np.dtype) -> None:
    """Log, once, how many samples were saturated to the output range."""
    if clipped:
        log.warning("%d samples were clipped to the %s range", clipped, np.dtype(dtype).name)


@dataclass(frozen=True)
class JobPlan:
    """What :func:`average_to_file` will do, known from headers alone (``--dry-run``).

    Attributes
    ----------
    inputs : tuple of str
        Input names.
    output : str
        Output path.
    shape : tuple of int
        ``(height, width, samples)``.
    description : str
        The inputs' kind, e.g. ``6000x6000 RGBA uint8``.
    dtype : str
        Output sample type.
    weighted : bool
        Weighted sum rather than mean.
    output_format : str
        ``'tiff'`` or the OpenCV extension.
    compression : str
        TIFF compression.
    tile : int or None
        TIFF tile size.
    bigtiff : bool
        Whether the output will be BigTIFF.
    bands : int
        Number of bands.
    band_height : int
        Rows per band.
    memory : int
        Bytes of pixel buffers the plan allocates.
    budget : int
        The memory budget.
    threads : int
        Worker threads.
    read_bytes : int
        Bytes read from the inputs (whole-frame inputs are read once per pass).
    write_bytes : int
        Uncompressed size of the output pixels.
    passes : int
        Times each input is decoded (whole-frame inputs whose result does not fit at once).
    method : str
        What is computed, with its parameters (``'exact mean'``, ``'percentile (percentile=90)'``).
    decodes : int
        Times the tallest compressed strip or tile is decoded: more than 1 when bands are shorter
        than it (a method holding every frame's rows, with a small budget).
    """

    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, int, int]
    description: str
    dtype: str
    weighted: bool
    output_format: str
    compression: str
    tile: int | None
    bigtiff: bool
    bands: int
    band_height: int
    memory: int
    budget: int
    threads: int
    read_bytes: int
    write_bytes: int
    passes: int = 1
    cluster: str | None = None
    method: str = ""
    decodes: int = 1
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The plan, for people."""
        h, w, s = self.shape
        return [
            f"inputs: {len(self.inputs)} frames of {self.description}",
            f"operation: {self.method or ('weighted sum' if self.weighted else 'exact mean')}",
            f"output: {self.output} ({self.output_format.upper()}"
            + (f", {'BigTIFF' if self.bigtiff else 'classic TIFF'}, compression {self.compression}"
               + (f", tiles {self.tile}x{self.tile}" if self.tile else ", strips")
               if self.output_format == "tiff" else "")
            + f"), {w}x{h}x{s} {self.dtype}",
            f"bands: {self.bands} of {self.band_height} rows, {self.threads} thread(s)"
            + (f", {self.passes} passes decoding every input whole" if self.passes > 1 else ""),
            f"memory: {format_size(self.memory)} of pixel buffers (budget {format_size(self.budget)})"
            + (f"; bands are shorter than the inputs' strips/tiles, some are decoded {self.decodes} "
               "times (a larger --max-memory decodes each once)" if self.decodes > 1 else ""),
            f"read: {format_size(self.read_bytes)}; write: {format_size(self.write_bytes)}"
            + (" before compression" if self.compression != "none" else ""),
            *([f"cluster: {self.cluster}"] if self.cluster else []),
            *(f"note: {note}" for note in self.notes),
        ]


def make_engine(exit: contextlib.ExitStack, stack: Stack, spec: Any, sink: Any, options: JobOptions) -> Any:
    """The engine that runs a job: local threads, or a Dask cluster (its client closed by ``exit``)."""
    if not options.distributed:
        return Engine(stack, spec, sink, options.max_memory, options.threads)
    if stack.has_video:
        raise UsageError(
            "videos cannot be read on a Dask cluster (their frames are decoded in order by one decoder); "
            "run the job locally, without --scheduler-address/--scheduler-file (client=)"
        )
    from .cluster import ClusterEngine, open_client

    client = exit.enter_context(open_client(options))
    return ClusterEngine(client, stack, spec, sink, options.max_memory)


def open_stack(specs: Sequence[InputSpec], options: JobOptions) -> Stack:
    """The stack of a job: video files are read as frames (``options.frames``/``sample``) by cube methods."""
    from .reading.videoframes import CUBE_METHODS

    return Stack(
        specs, options.out_dtype, options.max_memory, videos=options.method in CUBE_METHODS,
        frames=options.frames, sample=options.sample,
    )


class FileJob:
    """A stack opened, checked and planned for writing to a file.

    The two halves of :func:`average_to_file`, for callers that show the plan
    before running it (the command line). Use as a context manager, then
    :meth:`describe` and :meth:`run`.

    Parameters
    ----------
    inputs : sequence of str, path-like or ndarray
        The frames.
    out : str or path-like
        Output file.
    options : JobOptions
        Validated options.
    """

    def __init__(self, inputs: Sequence[InputSpec], out: str | os.PathLike[str], options: JobOptions) -> None:
        from .reading.tiff import split_page_suffix

        self.out = os.fspath(out)
        self.options = options
        self.budget = options.max_memory
        specs = stack_inputs(inputs)
        self._exit = contextlib.ExitStack()
        self.stack = self._exit.enter_context(open_stack(specs, options))
        try:
            stack = self.stack
            options.with_count(stack.count)
            self.missing = rules_for(stack, options)
            layout = with_missing(layout_of(stack), self.missing)
            self.sink = choose_sink(self.out, layout, compression=options.compression, tile=options.tile)
            self.paths = [split_page_suffix(os.fspath(i))[0] for i in specs if not isinstance(i, np.ndarray)]
            check_output(self.out, self.paths)
            if options.count_map:
                if options.distributed:
                    raise UsageError("count_map (--count-map) is not available on a Dask cluster yet")
                check_count_map(options.count_map, self.out, self.paths)
            self.spec = reduce_spec(
                stack, options.weights, options.method, **options.params, **spec_params(options, self.missing),
                **coverage_params(stack, options, self.missing),
            )
            self.engine = make_engine(self._exit, stack, self.spec, self.sink, options)
            self.plan, self.threads = self.engine.plan, self.engine.threads
        except BaseException:
            self._exit.close()
            raise

    def describe(self) -> JobPlan:
        """Return the plan."""
        stack, sink = self.stack, self.sink
        read = 0
        for path in self.paths:
            with contextlib.suppress(OSError):
                read += os.path.getsize(path)
        read += sum(i.frame_bytes for i in stack.infos if i.format == "array")
        tiff = isinstance(sink, TiffSink)
        return JobPlan(
            inputs=tuple(i.name for i in stack.infos),
            output=self.out,
            shape=stack.shape,
            description=stack.info.describe(),
            dtype=stack.out_dtype.name,
            weighted=self.options.weighted,
            output_format=sink.format,
            compression=self.options.compression if tiff else "none",
            tile=self.options.tile if tiff else None,
            bigtiff=isinstance(sink, TiffSink) and sink.bigtiff,
            bands=len(self.plan.bands),
            band_height=self.plan.band_height,
            memory=self.plan.memory,
            budget=self.budget,
            threads=self.threads,
            read_bytes=read * self.engine.passes,
            write_bytes=sink.layout.frame_bytes,
            passes=self.engine.passes,
            cluster=self.engine.describe() if self.options.distributed else None,
            method=self.options.describe(),
            decodes=self._decodes(),
            notes=self.notes,
        )

    @property
    def notes(self) -> tuple[str, ...]:
        """What is done to the inputs besides reducing them."""
        from .reading.palette import notes

        missing = (self.missing.describe(),) if self.missing.active else ()
        return (*notes(self.stack.infos), *missing)

    def _decodes(self) -> int:
        """Times the tallest strip or tile is decoded when bands are shorter than it."""
        if not self.stack.streamable:
            return 1
        band = max(1, self.plan.band_height)
        height = self.stack.shape[0]
        worst = 1
        for seg in {info.segment_height for info in self.stack.infos}:
            if seg <= 1 or band % seg == 0:
                continue  # bands aligned to the segments decode each once
            top = np.arange(0, height, seg)
            bottom = np.minimum(top + seg, height) - 1
            worst = max(worst, int((bottom // band - top // band).max()) + 1)
        return worst

    def run(
        self, progress: ProgressCallback | None = None, start: float | None = None, *, log_summary: bool = True
    ) -> Report:
        """Process and write the output; ``start`` is the clock time the job began."""
        start = clock() if start is None else start
        stack, plan, threads, engine = self.stack, self.plan, self.threads, self.engine
        log.debug(
            "averaging %d frames of %s into %s: %d bands of %d rows, %s of buffers, %d thread(s)",
            stack.count, stack.info.describe(), self.out, len(plan.bands), plan.band_height,
            format_size(plan.memory), threads,
        )
        target = self.sink.result(plan)
        with contextlib.ExitStack() as outputs:
            on_counts = None
            if self.options.count_map:
                # the count map's temporary file first, then the output's; the output is renamed when
                # complete, then the count map (both temporaries are removed if either fails)
                h, w, s = stack.shape
                shape = (h, w, 1 if self.spec.param("alpha") else s)  # alpha coverage: one count per pixel
                counts = CountMap(self.options.count_map, shape, stack.count, self.sink.layout.metadata)
                counts.start(outputs.enter_context(atomic_output(counts.path, protect=self.paths)))
                on_counts = counts.write
            with atomic_output(self.out, protect=self.paths) as fh:
                if self.options.distributed and isinstance(self.sink, TiffSink):
                    written = self.sink.write_encoded(fh, engine.chunks(progress))
                else:
                    written = self.sink.write(fh, engine.bands(target, progress, on_counts), plan, threads)
        del target
        stats = engine.stats
        warn_clipped(stats.clipped, stack.out_dtype)
        report = Report(
            output=self.out,
            shape=stack.shape,
            dtype=stack.out_dtype.name,
            frames=stack.count,
            seconds=clock() - start,
            peak_memory=peak_rss(),
            clipped=stats.clipped,
            bands=len(plan.bands),
            band_height=plan.band_height,
            planned_memory=plan.memory,
            bytes_read=stats.bytes_read,
            bytes_written=written.nbytes,
            bigtiff=written.bigtiff,
            threads=threads,
            method=self.options.describe(),
            notes=self.notes,
        )
        if log_summary:
            for note in report.notes:
                log.info("note: %s", note)
            log.info("%s", report.summary())
        return report

    def close(self) -> None:
        """Release every input (and the Dask client the job connected)."""
        self._exit.close()

    def __enter__(self) -> "FileJob":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
