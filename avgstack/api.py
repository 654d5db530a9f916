"""The public API: average a stack into an array, or stream it to a file."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Sequence

import numpy as np

from .engine import ProgressCallback, clock, layout_of, reduce_spec
from .errors import UsageError
from .job import FileJob, JobPlan, Report, make_engine, open_stack, warn_clipped
from .missing import rules_for, spec_params
from .options import JobOptions, default_threads
from .planning import format_size
from .reading import InputSpec
from .reading.frames import has_video, is_one_shot
from .reading.layout import to_opencv_layout
from .reducers.coverage import coverage_params
from .stack import stack_inputs
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
    client: Any = None,
    frames: slice | str | None = None,
    sample: int | None = None,
    method: str = "mean",
    percentile: float | None = None,
    sigma_low: float | None = None,
    sigma_high: float | None = None,
    max_iters: int | None = None,
    nlow: int | None = None,
    nhigh: int | None = None,
    ddof: int | None = None,
    nodata: float | str | None = None,
    renormalize: bool = False,
    min_count: int | None = None,
    alpha: str | None = None,
) -> np.ndarray:
    """Average a stack of images into an array laid out as ``cv2.imread(..., IMREAD_UNCHANGED)`` returns it.

    Parameters
    ----------
    inputs : sequence or iterable of str, path-like or ndarray
        Image files (``'scan.tif[2]'`` selects a TIFF page, ``'scan.tif[:]'``
        every page) and arrays in OpenCV's layout (BGR/BGRA for colour), mixed
        freely. A one-shot iterable (generator, ``map``, iterator) is consumed
        one frame at a time and never held whole; the budget counts the frame
        being added and one more the caller's generator may hold.
    weights : sequence or iterable of float, optional
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
    client : distributed.Client, optional
        Run the bands as tasks on this Dask cluster (its workers must see the
        input files at the same paths); the result is bit-identical to a
        local run. ``max_memory`` then bounds each task and this process.
    frames : slice or str, optional
        Frames of video inputs to use (``slice(100, 1000, 10)`` or ``'100:1000:10'``).
    sample : int, optional
        Use this many evenly spaced frames (of those ``frames`` picks) of each video.
    method : str
        What to compute per sample over the frames: ``'mean'`` (default),
        ``'sum'``, ``'min'``, ``'max'``, ``'median'``, ``'percentile'``,
        ``'std'``, ``'var'``, ``'sigma-clip'`` or ``'minmax'`` (see the README).
    percentile : float
        For ``'percentile'`` (required): 0 to 100, numpy's linear method.
    sigma_low, sigma_high, max_iters : float, float, int
        For ``'sigma-clip'``: rejection bounds in standard deviations below and
        above the median (default 3 each) and the most iterations (default 5).
    nlow, nhigh : int
        For ``'minmax'``: values dropped at each end (default 1 each).
    ddof : int
        For ``'std'`` and ``'var'``: delta degrees of freedom (default 0).
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
    method_params: dict[str, Any] = {
        "method": method, "percentile": percentile, "sigma_low": sigma_low, "sigma_high": sigma_high,
        "max_iters": max_iters, "nlow": nlow, "nhigh": nhigh, "ddof": ddof,
        "nodata": nodata, "renormalize": renormalize, "min_count": min_count, "alpha": alpha,
    }
    if _frame_by_frame(inputs, method, frames, sample):
        # a generator of frames, or videos: one frame at a time, never materialised
        from .iterables import average_iterable

        options = JobOptions.create(
            None, dtype=dtype, max_memory=max_memory, threads=threads, frames=frames, sample=sample,
            **_without_missing(method_params),
        )
        return average_iterable(_as_list(inputs), weights, options, progress)
    options = JobOptions.create(
        weights, dtype=dtype, max_memory=max_memory, threads=threads, client=client, frames=frames, sample=sample,
        **method_params,
    )
    specs = stack_inputs(inputs)
    with contextlib.ExitStack() as exit:
        stack = exit.enter_context(open_stack(specs, options))
        options.with_count(stack.count)
        sink = ArraySink(layout_of(stack))
        missing = rules_for(stack, options)
        spec = reduce_spec(
            stack, options.weights, options.method, **options.params, **spec_params(options, missing),
            **coverage_params(stack, options, missing),
        )
        engine = make_engine(exit, stack, spec, sink, options)
        plan = engine.plan
        log.debug(
            "plan: %s, %d bands of %d rows, %s", options.describe(), len(plan.bands), plan.band_height,
            format_size(plan.memory),
        )
        result = sink.result(plan)
        for _ in engine.bands(result, progress):
            pass
        warn_clipped(engine.stats.clipped, stack.out_dtype)
        return to_opencv_layout(result, stack.info.photometric)


