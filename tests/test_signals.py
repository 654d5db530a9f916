"""Signals during a run: the previous output survives, temporary files do not.

The stack (12 frames of 3000x3000 RGBA uint8, 412 MiB) is written once per
module. Runs use ``--max-memory 16MiB --threads 1`` (18 bands) and weights,
so that a run is still busy for about a second after its temporary file
``.OUT.avgstack-HOST-KERNEL-PID-TOKEN.tmp`` appears; the test polls for that file and
signals then.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from clihelpers import (
    ERROR_RE,
    TEMP_RE,
    assert_silent_success,
    cli_command,
    cli_env,
    describe,
    make_frames,
    run,
    temp_files,
)

pytestmark = pytest.mark.slow

FRAMES = 12
SHAPE = (3000, 3000, 4)
SLOW_OPTIONS = ["--max-memory", "16MiB", "--threads", "1"]
WEIGHTS = ["--weights", *[str(1 / FRAMES)] * FRAMES]
#: Seconds between seeing the temp file and signalling (the weighted run lasts about 1.4 s more).
SETTLE = 0.1


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory):
    """Twelve RGBA frames alternating between one random image and its upside-down copy."""
    folder = tmp_path_factory.mktemp("bigstack")
    base = np.random.default_rng(99).integers(0, 256, size=SHAPE, dtype=np.uint8)
    flipped = np.ascontiguousarray(base[::-1])
    paths = []
    for i in range(FRAMES):
        path = folder / f"frame{i:02d}.tif"
        tifffile.imwrite(path, flipped if i % 2 else base, photometric="rgb", extrasamples=["unassalpha"])
        paths.append(str(path))
    # the exact mean of 6 x base and 6 x flipped: (base + flipped) / 2, rounded half to even
    expected = np.rint((base.astype(np.int64) + flipped) / 2).astype(np.uint8)
    return paths, expected


def _start_and_wait_for_temp(args, out_dir: Path, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``python -m avgstack ARGS``; return once its temporary output file exists."""
    proc = subprocess.Popen(
        cli_command(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        temps = temp_files(out_dir)
        if temps:
            # Let the run get past creating the file: a signal in the very instant after the
            # temp file is created is test_issue_signal_right_after_temp_file_creation's subject.
            time.sleep(SETTLE)
            return proc, temps[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"finished (exit {proc.returncode}) before its temp file was seen: {out!r} {err!r}")
        time.sleep(0.002)
    proc.kill()
    proc.communicate()
    pytest.fail("no temporary output file appeared")


def _previous_output(out: Path) -> bytes:
    """Write a sentinel 'previous output' at OUT and return its bytes."""
    sentinel = b"previous output, must survive\n" + bytes(range(256)) * 64
    out.write_bytes(sentinel)
    return sentinel


@pytest.mark.parametrize(
    "signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_mid_run_exits_with_its_code_removes_temp_and_keeps_previous_output(
    big_stack, tmp_path, signum, code
):
    paths, _ = big_stack
    out = tmp_path / "avg.tif"
    previous = _previous_output(out)
    mtime = out.stat().st_mtime_ns
    proc, temp = _start_and_wait_for_temp([*SLOW_OPTIONS, "-o", out, *paths, *WEIGHTS], tmp_path)
    writer_pid = int(TEMP_RE.match(temp)["pid"])
    assert writer_pid == proc.pid, "the temporary name carries the writer's pid"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    stderr = stderr.decode()
    assert proc.returncode == code, f"exit {proc.returncode}: {stderr}"
    assert stdout == b""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and ERROR_RE.match(lines[0]), stderr
    assert temp_files(tmp_path) == [], "the temporary file must be removed"
    assert sorted(os.listdir(tmp_path)) == ["avg.tif"]
    assert out.read_bytes() == previous
    assert out.stat().st_mtime_ns == mtime


def test_after_sigkill_previous_output_is_intact_and_next_run_removes_stale_temp(big_stack, tmp_path):
    paths, expected = big_stack
    out = tmp_path / "avg.tif"
    previous = _previous_output(out)
    proc, temp = _start_and_wait_for_temp([*SLOW_OPTIONS, "-o", out, *paths, *WEIGHTS], tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # a killed process cannot clean up: its temp file stays, the output is untouched
    assert temp_files(tmp_path) == [temp]
    assert out.read_bytes() == previous

    result = run([*SLOW_OPTIONS, "-o", out, *paths])
    assert_silent_success(result, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["avg.tif"], "the stale temp file of the dead process is removed"
    np.testing.assert_array_equal(tifffile.imread(out), expected)


# The CLI's own entry point, with the temp file's ``open`` wrapped so that the signal arrives in the
# instant after the file is created, before avgstack's cleanup is armed. Under load a real signal
# does land there (seen as a leftover temp file after exit 143 while other tests ran).
_SIGNAL_AFTER_CREATE = """
import os, signal, sys
import avgstack.writing.atomic as atomic
from avgstack.cli import main
_open = open
def open_then_signal(path, mode="r", *args, **kwargs):
    fh = _open(path, mode, *args, **kwargs)
    if str(path).endswith(".tmp"):
        os.kill(os.getpid(), getattr(signal, os.environ["AVGSTACK_TEST_SIGNAL"]))
    return fh
atomic.open = open_then_signal
code = main(sys.argv[1:])
sys.exit(code if code else 99)  # 99: the temp file was not created through open(), nothing injected
"""


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_issue_signal_right_after_temp_file_creation_leaves_no_temp_file(tmp_path, name, code):
    """A signal just after ``.OUT.avgstack-*.tmp`` is created must still remove it.

    ``atomic_output`` creates the file with ``open(temp, "xb")`` before the
    ``try`` that unlinks it on any exception, so an exception raised by the
    signal handler at that point leaves the temp file behind (exit 143/130).
    """
    make_frames(tmp_path / "in", ["a.tif", "b.tif"], seed=7)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    previous = _previous_output(out_dir / "avg.tif")
    env = dict(cli_env(), AVGSTACK_TEST_SIGNAL=name)
    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_CREATE, "-o", str(out_dir / "avg.tif"),
         str(tmp_path / "in" / "a.tif"), str(tmp_path / "in" / "b.tif")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
    )
    if result.returncode == 99:
        pytest.fail("atomic_output no longer creates its temp file with open(): adapt the injection")
    assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stderr
    assert (out_dir / "avg.tif").read_bytes() == previous
    assert temp_files(out_dir) == [], "the interrupted run left its temporary file"
