"""Helpers for the command-line tests (test_cli.py, test_batch.py, test_signals.py).

Every run is the real ``python -m avgstack`` in a subprocess, without a
terminal: stdin is /dev/null, stdout and stderr are pipes. Images are written
with seeded numpy generators into the test's ``tmp_path``; references are
computed here with numpy, independently of avgstack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

import avgstack

#: Folder holding the ``avgstack`` package under test; subprocesses import it from there.
PACKAGE_ROOT = str(Path(avgstack.__file__).resolve().parents[1])

#: Marks a tqdm bar leaves in its output.
BAR_MARKS = ("\r", "%|")

#: Temporary files the atomic writer creates beside OUT: ``.OUT.avgstack-HOST-KERNEL-PID-TOKEN.tmp``.
TEMP_RE = re.compile(r"^\..+\.avgstack-(?P<host>[A-Za-z0-9-]+)-[0-9a-f]{8}-(?P<pid>\d+)-[0-9a-f]{16}\.tmp$", re.DOTALL)

#: One error line as the README promises it.
ERROR_RE = re.compile(r"^avgstack: error: \S.*$")


def cli_env() -> dict:
    """Environment for subprocesses: the package under test first, no tqdm overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env.pop("PYTHONSTARTUP", None)
    return env


def cli_command(args) -> list[str]:
    """The argv of ``python -m avgstack ARGS``; each argument stays one argv element."""
    return [sys.executable, "-m", "avgstack", *[os.fspath(a) for a in args]]


def run(args, *, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m avgstack ARGS`` with no TTY anywhere; return the completed process.

    stdout and stderr are decoded without newline translation (``text=True``
    would turn tqdm's carriage returns into newlines and hide them).
    """
    result = subprocess.run(
        cli_command(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=cli_env(),
        cwd=cwd,
        timeout=timeout,
    )
    result.stdout = result.stdout.decode("utf-8", errors="replace")
    result.stderr = result.stderr.decode("utf-8", errors="replace")
    return result


def describe(result: subprocess.CompletedProcess) -> str:
    """Everything about a finished run, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"


def temp_files(folder) -> list[str]:
    """Leftover temporary output files in ``folder``."""
    return sorted(name for name in os.listdir(folder) if TEMP_RE.match(name))


def assert_no_bar_no_traceback(result: subprocess.CompletedProcess) -> None:
    """No progress bar (no carriage return, no tqdm ``%|``) and no traceback anywhere."""
    for stream in (result.stdout, result.stderr):
        for mark in BAR_MARKS:
            assert mark not in stream, f"progress-bar mark {mark!r} without a TTY\n{describe(result)}"
        assert "Traceback" not in stream, describe(result)


def assert_silent_success(result: subprocess.CompletedProcess, folder=None) -> None:
    """Exit 0, nothing on stdout or stderr, no temp file left in ``folder``."""
    assert result.returncode == 0, describe(result)
    assert result.stdout == "", describe(result)
    assert result.stderr == "", describe(result)
    if folder is not None:
        assert temp_files(folder) == []


def assert_one_error_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, empty stdout, exactly one ``avgstack: error:`` line on stderr containing ``needles``."""
    assert result.returncode == code, describe(result)
    assert result.stdout == "", describe(result)
    assert_no_bar_no_traceback(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert ERROR_RE.match(lines[0]), describe(result)
    for needle in needles:
        assert needle in lines[0], describe(result)
    return lines[0]


def error_lines(stderr: str) -> list[str]:
    """The ``avgstack: error:`` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("avgstack: error:")]


# -- images -----------------------------------------------------------------------


def make_frames(folder, names, shape=(24, 32, 3), dtype=np.uint8, seed=0) -> list[np.ndarray]:
    """Write one random TIFF per name into ``folder`` (created if needed); return the arrays (RGB order)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    frames = []
    for name in names:
        data = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
        tifffile.imwrite(folder / name, data, photometric="rgb" if len(shape) == 3 else None)
        frames.append(data)
    return frames


def read(path) -> np.ndarray:
    """An output TIFF's samples as stored (RGB order)."""
    return tifffile.imread(path)


def mean_reference(frames, dtype=None) -> np.ndarray:
    """Exact mean of integer frames, rounded half to even (int64 sum, then rint of a float64 quotient).

    For fewer than 1024 frames of 8/16-bit samples the float64 quotient is
    close enough that ``rint`` gives the exactly rounded mean.
    """
    total = np.zeros(np.shape(frames[0]), np.int64)
    for frame in frames:
        total += frame
    return np.rint(total / len(frames)).astype(dtype or frames[0].dtype)


def weighted_float(frames, weights) -> np.ndarray:
    """``sum(w_i * x_i)`` accumulated in float64, in input order."""
    acc = np.zeros(np.shape(frames[0]), np.float64)
    for w, frame in zip(weights, frames):
        acc += w * frame.astype(np.float64)
    return acc


def to_int(values: np.ndarray, dtype) -> tuple[np.ndarray, int]:
    """Round half to even and saturate to an integer ``dtype``; also return the clipped count."""
    info = np.iinfo(dtype)
    rounded = np.rint(values)
    clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
    return np.clip(rounded, info.min, info.max).astype(dtype), clipped


def snapshot(folder) -> dict[str, tuple[int, int, int]]:
    """Name -> (inode, size, mtime_ns) for every file in ``folder``: to tell a rewrite from a skip."""
    out = {}
    for name in sorted(os.listdir(folder)):
        st = os.stat(os.path.join(folder, name))
        out[name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def write_corrupt_tiff(path, data: np.ndarray) -> str:
    """A zlib-compressed TIFF with a valid header whose first strip is zeros: fails only when decoded."""
    tifffile.imwrite(path, data, photometric="rgb" if data.ndim == 3 else None, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    raw = bytearray(Path(path).read_bytes())
    raw[offset:offset + count] = bytes(count)
    Path(path).write_bytes(bytes(raw))
    return str(path)