def _frame_by_frame(inputs: Any, method: str, frames: Any, sample: Any) -> bool:
    """True for inputs read one frame at a time through the accumulator: one-shot iterables, and videos
    (or a frame selection) with methods that reduce frame by frame; cube methods read videos in passes."""
    from .reading.videoframes import CUBE_METHODS

    if is_one_shot(inputs):
        return True
    if method in CUBE_METHODS:
        return False
    return has_video(inputs) or frames is not None or sample is not None


_MISSING_OPTIONS = {"nodata": None, "renormalize": False, "min_count": None, "alpha": None, "count_map": None}


def _without_missing(params: dict[str, Any]) -> dict[str, Any]:
    """Method parameters for frames from generators and videos, which take no missing-data options yet."""
    given = [name for name, default in _MISSING_OPTIONS.items() if params.get(name, default) != default]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be used with generators of frames or videos yet")
    return {k: v for k, v in params.items() if k not in _MISSING_OPTIONS}


def _as_list(inputs: Any) -> Any:
    """A single path or array as a stack of one; anything else as it is."""
    return [inputs] if isinstance(inputs, (str, os.PathLike, np.ndarray)) else inputs


def _file_job(inputs, out, weights, dtype, max_memory, compression, tile, threads, client, method, params) -> FileJob:
    options = JobOptions.create(
        weights, dtype=dtype, max_memory=max_memory, threads=threads, compression=compression, tile=tile,
        client=client, method=method, **params,
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
    client: Any = None,
    method: str = "mean",
    percentile: float | None = None,
    sigma_low: float | None = None,
    sigma_high: float | None = None,
    max_iters: int | None = None,
    nlow: int | None = None,
    nhigh: int | None = None,
    ddof: int | None = None,
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
    params = {
        "percentile": percentile, "sigma_low": sigma_low, "sigma_high": sigma_high, "max_iters": max_iters,
        "nlow": nlow, "nhigh": nhigh, "ddof": ddof, "nodata": nodata, "renormalize": renormalize,
        "min_count": min_count, "alpha": alpha, "count_map": count_map,
    }
    with _file_job(inputs, out, weights, dtype, max_memory, compression, tile, threads, client, method, params) as job:
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
    client: Any = None,
    frames: slice | str | None = None,
    sample: int | None = None,
    method: str = "mean",
    percentile: float | None = None,
    sigma_low: float | None = None,
    sigma_high: float | None = None,
    max_iters: int | None = None,
    nlow: int | None = None,
    nhigh: int | None = None,
    ddof: int | None = None,
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
    inputs, weights, dtype, max_memory, threads, progress, client, method, percentile, sigma_low, \
    sigma_high, max_iters, nlow, nhigh, ddof
        As for :func:`average`. With ``client``, workers encode the strips or
        tiles and this process writes them in row order; the file is
        byte-identical to a local run's.
    out : str or path-like
        Output file; written to a temporary file beside it and renamed over it
        only on success. Never an input.
    compression : str, optional
        TIFF compression: ``'none'`` (default), ``'lzw'``, ``'deflate'``,
        ``'zstd'``, ``'packbits'`` or ``'lzma'``.
    tile : int, optional
        Write square tiles of this size (a multiple of 16) instead of strips.

    Returns
    -------
    Report
        Shape, dtype, frames, seconds, peak memory, clipped samples, ...
    """
    params = {
        "percentile": percentile, "sigma_low": sigma_low, "sigma_high": sigma_high, "max_iters": max_iters,
        "nlow": nlow, "nhigh": nhigh, "ddof": ddof, "nodata": nodata, "renormalize": renormalize,
        "min_count": min_count, "alpha": alpha, "count_map": count_map,
    }
    if _frame_by_frame(inputs, method, frames, sample):
        # a generator of frames, or videos: one frame at a time, never materialised
        from .iterables import average_iterable_to_file

        options = JobOptions.create(
            None, dtype=dtype, max_memory=max_memory, threads=threads, compression=compression, tile=tile,
            frames=frames, sample=sample, method=method, **_without_missing(params),
        )
        return average_iterable_to_file(_as_list(inputs), out, weights, options, progress)
    start = clock()
    selection: dict[str, Any] = {"frames": frames, "sample": sample}
    with _file_job(
        inputs, out, weights, dtype, max_memory, compression, tile, threads, client, method, {**params, **selection}
    ) as job:
        return job.run(progress, start)
