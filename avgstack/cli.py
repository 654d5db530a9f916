"""Command line: ``python -m avgstack -o OUT [options] INPUT...``.

A thin layer over :func:`avgstack.average_to_file`: it parses arguments, sets
up logging, turns progress callbacks into a tqdm bar on a terminal, and maps
errors to exit codes. Nothing here computes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from . import __version__
from .api import average_to_file, default_threads
from .engine import DTYPES
from .errors import AvgstackError, UsageError
from .planning import DEFAULT_MAX_MEMORY, format_size, parse_size
from .writing.tiff import COMPRESSIONS

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE"]

log = logging.getLogger("avgstack")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

_EPILOG = f"""\
examples:
  mean of three frames:
    python -m avgstack -o avg.tif a.tif b.tif c.tif
  weighted sum (negative weights allowed):
    python -m avgstack -o avg.tif a.tif b.tif c.tif --weights 0.01 -0.002 -0.002
  the same with the weights first:
    python -m avgstack --weights=0.01,-0.002,-0.002 -o avg.tif a.tif b.tif c.tif
  second page of multi-page TIFFs, 16-bit output, LZW tiles, 2 GB budget:
    python -m avgstack -o avg.tif 'scan1.tif[1]' 'scan2.tif[1]' --dtype uint16 \\
        --compression lzw --tile 256 --max-memory 2GB

The mean is exact: integer results are the exactly computed mean rounded half
to even. Weighted sums are computed in float64, then rounded half to even and
saturated to the output type (the number of saturated samples is reported).

exit codes:
  0  success
  1  failure while processing (corrupt pixel data, disk full, ...)
  2  bad usage, or an input/output problem found before processing started
"""


class _WeightsAction(argparse.Action):
    """Collect weights given as separate values or comma-separated, or both."""

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


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser (also used to render ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="avgstack",
        description=(
            "Average a stack of images of any size, or combine them with weights, "
            "within a memory budget. TIFF inputs and outputs are streamed in bands of rows."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files: TIFF/BigTIFF (any layout; 'file.tif[N]' picks page N), "
                             "or PNG, JPEG, BMP, PNM, WebP, EXR, ... (decoded whole)")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="output file; .tif/.tiff streams, other extensions are encoded whole by OpenCV. "
                             "Written to a temporary file and renamed only on success")
    parser.add_argument("-w", "--weights", nargs="+", action=_WeightsAction, metavar="W",
                        help="one weight per input, e.g. --weights 0.01 -0.002 -0.002 or "
                             "--weights=0.01,-0.002,-0.002; the result is sum(w_i * input_i). "
                             "Without weights: the exact mean")
    parser.add_argument("--dtype", choices=DTYPES, metavar="TYPE",
                        help=f"output sample type ({', '.join(DTYPES)}); default: the inputs' type. "
                             "Integer results are rounded half to even and saturated")
    parser.add_argument("-m", "--max-memory", type=_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help=f"budget for pixel buffers, e.g. 64MiB, 2GB (default {format_size(DEFAULT_MAX_MEMORY)}); "
                             "peak memory stays below Python's baseline plus this")
    parser.add_argument("-c", "--compression", choices=list(COMPRESSIONS), default="none", metavar="NAME",
                        help=f"TIFF output compression: {', '.join(COMPRESSIONS)} (default none)")
    parser.add_argument("--tile", type=int, metavar="N",
                        help="write the TIFF in N x N tiles (N a multiple of 16) instead of strips, e.g. --tile 256")
    parser.add_argument("-j", "--threads", type=int, default=default_threads(), metavar="N",
                        help=f"inputs decoded at once (default {default_threads()}, this machine's cores up to 4)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--version", action="version", version=f"avgstack {__version__}")
    return parser


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("avgstack: %(levelname)s: %(message)s" if debug else "avgstack: %(message)s"))
    root = logging.getLogger("avgstack")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs:
        parser.error("no inputs given")
    _setup_logging(args.debug)
    try:
        average_to_file(
            args.inputs,
            args.output,
            args.weights,
            dtype=args.dtype,
            max_memory=args.max_memory,
            compression=args.compression,
            tile=args.tile,
            threads=args.threads,
        )
    except AvgstackError as err:
        if args.debug:
            log.exception("error")
        print(f"avgstack: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("avgstack: interrupted", file=sys.stderr)
        return EXIT_SIGINT
    except MemoryError:
        if args.debug:
            raise
        print("avgstack: error: out of memory; lower --max-memory or --threads", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
