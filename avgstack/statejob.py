"""A job with a running state (``--state FILE``): resume from the state, add this run's inputs, save both.

The state file holds the exact sums of every frame added by earlier runs
(:mod:`avgstack.statefile`); a run loads it (if it exists), adds its own
inputs one whole frame at a time, writes the output and the new state. Both
are written to temporary files and renamed only on success, the output first:
a run that fails changes neither, and a run that dies between the two renames
leaves an output that a re-run reproduces.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np

from .accumulator import Accumulator
from .buffers import Buffer, total
from .engine import clock
from .errors import BudgetError, IncompatibleInputsError, OutputError, UnsupportedInputError, UsageError
from .executor import Progress, ProgressCallback
from .job import FileJob, Report
from .options import JobOptions
from .planning import format_size
from .reading import InputSpec
from .reading.layout import swap_red_blue
from .stack import Stack, stack_inputs
from .windows import Band
from .writing.atomic import atomic_output, check_output

__all__ = ["StateJob"]

log = logging.getLogger("avgstack")

#: The output job re-reads the result array in bands: it needs at least this much besides the state.
MIN_OUTPUT_BUDGET = 8 * 2**20


def _same_file(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class StateJob:
    """Load ``state`` (if it exists), add ``inputs``, write ``out`` and the new state.

    Parameters
    ----------
    inputs : sequence of str, path-like or ndarray
        This run's frames.
    out : str or path-like
        Output file.
    options : JobOptions
        Validated options; ``options.state`` is the state file.

    Raises
    ------
    UsageError
        The state was saved with another method or dtype.
    IncompatibleInputsError
        The inputs do not match the frames in the state.
    """

    def __init__(self, inputs: Sequence[InputSpec], out: str | os.PathLike[str], options: JobOptions) -> None:
        assert options.state is not None
        self.out, self.state, self.options = os.fspath(out), os.fspath(options.state), options
        specs = stack_inputs(inputs)
        options.with_count(len(specs))
        paths = [os.fspath(s) for s in specs if not isinstance(s, np.ndarray)]
        if _same_file(self.state, self.out):
            raise OutputError(f"{self.state}: the state file cannot be the output")
        check_output(self.out, paths + [self.state])
        check_output(self.state, paths)
        if options.method != "mean":
            raise UsageError(f"--state: method {options.method!r} is not supported with a state file")
        budget = options.max_memory
        if os.path.exists(self.state):
            self.acc = Accumulator.load(self.state, budget)
            self._check_saved()
        else:
            self.acc = Accumulator("weighted" if options.weighted else "mean", options.dtype, budget)
        self.before = self.acc.count
        self.stack = Stack(specs, options.dtype, budget)
        try:
            self._check_inputs()
        except BaseException:
            self.stack.close()
            raise

    def _check_saved(self) -> None:
        acc, options = self.acc, self.options
        saved_weighted = acc.method == "weighted" or bool(acc._weighted)
        if saved_weighted != options.weighted:
            said = "a weighted sum (--weights)" if saved_weighted else "a mean (no --weights)"
            raise UsageError(f"{self.state}: state was saved for {said}; use a new state file for another method")
        if options.dtype is not None and options.dtype != acc.out_dtype:
            raise UsageError(
                f"{self.state}: state was saved for output type {acc.out_dtype}, not {options.dtype}; "
                "use the same --dtype, or a new state file"
            )

    def _check_inputs(self) -> None:
        info = self.stack.info
        if info.photometric not in ("minisblack", "rgb") or info.samples == 2:
            raise UnsupportedInputError(
                f"{info.name}: --state takes gray, RGB and RGBA frames, not {info.describe()}"
            )
        if self.acc.shape is None:
            return
        h, w, c = self.stack.shape
        sh, sw, sc = (*self.acc.shape, 1)[:3]
        if (h, w, c) != (sh, sw, sc) or self.stack.in_dtype != self.acc.in_dtype:
            raise IncompatibleInputsError(
                f"{info.name}: is {info.describe()}, but the state {self.state} holds frames of "
                f"{sw}x{sh} with {sc} channel(s) of {self.acc.in_dtype}; use a new state file for another shape"
            )

    def _check_budget(self, frame_bytes: int) -> None:
        needed = total(self.acc.declare()) + frame_bytes + self.stack.scratch_bytes()
        if needed > self.options.max_memory:
            raise BudgetError(
                f"--state keeps whole frames: {format_size(needed)} are needed for the state, one frame and "
                f"the result but the budget is {format_size(self.options.max_memory)}; raise --max-memory"
            )

    def describe(self) -> list[str]:
        """The plan, for ``--dry-run`` and ``-v``."""
        kind = "weighted sum" if self.options.weighted else "exact mean"
        held = f"{self.before} frames" if self.before else "no state yet (created by this run)"
        return [
            f"state: {self.state}: {held}; this run adds {self.stack.count} frames of {self.stack.info.describe()}",
            f"operation: {kind}, output {self.out}",
        ]

    def run(self, progress: ProgressCallback | None = None, start: float | None = None) -> Report:
        """Add the inputs, write the output and the state."""
        start = clock() if start is None else start
        stack, acc = self.stack, self.acc
        frame = Buffer("decoded frame", stack.shape, stack.in_dtype).allocate()
        whole = Band(0, stack.shape[0])
        weights = self.options.weights
        rgb = stack.info.photometric == "rgb"
        read = 0
        for i, source in enumerate(stack.sources):
            read += source.read_band(whole, frame)
            if rgb and source.info.samples in (3, 4):
                swap_red_blue(frame, inplace=True)  # stored RGB(A) to the state's OpenCV order
            acc.add(frame[:, :, 0] if stack.shape[2] == 1 else frame, None if weights is None else weights[i])
            if i == 0:
                self._check_budget(frame.nbytes)
            if progress is not None:
                progress(Progress(i + 1, stack.count, read, 0, 1))
        del frame
        result = acc.result()
        left = max(MIN_OUTPUT_BUDGET, self.options.max_memory - total(acc.declare()))
        output = self.options.replace(weights=None, state=None, max_memory=left, method="mean")
        with atomic_output(self.state) as fh:
            acc.write(fh)
            with FileJob([result], self.out, output) as job:
                report = job.run(None, start, log_summary=False)
        report = Report(**{**report.__dict__, "frames": acc.count, "bytes_read": read})
        log.info("%s", report.summary())
        log.info(
            "state %s: %d frames (%d from this run), %s", self.state, acc.count, acc.count - self.before,
            format_size(os.path.getsize(self.state)),
        )
        return report

    def close(self) -> None:
        """Release every input."""
        self.stack.close()

    def __enter__(self) -> "StateJob":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_state_cli(
    inputs: Sequence[InputSpec], output: str, options: JobOptions, *, dry_run: bool, bar: bool, label: str,
    start: float,
) -> int:
    """The command line's ``--state`` run (or ``--dry-run``); returns the exit code."""
    with StateJob(inputs, output, options) as job:
        if dry_run:
            print("\n".join(job.describe()))
            return 0
        for line in job.describe():
            log.info("%s%s", label, line)
        progress = None
        if bar:
            from .cli.progress import ProgressBar

            progress = ProgressBar(desc=os.path.basename(output))
        try:
            job.run(progress, start)
        finally:
            if progress is not None:
                progress.close()
    return 0
