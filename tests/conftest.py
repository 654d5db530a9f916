"""Shared helpers for the avgstack test suite.

Every image is generated with a seeded numpy generator into ``tmp_path``.
References are computed here independently of avgstack: exact means with
Python integers and fractions, weighted sums with ``math.fsum``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import tifffile

import avgstack

#: Folder that holds the ``avgstack`` package under test, so that subprocesses
#: run the same code as the test process.
PACKAGE_ROOT = str(Path(avgstack.__file__).resolve().parents[1])


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator; each test gets the same stream."""
    return np.random.default_rng(20240531)


# -- images ---------------------------------------------------------------------


def random_image(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Random samples over the whole range of an integer ``dtype``, or varied floats."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 1000).astype(dtype)


def varied_floats(rng: np.random.Generator, shape, dtype, *, specials: bool = True, headroom: int = 0) -> np.ndarray:
    """Finite floats of both signs over the exponent range of ``dtype``, with -0.0, +-inf and subnormals.

    Magnitudes reach the largest finite value, or ``2**-headroom`` of it (so
    that sums of a few of them stay finite even in float64).
    """
    dtype = np.dtype(dtype)
    info = np.finfo(dtype)
    n = int(np.prod(shape))
    mant = rng.uniform(1.0, 2.0, n)
    top = info.maxexp - headroom
    exp = rng.integers(info.minexp - info.nmant, top, n)  # subnormal .. max
    values = np.ldexp(mant, exp)
    values = np.where(rng.random(n) < 0.5, -values, values)
    with np.errstate(over="ignore"):
        out = values.astype(dtype)
    largest = dtype.type(np.ldexp(float(info.max), -headroom))
    out[~np.isfinite(out)] = largest  # mantissa rounding can overflow at the top exponent
    if specials and n >= 8:
        out[:8] = np.array([-0.0, 0.0, np.inf, -np.inf, largest, -largest, info.tiny, info.smallest_subnormal], dtype)
    return out.reshape(shape)


def write_tiff(path, data, **kwargs) -> str:
    """Write ``data`` with tifffile (RGB order for colour) and return the path as str."""
    tifffile.imwrite(path, data, **kwargs)
    return str(path)


def read_tiff(path) -> np.ndarray:
    """Read a TIFF's first page as stored (RGB order)."""
    return tifffile.imread(path)


def bgr(rgb: np.ndarray) -> np.ndarray:
    """RGB(A) to OpenCV's BGR(A); other channel counts pass through."""
    if rgb.ndim == 3 and rgb.shape[2] in (3, 4):
        order = [2, 1, 0] + ([3] if rgb.shape[2] == 4 else [])
        return rgb[..., order]
    return rgb


# -- references -----------------------------------------------------------------


def round_half_even(value: Fraction) -> int:
    """Python's ``round`` on a Fraction rounds half to even, exactly."""
    return round(value)


def exact_int_mean(frames, out_dtype=None) -> np.ndarray:
    """Exact mean of integer frames, rounded half to even, saturated to ``out_dtype``.

    Uses Python integers elementwise: slow, for small frames only.
    """
    frames = [np.asarray(f) for f in frames]
    out_dtype = np.dtype(out_dtype or frames[0].dtype)
    n = len(frames)
    total = sum(f.astype(object) for f in frames)
    flat = [round_half_even(Fraction(int(s), n)) for s in np.ravel(total)]
    if out_dtype.kind in "ui":
        info = np.iinfo(out_dtype)
        flat = [min(max(v, int(info.min)), int(info.max)) for v in flat]
        return np.array(flat, dtype=out_dtype).reshape(frames[0].shape)
    return np.array([float(Fraction(int(s), n)) for s in np.ravel(total)]).astype(out_dtype).reshape(
        frames[0].shape
    )


def exact_int_mean_fast(frames) -> np.ndarray:
    """Exact mean of integer frames rounded half to even, for large frames.

    The int64 sum is exact; with sums below 2**40 and fewer than 2**10
    frames the float64 quotient is within 2**-12 of the exact one while a
    non-tie is at least 2**-11 away from a tie, and a tie ``k + 1/2`` is
    itself representable, so ``rint`` of the float64 quotient is the exactly
    rounded mean.
    """
    n = len(frames)
    total = np.zeros(np.shape(frames[0]), np.int64)
    for f in frames:
        total += f
    assert n < 2**10 and int(np.abs(total).max()) < 2**40
    return np.rint(total / n)


def correctly_rounded(value: Fraction, dtype) -> float:
    """Round an exact rational to the nearest ``dtype`` float, ties to even."""
    dtype = np.dtype(dtype)
    guess = dtype.type(float(value))  # may be off by one unit after double rounding
    if not np.isfinite(guess):
        return guess
    best, best_err = None, None
    for cand in (np.nextafter(guess, dtype.type(-np.inf)), guess, np.nextafter(guess, dtype.type(np.inf))):
        if not np.isfinite(cand):
            continue
        err = abs(Fraction(float(cand)) - value)
        even = int(np.array(cand, dtype).view(f"u{dtype.itemsize}")) % 2 == 0
        if best is None or err < best_err or (err == best_err and even):
            best, best_err = cand, err
    return best


def exact_float_mean(frames, out_dtype=None) -> np.ndarray:
    """Exact mean of finite float frames, correctly rounded to ``out_dtype``. Small frames only."""
    frames = [np.asarray(f) for f in frames]
    out_dtype = np.dtype(out_dtype or frames[0].dtype)
    n = len(frames)
    flat = [f.ravel() for f in frames]
    out = np.empty(flat[0].size, out_dtype)
    for i in range(out.size):
        exact = sum((Fraction(float(f[i])) for f in flat), Fraction(0)) / n
        out[i] = correctly_rounded(exact, out_dtype)
    return out.reshape(frames[0].shape)


def weighted_reference(frames, weights) -> np.ndarray:
    """``sum(w_i * x_i)`` per sample with math.fsum (correctly rounded float64)."""
    frames = [np.asarray(f, np.float64).ravel() for f in frames]
    out = np.array([math.fsum(w * f[i] for w, f in zip(weights, frames)) for i in range(frames[0].size)])
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes (so -0.0 differs from 0.0 and NaN payloads count)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_bits(result: np.ndarray, expected: np.ndarray) -> None:
    """Assert bit-for-bit equality, with a readable message when it fails."""
    result, expected = np.asarray(result), np.asarray(expected)
    assert result.dtype == expected.dtype, (result.dtype, expected.dtype)
    assert result.shape == expected.shape, (result.shape, expected.shape)
    if result.tobytes() != expected.tobytes():
        r = result.reshape(-1).view(f"u{result.itemsize}") if result.dtype.kind == "f" else result.reshape(-1)
        e = expected.reshape(-1).view(f"u{expected.itemsize}") if expected.dtype.kind == "f" else expected.reshape(-1)
        bad = np.flatnonzero(r != e)
        i = bad[0]
        raise AssertionError(
            f"{bad.size} of {r.size} samples differ; first at flat index {i}: "
            f"got {result.reshape(-1)[i]!r}, expected {expected.reshape(-1)[i]!r}"
        )


def budget_for_bands(inputs, out, minimum_bands=3, **options) -> int:
    """A budget (bytes) under which ``average_to_file`` plans at least ``minimum_bands`` bands.

    Asks avgstack's own planner (``plan_to_file``, headers only) for the
    smallest budget it accepts, where bands are shortest, so that tests can
    force several bands without copying the sizes of its buffers.
    """
    def fits(budget: int):
        try:
            return avgstack.plan_to_file(inputs, out, max_memory=budget, **options)
        except avgstack.BudgetError:
            return None

    lo, hi = 1, 2**32
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    plan = fits(lo)
    if plan is None or plan.bands < minimum_bands:
        pytest.fail("no budget gives several bands; the images are too small for this test")
    return lo


# -- running the command line ---------------------------------------------------


def cli_env() -> dict:
    """Environment for ``python -m avgstack`` subprocesses running the package under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_cli(args, *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m avgstack ARGS`` and return the completed process (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "avgstack", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
        **kwargs,
    )


# -- peak memory of a subprocess ------------------------------------------------------


#: Runs a command and writes its peak RSS (KiB on Linux) to a file. The launcher is tiny, so
#: the command, forked from it, does not inherit a large resident set to its high-water mark,
#: as it would if forked from the pytest process itself.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def peak_rss_of(args, tmp_path) -> tuple[int, int, str]:
    """Run ``python ARGS`` and return (exit code, peak RSS in bytes, stderr)."""
    report = tmp_path / f"peak-{os.urandom(4).hex()}.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(report), sys.executable, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=cli_env(), timeout=300,
    )
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    peak = int(report.read_text()) * scale
    return proc.returncode, peak, proc.stderr.decode(errors="replace")


@pytest.fixture(scope="session")
def baseline(tmp_path_factory) -> int:
    """Peak RSS of a process that only imports avgstack and its libraries: what the budget comes on top of."""
    code, peak, stderr = peak_rss_of(
        ["-c", "import numpy, cv2, tifffile, avgstack, avgstack.cli, avgstack.__main__"],
        tmp_path_factory.mktemp("baseline"),
    )
    assert code == 0, stderr
    return peak
