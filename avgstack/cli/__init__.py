"""Command line: ``python -m avgstack -o OUT [options] INPUT...`` and ``--batch jobs.toml``.

A thin layer over :class:`avgstack.api.FileJob`: it expands inputs, sets up
logging, turns progress callbacks into a tqdm bar on a terminal, runs batch
files, and maps errors and signals to exit codes. Nothing here computes.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Sequence

from ..job import FileJob
from ..engine import clock
from ..errors import AvgstackError
from ..options import JobOptions
from .batch import is_up_to_date, load_batch
from .inputs import expand_inputs
from .logs import setup_logging
from .options import build_parser
from .progress import ProgressBar
from .signals import Terminated, terminate_raises

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_SIGINT", "EXIT_SIGTERM"]

log = logging.getLogger("avgstack")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def _run_job(output: str, inputs: list[str], options: dict, *, dry_run: bool, bar: bool, label: str) -> int:
    """Run (or plan) one job; errors propagate as AvgstackError."""
    start = clock()
    job_options = JobOptions.from_mapping(options)
    if job_options.state is not None:
        from ..statejob import run_state_cli

        return run_state_cli(inputs, output, job_options, dry_run=dry_run, bar=bar, label=label, start=start)
    from ..reading.frames import has_video

    if has_video(inputs):
        from ..iterables import run_frames_cli

        return run_frames_cli(inputs, output, job_options, dry_run=dry_run, bar=bar, label=label)
    with FileJob(inputs, output, job_options) as job:
        plan = job.describe()
        if dry_run:
            print("\n".join(plan.lines()))
            return EXIT_OK
        for line in plan.lines():
            log.info("%s%s", label, line)
        progress = ProgressBar(desc=os.path.basename(output)) if bar else None
        try:
            job.run(progress, start)
        finally:
            if progress is not None:
                progress.close()
    return EXIT_OK


def _cli_options(args) -> dict:
    options = {
        "weights": args.weights,
        "dtype": args.dtype,
        "max_memory": args.max_memory,
        "compression": args.compression,
        "tile": args.tile,
        "threads": args.threads,
        "scheduler_address": args.scheduler_address,
        "scheduler_file": args.scheduler_file,
        "state": args.state,
        "frames": args.frames,
        "sample": args.sample,
        "method": args.method,
        "percentile": args.percentile,
        "sigma_low": args.sigma_low,
        "sigma_high": args.sigma_high,
        "max_iters": args.max_iters,
        "nlow": args.nlow,
        "nhigh": args.nhigh,
        "ddof": args.ddof,
        "nodata": args.nodata,
        "renormalize": args.renormalize,
        "min_count": args.min_count,
        "alpha": args.alpha,
        "count_map": args.count_map,
    }
    return {k: v for k, v in options.items() if v is not None}


def _run_batch(args, bar: bool) -> int:
    jobs = load_batch(args.batch)
    base = os.path.dirname(os.path.abspath(args.batch))
    defaults = _cli_options(args)
    defaults.pop("weights", None)
    defaults.pop("count_map", None)  # one per job: set it in the batch file
    done = skipped = failed = 0
    for job in jobs:
        options = dict(defaults, **job.options)
        try:
            lists: list[str] = []
            inputs = expand_inputs(job.inputs, base, lists)
            if not args.force and not args.dry_run and is_up_to_date(job.output, [*inputs, *lists], args.batch):
                log.info("%s: skipped, output is newer than its inputs (--force redoes it)", job.name)
                skipped += 1
                continue
            log.info("%s: start, %d inputs", job.name, len(inputs))
            _run_job(job.output, inputs, options, dry_run=args.dry_run, bar=bar, label=f"{job.name}: ")
            done += 1
        except AvgstackError as err:
            _log_error(args, err, prefix=f"{job.name}: ")
            failed += 1
    level = logging.ERROR if failed else logging.WARNING if sys.stderr.isatty() else logging.INFO
    log.log(level, "batch %s: %d done, %d skipped, %d failed", args.batch, done, skipped, failed)
    return EXIT_FAILURE if failed else EXIT_OK


def _log_error(args, err: BaseException, prefix: str = "") -> None:
    log.error("%s%s", prefix, err)
    if args.debug:
        log.debug("%s", "".join(traceback.format_exception(err)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch:
        if args.inputs or args.output or args.weights:
            parser.error("--batch takes its inputs, outputs and weights from the batch file")
    else:
        if not args.output:
            parser.error("-o/--output is required")
        if not args.inputs:
            parser.error("no inputs given")
        if args.force:
            parser.error("--force goes with --batch")
    try:
        setup_logging(verbose=args.verbose, quiet=args.quiet, debug=args.debug, log_file=args.log_file)
    except OSError as err:
        parser.error(f"--log-file: cannot open {args.log_file} ({err.strerror or err})")
    bar = args.progress if args.progress is not None else (sys.stderr.isatty() and not args.quiet)
    with terminate_raises():
        try:
            log.info("start: avgstack %s", " ".join(sys.argv[1:] if argv is None else argv))
            if args.batch:
                return _run_batch(args, bar)
            inputs = expand_inputs(args.inputs)
            return _run_job(args.output, inputs, _cli_options(args), dry_run=args.dry_run, bar=bar, label="")
        except AvgstackError as err:
            _log_error(args, err)
            return err.exit_code
        except Terminated:
            log.error("terminated by SIGTERM; output left as it was")
            return EXIT_SIGTERM
        except KeyboardInterrupt:
            log.error("interrupted; output left as it was")
            return EXIT_SIGINT
        except MemoryError as err:
            _log_error(args, err, "out of memory; lower --max-memory or --threads ")
            return EXIT_FAILURE
        except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback only with --debug
            log.error("internal error: %s: %s (run with --debug for a traceback)", type(err).__name__, err)
            if args.debug:
                log.error("%s", "".join(traceback.format_exception(err)))
            return EXIT_FAILURE
