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

import numpy as np

from .engine import ProgressCallback, Stack, clock, peak_rss, stack_inputs
from .errors import OutputError, UsageError
from .planning import DEFAULT_MAX_MEMORY, format_size, parse_size
from .reading.layout import OPENCV_PHOTOMETRICS
from .writing.atomic import atomic_output, check_output
from .writing.tiff import TiffOptions, encode_scratch, needs_bigtiff, segment_rows, write_tiff

__all__ = [
    "FileJob", "JobPlan", "Report", "default_threads", "resolve_budget", "resolve_threads", "warn_clipped",
]

log = logging.getLogger("avgstack")

_TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8")


def default_threads() -> int:
    """Worker threads by default: the machine's cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


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

    def summary(self) -> str:
        """One line for logs."""
        h, w, s = self.shape
        rate = self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return (
            f"{self.output}: {w}x{h}x{s} {self.dtype}, {self.frames} frames, {self.seconds:.2f} s, "
            f"{rate:.0f} MB/s read, peak memory {format_size(self.peak_memory)}, "
            f"{self.clipped} clipped samples"
        )


def resolve_budget(max_memory: int | str | None) -> int:
    """Bytes of the budget: ``max_memory`` parsed, or the default."""
    return DEFAULT_MAX_MEMORY if max_memory is None else parse_size(max_memory)


def resolve_threads(threads: int | None) -> int:
    """Threads to use: ``threads`` checked, or the default."""
    if threads is None:
        return default_threads()
    if int(threads) < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    return int(threads)


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
        Bytes the inputs occupy on disk (read once).
    write_bytes : int
        Uncompressed size of the output pixels.
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

    def lines(self) -> list[str]:
        """The plan, for people."""
        h, w, s = self.shape
        return [
            f"inputs: {len(self.inputs)} frames of {self.description}",
            f"operation: {'weighted sum' if self.weighted else 'exact mean'}",
            f"output: {self.output} ({self.output_format.upper()}"
            + (f", {'BigTIFF' if self.bigtiff else 'classic TIFF'}, compression {self.compression}"
               + (f", tiles {self.tile}x{self.tile}" if self.tile else ", strips")
               if self.output_format == "tiff" else "")
            + f"), {w}x{h}x{s} {self.dtype}",
            f"bands: {self.bands} of {self.band_height} rows, {self.threads} thread(s)",
            f"memory: {format_size(self.memory)} of pixel buffers (budget {format_size(self.budget)})",
            f"read: {format_size(self.read_bytes)}; write: {format_size(self.write_bytes)}"
            + (" before compression" if self.compression != "none" else ""),
        ]


class FileJob:
    """A stack opened, checked and planned for writing to a file.

    The two halves of :func:`average_to_file`, for callers that show the plan
    before running it (the command line). Takes the same arguments; use as a
    context manager, then :meth:`describe` and :meth:`run`.
    """

    def __init__(self, inputs, out, weights, dtype, max_memory, compression, tile, threads) -> None:
        from .reading.tiff import split_page_suffix

        self.out = os.fspath(out)
        self.budget = resolve_budget(max_memory)
        threads = resolve_threads(threads)
        self.is_tiff = self.out.lower().endswith(_TIFF_EXTENSIONS)
        if self.is_tiff:
            self.options = TiffOptions(compression=compression or "none", tile=tile)
        else:
            if compression not in (None, "none") or tile:
                raise UsageError("--compression and --tile apply to TIFF output only")
            from .writing import opencv as opencv_writer  # imports OpenCV only when needed

            self.opencv_writer = opencv_writer
            self.ext = opencv_writer.check_writable(self.out)
            self.options = TiffOptions()
        self.stack = Stack(inputs, weights, dtype)
        try:
            stack = self.stack
            h, w, s = stack.shape
            if not self.is_tiff:
                if stack.info.photometric not in OPENCV_PHOTOMETRICS:
                    raise OutputError(
                        f"{self.out}: {stack.info.photometric} images can only be written as TIFF; "
                        "use a .tif output"
                    )
                self.opencv_writer.check_encodable(self.out, self.ext, stack.out_dtype, s, shape=(h, w))
            self.paths = [
                split_page_suffix(os.fspath(i))[0] for i in stack_inputs(inputs) if not isinstance(i, np.ndarray)
            ]
            check_output(self.out, self.paths)
            itemsize = stack.out_dtype.itemsize
            self.frame_bytes = h * w * s * itemsize
            if self.is_tiff:
                self.plan, self.threads = stack.plan(
                    self.budget,
                    threads=threads,
                    output_rows=segment_rows(self.options, w, s, itemsize),
                    output_fixed={"encoder": encode_scratch(self.options, w, s, itemsize, threads)},
                )
            else:
                self.plan, self.threads = stack.plan(
                    self.budget,
                    threads=threads,
                    output_band=False,
                    output_fixed={"result": self.frame_bytes, "encoder": self.opencv_writer.encode_bytes(self.frame_bytes)},
                )
        except BaseException:
            self.stack.close()
            raise

    def describe(self) -> JobPlan:
        """Return the plan."""
        stack = self.stack
        read = 0
        for path in self.paths:
            with contextlib.suppress(OSError):
                read += os.path.getsize(path)
        read += sum(i.frame_bytes for i in stack.infos if i.format == "array")
        return JobPlan(
            inputs=tuple(i.name for i in stack.infos),
            output=self.out,
            shape=stack.shape,
            description=stack.info.describe(),
            dtype=stack.out_dtype.name,
            weighted=stack.weights is not None,
            output_format="tiff" if self.is_tiff else self.ext.lstrip("."),
            compression=self.options.compression if self.is_tiff else "none",
            tile=self.options.tile if self.is_tiff else None,
            bigtiff=self.is_tiff and needs_bigtiff(self.options, stack.shape, stack.out_dtype.itemsize),
            bands=len(self.plan.bands),
            band_height=self.plan.band_height,
            memory=self.plan.memory,
            budget=self.budget,
            threads=self.threads,
            read_bytes=read,
            write_bytes=self.frame_bytes,
        )

    def run(self, progress: ProgressCallback | None = None, start: float | None = None) -> Report:
        """Process and write the output; ``start`` is the clock time the job began."""
        start = clock() if start is None else start
        stack, plan, threads = self.stack, self.plan, self.threads
        log.debug(
            "averaging %d frames of %s into %s: %d bands of %d rows, %s of buffers, %d thread(s)",
            stack.count, stack.info.describe(), self.out, len(plan.bands), plan.band_height,
            format_size(plan.memory), threads,
        )
        stats: dict = {}
        bigtiff = False
        with atomic_output(self.out, protect=self.paths) as fh:
            if self.is_tiff:
                bigtiff = write_tiff(
                    fh,
                    stack.bands(plan, threads=threads, progress=progress, stats=stats),
                    shape=stack.shape,
                    dtype=stack.out_dtype,
                    options=self.options,
                    photometric=stack.info.photometric,
                    extrasamples=stack.extrasamples,
                    bits=stack.out_bits,
                    metadata=stack.info.metadata,
                    threads=threads,
                )
            else:
                result = stack.result(plan, threads=threads, progress=progress, stats=stats)
                self.opencv_writer.write_opencv(fh, result, self.ext, self.out)
                del result
            written = fh.tell()
        warn_clipped(stats["clipped"], stack.out_dtype)
        report = Report(
            output=self.out,
            shape=stack.shape,
            dtype=stack.out_dtype.name,
            frames=stack.count,
            seconds=clock() - start,
            peak_memory=peak_rss(),
            clipped=stats["clipped"],
            bands=len(plan.bands),
            band_height=plan.band_height,
            planned_memory=plan.memory,
            bytes_read=stats["bytes_read"],
            bytes_written=written,
            bigtiff=bigtiff,
            threads=threads,
        )
        log.info("%s", report.summary())
        return report

    def close(self) -> None:
        """Release every input."""
        self.stack.close()

    def __enter__(self) -> "FileJob":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

