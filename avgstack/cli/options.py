"""The argument parser: every option, with help and examples."""

from __future__ import annotations

import argparse
import re

from .. import __version__
from ..engine import DTYPES
from ..errors import UsageError
from ..job import default_threads
from ..options import MAX_TILE, METHODS
from ..planning import DEFAULT_MAX_MEMORY, format_size, parse_size
from ..writing.tiff import COMPRESSIONS
from .logs import clean

__all__ = ["build_parser", "EPILOG"]

EPILOG = """\
examples:
  mean of three frames:
    python -m avgstack -o avg.tif a.tif b.tif c.tif
  weighted sum (negative weights allowed):
    python -m avgstack -o avg.tif a.tif b.tif c.tif --weights 0.01 -0.002 -0.002
  the same with the weights first:
    python -m avgstack --weights=0.01,-0.002,-0.002 -o avg.tif a.tif b.tif c.tif
  thousands of inputs from a list file or a quoted glob (expanded by avgstack, sorted):
    python -m avgstack -o avg.tif @frames.txt
    python -m avgstack -o avg.tif 'night/*.tif'
  every page of a multi-page TIFF (ImageJ stack, OME-TIFF series), or pages 10 to 19:
    python -m avgstack -o avg.tif 'stack.tif[:]'
    python -m avgstack -o avg.tif 'stack.tif[10:20]'
  second page of multi-page TIFFs, 16-bit output, LZW tiles, 2 GB budget:
    python -m avgstack -o avg.tif 'scan1.tif[1]' 'scan2.tif[1]' --dtype uint16 \\
        --compression lzw --tile 256 --max-memory 2GB
  median, 90th percentile, sigma-clipped mean, std with the sample estimate:
    python -m avgstack -o med.tif --method median 'night/*.tif'
    python -m avgstack -o p90.tif --method percentile --percentile 90 'night/*.tif'
    python -m avgstack -o clip.tif --method sigma-clip --sigma-low 3 --sigma-high 2.5 'night/*.tif'
    python -m avgstack -o std.tif --method std --ddof 1 'night/*.tif'
  GeoTIFFs with -9999 holes: mean of the valid frames, and how many there were:
    python -m avgstack -o dem.tif --nodata -9999 --count-map dem-count.tif tile_*.tif
  check a job without reading pixels or writing anything:
    python -m avgstack --dry-run -o avg.tif 'night/*.tif'
  the same stack on a Dask cluster (bit-identical output):
    python -m avgstack -o avg.tif 'night/*.tif' --scheduler-file ~/scheduler.json
  several stacks from a batch file (for cron):
    python -m avgstack --batch jobs.toml --log-file avgstack.log

The mean is exact: integer results are the exactly computed mean, rounded half
to even. Weighted sums are computed in float64, then rounded half to even and
saturated to the output type (the number of saturated samples is reported).

exit codes:
  0    success (and --dry-run)
  1    failure while processing (corrupt pixel data, disk full, a failed batch job)
  2    bad usage, or an input/output problem found before processing started
  130  interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM). Outputs are never
       left half-written: the previous output stays as it was.
  141  stdout closed early (e.g. --dry-run piped into head): nothing more is said.

A symbolic link given as OUT is written through (the link stays); the new file
keeps the previous output's permission bits.
"""


class _WeightsAction(argparse.Action):
    """Collect weights given as separate values, comma-separated, or both."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        weights = []
        for value in values:
            for part in str(value).split(","):
                part = part.strip()
                if not part:
                    continue
                try:
                    weights.append(float(part))
                except ValueError:
                    parser.error(
                        f"--weights: {part!r} is not a number (put --weights after the inputs, "
                        "or write --weights=W1,W2,...)"
                    )
        setattr(namespace, self.dest, weights)


def _count(top: int | None, multiple: int = 1):
    """An argparse type: an integer from 1 to ``top`` (None: any positive one), a multiple of ``multiple``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value <= 0 or top is not None and value > top:
            raise argparse.ArgumentTypeError(
                f"must be from 1 to {top}, got {value}" if top is not None else f"must be at least 1, got {value}"
            )
        if value % multiple:
            raise argparse.ArgumentTypeError(f"must be a multiple of {multiple}, got {value}")
        return value

    return parse


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


