"""Command line: ``python -m avgstack -o OUT [options] INPUT...`` and ``--batch jobs.toml``.

A thin layer over :class:`avgstack.api.FileJob`: it expands inputs, sets up
logging, turns progress callbacks into a tqdm bar on a terminal, runs batch
files, and maps errors and signals to exit codes. Nothing here computes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import traceback
from typing import Sequence

from .. import _startup
from ..engine import clock
from ..errors import AvgstackError
from ..job import FileJob
from ..options import JobOptions
from ..reading.tiff import split_page_suffix
from .batch import is_up_to_date, load_batch
from .inputs import expand_inputs
from .logs import clean, log_file_failure, quote_name, register_names, setup_logging
from .options import build_parser
from .progress import ProgressBar
from .signals import Terminated, terminate_raises

__all__ = [
    "main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_SIGPIPE",
]

log = logging.getLogger("avgstack")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_SIGPIPE = 141


def _run_job(output: str, inputs: list[str], options: dict, *, dry_run: bool, bar: bool, label: str) -> int:
    """Run (or plan) one job; errors propagate as AvgstackError."""
    start = clock()
    register_names([output, *inputs, *(split_page_suffix(i)[0] for i in inputs)])
    job_options = JobOptions.from_mapping(options)
    if job_options.state is not None:
        from ..statejob import run_state_cli

        return run_state_cli(inputs, output, job_options, dry_run=dry_run, bar=bar, label=label, start=start)
    from ..reading.frames import has_video
    from ..reading.videoframes import CUBE_METHODS

    if has_video(inputs) and job_options.method not in CUBE_METHODS:  # cube methods: the band engine, in passes
        from ..iterables import run_frames_cli

        return run_frames_cli(inputs, output, job_options, dry_run=dry_run, bar=bar, label=label)
    with FileJob(inputs, output, job_options) as job:
        plan = job.describe()
        if dry_run:
            sys.stdout.write("".join(clean(line) + "\n" for line in plan.lines()))
            sys.stdout.flush()
            return EXIT_OK
        for line in plan.lines():
            log.info("%s%s", label, line)
        progress = ProgressBar(desc=quote_name(os.path.basename(output))) if bar else None
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
    register_names([args.batch])
    jobs = load_batch(args.batch)
    base = os.path.dirname(os.path.abspath(args.batch))
    defaults = _cli_options(args)
    defaults.pop("weights", None)
    defaults.pop("count_map", None)  # one per job: set it in the batch file
    done = skipped = failed = 0
    for job in jobs:
        options = dict(defaults, **job.options)
        register_names([job.output, *job.inputs])
        try:
            lists: list[str] = []
            inputs = expand_inputs(job.inputs, base, lists)
            register_names(lists)
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
        except (KeyboardInterrupt, Terminated, BrokenPipeError):
            raise
        except MemoryError as err:
            _log_error(args, err, f"{job.name}: out of memory; lower --max-memory or --threads ")
            failed += 1
        except Exception as err:  # noqa: BLE001 - a bug in one job: that job fails alone
            _internal_error(args, err, prefix=f"{job.name}: ")
            failed += 1
    level = logging.ERROR if failed else logging.WARNING if sys.stderr.isatty() else logging.INFO
    log.log(level, "batch %s: %d done, %d skipped, %d failed", args.batch, done, skipped, failed)
    return EXIT_FAILURE if failed else EXIT_OK


def _log_error(args, err: BaseException, prefix: str = "") -> None:
    log.error("%s%s", prefix, err)
    if args.debug:
        log.debug("%s", "".join(traceback.format_exception(err)))


def _internal_error(args, err: BaseException, prefix: str = "") -> None:
    log.error("%sinternal error: %s: %s (run with --debug for a traceback)", prefix, type(err).__name__, err)
    if args.debug:
        log.debug("%s", "".join(traceback.format_exception(err)))


def _stdout_gone() -> int:
    """stdout was closed early (``--dry-run | head -1``): stop quietly, as a program killed by SIGPIPE."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return EXIT_SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        try:
            return _main(argv)
        finally:
            _settled()
            sys.stdout.flush()  # --help or a plan to a reader that went away fails here, not at exit
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt:  # outside the run itself: while starting or while reporting
        _say("interrupted; output left as it was")
        return EXIT_SIGINT
    except Terminated:
        _say("terminated by SIGTERM; output left as it was")
        return EXIT_SIGTERM


def _settled() -> None:
    """The outcome is decided: as the avgstack command, ignore Ctrl-C and SIGTERM while Python shuts down.

    Python resets its handlers to the default while it exits, so a signal then would end the process
    silently with another status than the one decided.
    """
    if _startup.is_command():
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                if signal.getsignal(signum) is _startup.exit_now:
                    signal.signal(signum, signal.SIG_IGN)


def _say(message: str) -> None:
    with contextlib.suppress(Exception):
        sys.stderr.write(f"avgstack: error: {message}\n")
        sys.stderr.flush()


def _main(argv: Sequence[str] | None) -> int:
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
    register_names([args.output, args.batch, args.log_file, *args.inputs])
    try:
        setup_logging(verbose=args.verbose, quiet=args.quiet, debug=args.debug, log_file=args.log_file)
    except (OSError, ValueError) as err:
        parser.error(f"--log-file: cannot open {args.log_file} ({getattr(err, 'strerror', None) or err})")
    bar = args.progress if args.progress is not None else (sys.stderr.isatty() and not args.quiet)
    with terminate_raises():
        log.info("start: avgstack %s", " ".join(quote_name(a) for a in (sys.argv[1:] if argv is None else argv)))
        failure = log_file_failure()
        if failure is not None:  # nothing done yet: a log that cannot be written is a usage problem
            log.error("--log-file: cannot write %s (%s)", args.log_file, _reason(failure))
            return EXIT_USAGE
        code = _run(args, argv, bar)
        failure = log_file_failure()
        if failure is not None:
            log.error("--log-file: writing %s failed (%s); later lines were not logged", args.log_file,
                      _reason(failure))
            code = code or EXIT_FAILURE
        return code


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return "disk full"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__


def _run(args, argv, bar: bool) -> int:
    try:
        if args.batch:
            return _run_batch(args, bar)
        inputs = expand_inputs(args.inputs)
        return _run_job(args.output, inputs, _cli_options(args), dry_run=args.dry_run, bar=bar, label="")
    except AvgstackError as err:
        _log_error(args, err)
        return err.exit_code
    except BrokenPipeError:
        raise
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
        _internal_error(args, err)
        return EXIT_FAILURE
