"""``average()`` and ``average_to_file()`` over a one-shot iterable of frames, one frame at a time.

The frames go through an :class:`~avgstack.Accumulator`, so at most the
frame being added (and the one the caller's generator holds while it makes
the next) is alive besides the state, and the budget counts both. Weights may
be an iterable of the same length. Methods whose reducer needs every frame's
rows at once (median, percentiles, clipping) are refused: pass a list.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Iterable, Sequence

import numpy as np

from .accumulator import Accumulator
from .buffers import total
from .engine import ProgressCallback, clock
from .errors import UsageError
from .executor import Progress
from .job import FileJob, Report
from .options import JobOptions, check_weights
from .reading.frames import count_frames, opencv_frames

__all__ = ["accumulate_iterable", "average_iterable", "average_iterable_to_file", "CALLER_FRAMES"]

log = logging.getLogger("avgstack")

#: Frames of the caller's own counted in the budget: the one being added and the next one being made.
CALLER_FRAMES = 2
_END = object()


def accumulate_iterable(
    inputs: Iterable[Any],
    weights: Iterable[Any] | None,
    options: JobOptions,
    progress: ProgressCallback | None = None,
) -> Accumulator:
    """Add every frame of ``inputs`` (with ``weights``) to a new accumulator, one at a time."""
    method = "weighted" if options.weights is not None or weights is not None else options.method
    acc = Accumulator(method, options.dtype, options.max_memory, **dict(options.params))
    acc._caller_frames = CALLER_FRAMES
    weight_iter = None if weights is None else iter(weights)
    read = 0
    total_frames = 0
    if isinstance(inputs, Sequence):
        total_frames = count_frames(inputs, options.frames, options.sample)
        if weights is not None:
            weights = check_weights(weights, total_frames)
    for frame in opencv_frames(inputs, options.max_memory, options.frames, options.sample):
        weight = None
        if weight_iter is not None:
            w = next(weight_iter, _END)
            if w is _END:
                raise UsageError(f"fewer weights than frames: no weight for frame #{acc.count}")
            checked = check_weights([w])
            assert checked is not None
            weight = checked[0]
        try:
            acc.add(frame, weight)
        except UsageError as err:
            if "cannot be computed frame by frame" in str(err):
                raise UsageError(
                    f"method {method!r} needs every frame at once and cannot read a one-shot iterable "
                    "(generator, iterator, map); pass a list of frames or of paths"
                ) from None
            raise
        read += frame.nbytes
        if progress is not None:
            progress(Progress(acc.count, total_frames, read, 0, 1))
    if weight_iter is not None and next(weight_iter, _END) is not _END:
        raise UsageError(f"more weights than the {acc.count} frame(s) given; give one weight per frame")
    if acc.count == 0:
        raise UsageError("no inputs given (the iterable of frames was empty)")
    return acc


def average_iterable(
    inputs: Iterable[Any], weights: Iterable[Any] | None, options: JobOptions,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """:func:`avgstack.average` over a one-shot iterable."""
    return accumulate_iterable(inputs, weights, options, progress).result()


def average_iterable_to_file(
    inputs: Iterable[Any], out: str | os.PathLike[str], weights: Iterable[Any] | None, options: JobOptions,
    progress: ProgressCallback | None = None,
) -> Report:
    """:func:`avgstack.average_to_file` over a one-shot iterable: reduce, then stream the result to ``out``."""
    from .writing.atomic import check_output

    start = clock()
    check_output(os.fspath(out), [])
    acc = accumulate_iterable(inputs, weights, options, progress)
    result = acc.result()
    left = max(8 * 2**20, options.max_memory - total(acc.declare()))
    output = options.replace(weights=None, max_memory=left, method="mean", params={})
    with FileJob([result], out, output) as job:
        report = job.run(None, start, log_summary=False)
    report = Report(**{**report.__dict__, "frames": acc.count})
    log.info("%s", report.summary())
    return report


def run_frames_cli(
    inputs: Sequence[Any], output: str, options: JobOptions, *, dry_run: bool, bar: bool, label: str
) -> int:
    """The command line over inputs that include videos (frames decoded in order); returns the exit code."""
    count = count_frames(inputs, options.frames, options.sample)
    weights, options = options.weights, options.replace(weights=None)
    check_weights(weights, count)
    lines = [
        f"inputs: {count} frames from {len(inputs)} input(s) (videos decoded frame by frame, in order)",
        f"operation: {'weighted sum' if weights is not None else 'exact mean'}, output {output}",
    ]
    if dry_run:
        print("\n".join(lines))
        return 0
    for line in lines:
        log.info("%s%s", label, line)
    progress = None
    if bar:
        from .cli.progress import ProgressBar

        progress = ProgressBar(desc=os.path.basename(output))
    try:
        average_iterable_to_file(inputs, output, weights, options, progress)
    finally:
        if progress is not None:
            progress.close()
    return 0
