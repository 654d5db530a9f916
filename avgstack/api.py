"""The public API: average a stack into an array, or stream it to a file."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from .alpha import coverage_params
from .engine import Engine, ProgressCallback, clock, layout_of, reduce_spec
from .job import FileJob, JobPlan, Report, warn_clipped
from .missing import rules_for, spec_params
from .options import JobOptions, default_threads
from .planning import format_size
from .reading import InputSpec
from .reading.layout import to_opencv_layout
from .stack import Stack, stack_inputs
from .writing.sinks import ArraySink

__all__ = ["average", "average_to_file", "plan_to_file", "Report", "JobPlan", "FileJob", "default_threads"]

log = logging.getLogger("avgstack")


def average(
    inputs: Sequence[InputSpec],
    weights: Sequence[float] | None = None,
    *,
    dtype: str | np.dtype | None = None,
    max_memory: int | str | None = None,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    nodata: float | str | None = None,
    renormalize: bool = False,
    min_count: int | None = None,
    alpha: str | None = None,
) -> np.ndarray:
    """Average a stack of images into an array laid out as ``cv2.imread(..., IMREAD_UNCHANGED)`` returns it.

    Parameters
    ----------
    inputs : sequence of str, path-like or ndarray
        Image files (``'scan.tif[2]'`` selects a TIFF page) and arrays in
        OpenCV's layout (BGR/BGRA for colour), mixed freely.
    weights : sequence of float, optional
        One weight per input: the result is ``sum(w_i * frame_i)``. Without
        weights it is the exactly rounded mean.
    dtype : str or numpy dtype, optional
        Output sample type; defaults to the inputs'. Integer results are
        rounded half to even and saturated.
    max_memory : int or str, optional
        Budget for buffers, the returned array included (``'512MiB'``).
    threads : int, optional
        Worker threads.
    progress : callable, optional
        Called with a :class:`~avgstack.Progress` as the work advances.
    nodata, renormalize, min_count, alpha : optional
        Missing data (see the README, "Missing data"): ``nodata`` is a
        number, ``'nan'`` or ``'none'`` (default: the inputs' GDAL_NODATA
        tag); ``renormalize=True`` scales weighted sums by
        ``sum(w) / sum(valid w)``; ``min_count=K`` makes samples with fewer
        than K valid frames nodata; ``alpha='coverage'`` weights colour by alpha.

    Returns
    -------
    ndarray
        ``(rows, cols)`` for gray, ``(rows, cols, channels)`` in BGR(A) order
        for colour.

    Raises
    ------
    AvgstackError
        Any problem, as one of its subclasses.

    Examples
    --------
    >>> import numpy as np, avgstack
    >>> a = np.zeros((2, 2, 3), np.uint8); b = np.full((2, 2, 3), 3, np.uint8)
    >>> avgstack.average([a, b])[0, 0].tolist()
    [2, 2, 2]
    """
    options = JobOptions.create(
        weights, dtype=dtype, max_memory=max_memory, threads=threads,
        nodata=nodata, renormalize=renormalize, min_count=min_count, alpha=alpha,
    )
    specs = stack_inputs(inputs)
    options.with_count(len(specs))
    with Stack(specs, options.dtype, options.max_memory) as stack:
        sink = ArraySink(layout_of(stack))
        missing = rules_for(stack, options)
        spec = reduce_spec(
            stack, options.weights, **spec_params(options, missing), **coverage_params(stack, options, missing)
        )
        engine = Engine(stack, spec, sink, options.max_memory, options.threads)
        plan = engine.plan
        log.debug("plan: %d bands of %d rows, %s", len(plan.bands), plan.band_height, format_size(plan.memory))
        result = sink.result(plan)
        for _ in engine.bands(result, progress):
            pass
        warn_clipped(engine.stats.clipped, stack.out_dtype)
        return to_opencv_layout(result, stack.info.photometric)


def _file_job(inputs, out, weights, dtype, max_memory, compression, tile, threads, extra) -> FileJob:
    options = JobOptions.create(
        weights, dtype=dtype, max_memory=max_memory, threads=threads, compression=compression, tile=tile, **extra
    )
    return FileJob(stack_inputs(inputs), out, options)


def plan_to_file(
    inputs: Sequence[InputSpec],
    out: str | os.PathLike[str],
    weights: Sequence[float] | None = None,
    *,
    dtype: str | np.dtype | None = None,
    max_memory: int | str | None = None,
    compression: str | None = None,
    tile: int | None = None,
    threads: int | None = None,
    nodata: float | str | None = None,
    renormalize: bool = False,
    min_count: int | None = None,
    alpha: str | None = None,
    count_map: str | os.PathLike[str] | None = None,
) -> JobPlan:
    """Check a job from headers and return its plan without reading pixels or writing anything.

    Takes the arguments of :func:`average_to_file` and raises the same errors
    it would raise before processing.
    """
    with _file_job(inputs, out, weights, dtype, max_memory, compression, tile, threads, dict(
        nodata=nodata, renormalize=renormalize, min_count=min_count, alpha=alpha, count_map=count_map,
    )) as job:
        return job.describe()


def average_to_file(
    inputs: Sequence[InputSpec],
    out: str | os.PathLike[str],
    weights: Sequence[float] | None = None,
    *,
    dtype: str | np.dtype | None = None,
    max_memory: int | str | None = None,
    compression: str | None = None,
    tile: int | None = None,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    nodata: float | str | None = None,
    renormalize: bool = False,
    min_count: int | None = None,
    alpha: str | None = None,
    count_map: str | os.PathLike[str] | None = None,
) -> Report:
    """Average a stack and stream the result to ``out``, replacing it atomically.

    TIFF outputs (``.tif``, ``.tiff``) are written band by band, as BigTIFF
    when they could exceed 4 GiB; other extensions are encoded whole by
    OpenCV, which needs the whole result within ``max_memory``.

    Parameters
    ----------
    inputs, weights, dtype, max_memory, threads, progress
        As for :func:`average`.
    out : str or path-like
        Output file; written to a temporary file beside it and renamed over it
        only on success. Never an input.
    compression : str, optional
        TIFF compression: ``'none'`` (default), ``'lzw'``, ``'deflate'``,
        ``'zstd'``, ``'packbits'`` or ``'lzma'``.
    tile : int, optional
        Write square tiles of this size (a multiple of 16) instead of strips.
    nodata, renormalize, min_count, alpha
        As for :func:`average`.
    count_map : str or path-like, optional
        Also write a TIFF of how many frames contributed to each sample.

    Returns
    -------
    Report
        Shape, dtype, frames, seconds, peak memory, clipped samples, ...
    """
    start = clock()
    with _file_job(inputs, out, weights, dtype, max_memory, compression, tile, threads, dict(
        nodata=nodata, renormalize=renormalize, min_count=min_count, alpha=alpha, count_map=count_map,
    )) as job:
        return job.run(progress, start)