class _Parser(argparse.ArgumentParser):
    """One-line usage errors (exit 2), and weights such as ``-inf`` or ``-1e-3`` taken as numbers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE
        )

    def _parse_optional(self, arg_string):  # noqa: D102 - '-nan' is a number, not '-n an'
        if self._negative_number_matcher.match(arg_string):
            return None
        return super()._parse_optional(arg_string)

    def error(self, message: str):
        self.exit(2, f"avgstack: error: {clean(message)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (also renders ``--help``)."""
    parser = _Parser(
        prog="avgstack",
        description=(
            "Average a stack of images of any size, or combine them with weights, within a "
            "memory budget. TIFF inputs and outputs stream in bands of rows; the output is "
            "written to a temporary file and renamed over OUT only on success."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = parser.add_argument_group("inputs and output")
    io.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="image files: TIFF/BigTIFF in any layout ('scan.tif[N]' picks page N, 'scan.tif[:]' or "
                         "'scan.tif[A:B:STEP]' makes each page a frame), or PNG, "
                         "JPEG, BMP, PNM, PFM, HDR, WebP, GIF, JPEG 2000, Sun raster (decoded whole), or video "
                         "files (.avi, .mp4, .mkv, ...: each frame an input). '@list.txt' reads paths from a "
                         "file (one per line, '#' comments); quoted globs such as 'dir/*.tif' are expanded")
    io.add_argument("-o", "--output", metavar="OUT",
                    help="output file, e.g. avg.tif; .tif/.tiff streams, other extensions (.png, ...) "
                         "are encoded whole by OpenCV")
    io.add_argument("--batch", metavar="TOML",
                    help="run the jobs of a batch file instead (see README, 'Nightly batches')")
    io.add_argument("--force", action="store_true",
                    help="with --batch: redo jobs whose output is newer than their inputs")

    maths = parser.add_argument_group("what to compute")
    maths.add_argument("-w", "--weights", nargs="+", action=_WeightsAction, metavar="W",
                       help="one weight per input: the result is sum(w_i * input_i), e.g. "
                            "--weights 0.01 -0.002 -0.002 or --weights=0.01,-0.002,-0.002. "
                            "Without weights: the exact mean")
    maths.add_argument("--dtype", choices=DTYPES, metavar="TYPE",
                       help=f"output sample type: {', '.join(DTYPES)}; default: the inputs' type "
                            "(std/var: float32 for 8/16-bit integers, else float64), "
                            "e.g. --dtype float32 keeps fractions and negative sums")
    maths.add_argument("--method", choices=METHODS, default=None, metavar="NAME",
                       help=f"what to compute per sample over the inputs: {', '.join(METHODS)} "
                            "(default mean; see README 'Methods'), e.g. --method median")
    maths.add_argument("--percentile", type=float, metavar="P",
                       help="with --method percentile (required): 0 to 100, numpy's linear method, e.g. 90")
    maths.add_argument("--sigma-low", type=float, metavar="S",
                       help="with --method sigma-clip: reject values more than S standard deviations "
                            "below the median (default 3)")
    maths.add_argument("--sigma-high", type=float, metavar="S",
                       help="with --method sigma-clip: ... above the median (default 3)")
    maths.add_argument("--max-iters", type=int, metavar="N",
                       help="with --method sigma-clip: at most N clipping iterations (default 5)")
    maths.add_argument("--nlow", type=int, metavar="N",
                       help="with --method minmax: drop the N lowest values of each sample (default 1)")
    maths.add_argument("--nhigh", type=int, metavar="N",
                       help="with --method minmax: drop the N highest values of each sample (default 1)")
    maths.add_argument("--ddof", type=int, metavar="N",
                       help="with --method std or var: delta degrees of freedom, 1 for the sample "
                            "estimate (default 0)")

    maths.add_argument("--state", metavar="FILE",
                       help="running result across runs: load FILE if it exists, add this run's inputs, "
                            "save FILE and write OUT (both only on success), e.g. a nightly --state sums.npz")
    maths.add_argument("--frames", metavar="START:STOP:STEP",
                       help="frames of video inputs to use, in Python slice notation (STOP excluded), "
                            "e.g. --frames 100:1000:10")
    maths.add_argument("--sample", type=int, metavar="N",
                       help="use N evenly spaced frames of video inputs, e.g. --sample 25 for a background median")

    missing = parser.add_argument_group("missing data and alpha (README: 'Missing data')")
    missing.add_argument("--nodata", metavar="VALUE|nan|none",
                         help="samples equal to VALUE (nan: NaN samples) are left out and pixels with no valid "
                              "frame get VALUE, written as the output's GDAL_NODATA tag; default: the inputs' "
                              "GDAL_NODATA tag; 'none' averages every sample as a number")
    missing.add_argument("--renormalize", action="store_true", default=None,
                         help="weighted sums: scale by sum(w)/sum(valid w) where frames are missing")
    missing.add_argument("--min-count", type=int, metavar="K",
                         help="samples with fewer than K valid frames become nodata")
    missing.add_argument("--alpha", choices=("channel", "coverage"), default=None,
                         help="channel (default): alpha averaged like any channel; coverage: colour weighted "
                              "by alpha, fully transparent pixels left out")
    missing.add_argument("--count-map", metavar="PATH",
                         help="also write a TIFF of the number of frames that contributed to each sample")

    res = parser.add_argument_group("resources and output format")
    res.add_argument("-m", "--max-memory", type=_size, default=None, metavar="SIZE",
                     help=f"budget for pixel buffers, e.g. 64MiB or 2GB (default {format_size(DEFAULT_MAX_MEMORY)}); "
                          "peak memory stays below Python's own baseline plus this")
    res.add_argument("-c", "--compression", choices=list(COMPRESSIONS), default=None, metavar="NAME",
                     help=f"TIFF output compression: {', '.join(COMPRESSIONS)} (default none), e.g. -c zstd")
    res.add_argument("--tile", type=_count(MAX_TILE, 16), metavar="N",
                     help="write TIFF tiles of N x N (a multiple of 16, at most 65536) instead of strips, "
                          "e.g. --tile 256")
    res.add_argument("-j", "--threads", type=_count(None), default=None, metavar="N",
                     help=f"worker threads (default {default_threads()}: this machine's cores, "
                          "at most 4), e.g. -j 1 for the least memory")

    cluster = parser.add_argument_group("running on a Dask cluster (needs the avgstack[dask] extra)")
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--scheduler-address", metavar="ADDRESS",
                       help="run the bands as tasks on the Dask scheduler at ADDRESS, e.g. tcp://head:8786; "
                            "workers must see the inputs at the same paths. --max-memory then bounds each "
                            "task and this process")
    where.add_argument("--scheduler-file", metavar="PATH",
                       help="the same, with the scheduler's address read from PATH "
                            "(written by 'dask scheduler --scheduler-file PATH')")

    run = parser.add_argument_group("running")
    run.add_argument("-n", "--dry-run", action="store_true",
                     help="check inputs from their headers, print the plan, write nothing")
    verbosity = run.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="print the plan and a one-line summary at the end")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    bar = run.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="show a progress bar (default: only when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false",
                     help="never show a progress bar")
    run.add_argument("--log-file", metavar="PATH",
                     help="append timestamped log lines (start, plan, summary or error) to PATH, "
                          "whatever --quiet says")
    run.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    run.add_argument("--version", action="version", version=f"avgstack {__version__}")
    return parser
