"""Issue 14, "Nothing lost, nothing garbled": the cases an unlucky or hostile user found.

Each test runs the real ``python -m avgstack`` (or, where a fault must be injected,
a small wrapper around ``avgstack.cli.main`` in a subprocess) and asserts what the
README promises: the documented exit code, exactly one ``avgstack: error:`` line on
stderr naming the file (no traceback), and the files left behind: inputs and the
previous output untouched, no temporary file, nothing created that should not be.

The cases, by test name prefix:

- ``test_batch_*``: batch files with values of the wrong type, too deep, not UTF-8,
  NaN weights, absurd tile or thread counts: exit 2 naming the file and the key;
  one job failing for any reason fails alone, and the summary is printed.
- ``test_list_*``: ``@list`` files that are not UTF-8 (Latin-1 names, UTF-16).
- ``test_removed_input_*``: an input deleted while the run reads it.
- ``test_cleanup_*``: the stale-temporary-file cleanup (inputs, other hosts, other
  PID namespaces, live writers).
- ``test_log_file_*``: ``--log-file`` that cannot be written.
- ``test_metadata_*``: carried TIFF tags that tifffile would refuse as they are.
- ``test_encoder_*``: limits of OpenCV's encoders, and their own temporary files.
- ``test_signal_at_start_*``: Ctrl-C or SIGTERM while the command starts.
- ``test_name_*``: names with control characters or bytes that are not UTF-8.
- ``test_stdout_*``: stdout closed early.
- ``test_output_*``: symbolic links, permission bits, long names, non-regular files.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from clihelpers import (
    ERROR_RE,
    cli_command,
    cli_env,
    describe,
    make_frames,
    mean_reference,
    read,
    run,
    temp_files,
)

PREVIOUS = b"previous output: must survive\n"


# -- helpers -------------------------------------------------------------------------------------


def one_error(result, code: int, *needles: str) -> str:
    """Exit ``code``, nothing on stdout, exactly one error line on stderr holding every needle."""
    assert result.returncode == code, describe(result)
    assert result.stdout == "", describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert ERROR_RE.match(lines[0]), describe(result)
    for needle in needles:
        assert needle in lines[0], f"{needle!r} missing\n{describe(result)}"
    return lines[0]


def files(folder) -> list[str]:
    """Every name in ``folder``, sorted (hidden temporary files included)."""
    return sorted(os.listdir(folder))


def state(path) -> tuple:
    st = os.lstat(path)
    data = Path(path).read_bytes() if stat.S_ISREG(st.st_mode) else None
    return st.st_ino, st.st_mode, st.st_mtime_ns, data


@pytest.fixture
def two(tmp_path):
    """Two RGB frames a.tif and b.tif in tmp_path/in, and tmp_path/out holding a previous out.tif."""
    frames = make_frames(tmp_path / "in", ["a.tif", "b.tif"], seed=14)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "out.tif"
    out.write_bytes(PREVIOUS)
    paths = [str(tmp_path / "in" / "a.tif"), str(tmp_path / "in" / "b.tif")]
    return paths, frames, out


def run_wrapped(script: str, args, *, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run ``python -c SCRIPT ARGS`` (a wrapper that patches avgstack, then calls its main)."""
    result = subprocess.run(
        [sys.executable, "-c", script, *[os.fspath(a) for a in args]],
        stdin=subprocess.DEVNULL, capture_output=True, env=env or cli_env(), timeout=timeout,
    )
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


# -- batch files ---------------------------------------------------------------------------------

JOB = '[[jobs]]\noutput = "out.tif"\ninputs = ["in/a.tif", "in/b.tif"]\n'


@pytest.mark.parametrize(
    "text, needles",
    [
        ('compression = []\n' + JOB, ["compression", "got []"]),
        ('compression = {a = 1}\n' + JOB, ["compression"]),
        ('dtype = ["uint8"]\n' + JOB, ["dtype"]),
        (JOB + 'compression = {}\n', ["job 1", "compression"]),
        (JOB + 'weights = "1, 1"\n', ["job 1", "weights"]),
        (JOB + 'tile = "256"\n', ["job 1", "tile"]),
        (JOB + 'max_memory = []\n', ["job 1", "max_memory"]),
        ('[[jobs]]\noutput = ["out.tif"]\ninputs = ["in/a.tif"]\n', ["job 1", "output"]),
        ('[[jobs]]\noutput = "out.tif"\ninputs = [["in/a.tif"]]\n', ["job 1", "inputs[1]"]),
        ('[[jobs]]\noutput = "o\\u0000.tif"\ninputs = ["in/a.tif"]\n', ["job 1", "output", "NUL"]),
        ('[[jobs]]\noutput = "out.tif"\ninputs = ["in/a\\u0000.tif"]\n', ["job 1", "inputs[1]", "NUL"]),
    ],
    ids=["compression-array", "compression-table", "dtype-array", "job-compression-table", "weights-string",
         "tile-string", "max-memory-array", "output-array", "inputs-nested", "output-nul", "input-nul"],
)
def test_batch_value_of_the_wrong_type_exits_2_naming_file_and_key(two, text, needles):
    paths, _, out = two
    batch = out.parent.parent / "jobs.toml"
    batch.write_text(text)
    before = {p: state(p) for p in [*paths, out]}
    result = run(["--batch", batch])
    one_error(result, 2, "jobs.toml", *needles)
    assert {p: state(p) for p in [*paths, out]} == before
    assert files(out.parent) == ["out.tif"]


def test_batch_deeply_nested_arrays_exit_2_naming_the_file(two):
    paths, _, out = two
    batch = out.parent.parent / "jobs.toml"
    batch.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n" + JOB)
    one_error(run(["--batch", batch]), 2, "jobs.toml", "nest more than 64 deep")
    assert files(out.parent) == ["out.tif"]


def test_batch_file_that_is_not_utf8_exits_2_naming_file_and_line(two):
    _, _, out = two
    batch = out.parent.parent / "jobs.toml"
    batch.write_bytes(b'# nightly\ndtype = "uint8"\n# caf\xe9\n' + JOB.encode())
    one_error(run(["--batch", batch]), 2, "jobs.toml", "line 3", "UTF-8")
    assert out.read_bytes() == PREVIOUS


@pytest.mark.parametrize("weight", ["nan", "inf", "-inf", "1e999"])
def test_batch_nan_or_infinite_weight_exits_2_before_any_job(two, weight):
    _, _, out = two
    batch = out.parent.parent / "jobs.toml"
    batch.write_text('[[jobs]]\noutput = "other.tif"\ninputs = ["in/a.tif"]\n'
                     + JOB + f"weights = [1.0, {weight}]\n")
    one_error(run(["--batch", batch]), 2, "jobs.toml", "job 2", "weights", "finite")
    assert files(out.parent) == ["out.tif"], "no job runs when the batch file is invalid"


@pytest.mark.parametrize(
    "line, key",
    [(f"tile = {2**70}", "tile"), (f"tile = {2**62}", "tile"), ("tile = 0", "tile"), ("tile = 65552", "tile"),
     ("threads = -1", "threads"), ("threads = 0", "threads")],
)
def test_batch_absurd_tile_or_thread_count_exits_2(two, line, key):
    _, _, out = two
    batch = out.parent.parent / "jobs.toml"
    batch.write_text(line + "\n" + JOB)
    one_error(run(["--batch", batch], timeout=60), 2, "jobs.toml", key)
    assert files(out.parent) == ["out.tif"]


@pytest.mark.parametrize("args", [["-j", "0"], ["--tile", str(2**70)], ["--tile", "0"]])
def test_batch_and_command_line_share_the_count_limits(two, args):
    paths, _, out = two
    one_error(run(["-o", out, *paths, *args], timeout=60), 2, args[0])
    assert out.read_bytes() == PREVIOUS


def test_batch_job_with_a_bad_list_file_fails_alone_and_the_summary_is_printed(two):
    paths, frames, out = two
    root = out.parent.parent
    (root / "utf16.txt").write_bytes("in/a.tif\nin/b.tif\n".encode("utf-16-le"))  # no byte-order mark
    batch = root / "jobs.toml"
    batch.write_text('[[jobs]]\noutput = "out/first.tif"\ninputs = ["@utf16.txt"]\n'
                     '[[jobs]]\noutput = "out/second.tif"\ninputs = ["in/a.tif", "in/b.tif"]\n')
    result = run(["--batch", batch])
    assert result.returncode == 1, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr, describe(result)
    assert lines[0].startswith("avgstack: error: job 1 (") and "utf16.txt" in lines[0], describe(result)
    assert "internal error" not in result.stderr
    assert lines[1].endswith("jobs.toml: 1 done, 0 skipped, 1 failed"), describe(result)
    assert files(out.parent) == ["out.tif", "second.tif"]
    np.testing.assert_array_equal(read(out.parent / "second.tif"), mean_reference(frames))


_FAIL_FIRST_JOB = """
import sys
import avgstack.cli as cli
_expand = cli.expand_inputs
def expand(items, *args, **kwargs):
    if list(items) == ["in/a.tif"]:  # job 1
        raise RuntimeError("injected bug")
    return _expand(items, *args, **kwargs)
cli.expand_inputs = expand
sys.exit(cli.main(sys.argv[1:]))
"""


def test_batch_job_hitting_an_internal_error_fails_alone(two):
    paths, frames, out = two
    root = out.parent.parent
    batch = root / "jobs.toml"
    batch.write_text('[[jobs]]\noutput = "out/first.tif"\ninputs = ["in/a.tif"]\n'
                     '[[jobs]]\noutput = "out/second.tif"\ninputs = ["in/a.tif", "in/b.tif"]\n')
    result = run_wrapped(_FAIL_FIRST_JOB, ["--batch", batch])
    assert result.returncode == 1, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr, describe(result)
    assert "job 1 (" in lines[0] and "internal error: RuntimeError: injected bug" in lines[0]
    assert lines[1].endswith("1 done, 0 skipped, 1 failed")
    assert files(out.parent) == ["out.tif", "second.tif"]


# -- list files ----------------------------------------------------------------------------------


def test_list_file_in_latin1_opens_the_files_with_those_bytes(tmp_path):
    frames = make_frames(tmp_path, ["a.tif", "b.tif"], seed=3)
    latin = os.fsdecode(b"caf\xe9.tif")  # a name whose bytes are not UTF-8
    os.rename(tmp_path / "b.tif", tmp_path / latin)
    (tmp_path / "list.txt").write_bytes(b"a.tif\ncaf\xe9.tif\n")
    result = run(["-o", tmp_path / "avg.tif", f"@{tmp_path / 'list.txt'}"])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    np.testing.assert_array_equal(read(tmp_path / "avg.tif"), mean_reference(frames))


@pytest.mark.parametrize("encoding, bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                                           ("utf-8", b"\xef\xbb\xbf"), ("utf-32-le", b"\xff\xfe\x00\x00")])
def test_list_file_with_a_byte_order_mark_is_decoded_as_it_says(tmp_path, encoding, bom):
    frames = make_frames(tmp_path, ["a.tif", "é.tif"], seed=4)
    (tmp_path / "list.txt").write_bytes(bom + "a.tif\r\n# comment\r\né.tif\r\n".encode(encoding))
    result = run(["-o", tmp_path / "avg.tif", f"@{tmp_path / 'list.txt'}"])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    np.testing.assert_array_equal(read(tmp_path / "avg.tif"), mean_reference(frames))


@pytest.mark.parametrize("data", ["a.tif\nb.tif\n".encode("utf-16-le"), b"a.tif\n\x00\x01\x02binary"],
                         ids=["utf16-without-mark", "binary"])
def test_list_file_with_nul_bytes_exits_2_naming_the_list(two, data):
    paths, _, out = two
    listing = out.parent.parent / "in" / "list.txt"
    listing.write_bytes(data)
    one_error(run(["-o", out, f"@{listing}"]), 2, "@", "list.txt", "not a text list file")
    assert files(out.parent) == ["out.tif"] and out.read_bytes() == PREVIOUS


def test_list_file_with_a_lying_byte_order_mark_exits_2(two):
    _, _, out = two
    listing = out.parent.parent / "in" / "list.txt"
    listing.write_bytes(b"\xff\xfe" + "a.tif".encode("utf-16-le") + b"\x00\xdc")  # lone low surrogate
    one_error(run(["-o", out, f"@{listing}"]), 2, "list.txt", "UTF-16")
    assert out.read_bytes() == PREVIOUS


def test_list_file_from_a_pipe_names_paths_relative_to_the_current_folder(tmp_path):
    frames = make_frames(tmp_path, ["a.tif", "b.tif"], seed=6)
    result = subprocess.run(cli_command(["-o", "avg.tif", "@/dev/stdin"]), input=b"a.tif\nb.tif\n",
                            capture_output=True, env=cli_env(), cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    np.testing.assert_array_equal(read(tmp_path / "avg.tif"), mean_reference(frames))


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_list_file_that_never_ends_is_refused_not_read_into_memory(two):
    _, _, out = two
    one_error(run(["-o", out, "@/dev/zero"], timeout=60), 2, "@/dev/zero", "not a list file")
    assert out.read_bytes() == PREVIOUS


# -- an input removed while it is read -----------------------------------------------------------

_REMOVE_BEFORE_RUN = """
import os, sys
import avgstack.job as job
from avgstack.cli import main
victim = os.environ["AVGSTACK_TEST_REMOVE"]
_run = job.FileJob.run
def run(self, *args, **kwargs):
    os.unlink(victim)  # after every header was read, before any pixel is
    return _run(self, *args, **kwargs)
job.FileJob.run = run
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("kind", ["tif", "png"])
def test_removed_input_is_blamed_not_the_output(two, kind):
    paths, frames, out = two
    if kind == "png":
        import cv2

        victim = str(Path(paths[1]).with_suffix(".png"))
        cv2.imwrite(victim, frames[1][..., ::-1])
        paths = [paths[0], victim]
    else:
        victim = paths[1]
    env = dict(cli_env(), AVGSTACK_TEST_REMOVE=victim)
    before = state(paths[0])
    result = run_wrapped(_REMOVE_BEFORE_RUN, ["-o", out, *paths], env=env)
    line = one_error(result, 1, os.path.basename(victim), "read failed", "No such file")
    assert "out.tif" not in line and "write failed" not in line
    assert out.read_bytes() == PREVIOUS and files(out.parent) == ["out.tif"]
    assert state(paths[0]) == before


# -- stale temporary files -----------------------------------------------------------------------


def _temp_for(out, **fields) -> str:
    from avgstack.writing.atomic import temp_name

    return temp_name(str(out), **fields)


def test_cleanup_never_removes_an_input_named_like_a_temp_file(tmp_path):
    """Inputs named as old-format and as valid new-format temp files, and a link named like one."""
    out = tmp_path / "avg.tif"
    old_style = tmp_path / ".avg.tif.avgstack-999999-0000.tmp"
    new_style = Path(_temp_for(out, pid=4_000_000))  # valid name, nobody holds its lock
    frames = make_frames(tmp_path, ["x.tif", "y.tif"], seed=5)
    os.rename(tmp_path / "x.tif", old_style)
    os.rename(tmp_path / "y.tif", new_style)
    link = Path(_temp_for(out, pid=4_000_001))
    link.symlink_to(old_style)
    before = {p: state(p) for p in (old_style, new_style, link)}
    result = run(["-o", out, old_style, new_style])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert {p: state(p) for p in (old_style, new_style, link)} == before
    np.testing.assert_array_equal(read(out), mean_reference(frames))


def test_cleanup_removes_a_stale_temp_file_of_this_machine_and_keeps_other_machines(two):
    paths, _, out = two
    stale = Path(_temp_for(out, pid=4_000_000))
    stale.write_bytes(b"left by a killed run")
    elsewhere = Path(_temp_for(out, host="otherhost", kernel="0badcafe", pid=12))
    elsewhere.write_bytes(b"being written on another machine")
    forged = out.parent / (stale.name[:-8] + "00000000.tmp")  # our format, wrong hash: not ours
    forged.write_bytes(b"not made by avgstack")
    result = run(["-o", out, *paths])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert files(out.parent) == sorted(["out.tif", elsewhere.name, forged.name])


_HOLD_TEMP = """
import sys
from avgstack.writing.atomic import atomic_output
with atomic_output(sys.argv[1]) as fh:
    fh.write(b"live")
    fh.flush()
    print("writing", flush=True)
    if sys.stdin.readline().strip() != "finish":
        raise SystemExit(3)
"""


def _start_writer(out, prefix=()) -> subprocess.Popen:
    proc = subprocess.Popen([*prefix, sys.executable, "-c", _HOLD_TEMP, str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), text=True)
    line = proc.stdout.readline()
    if line.strip() != "writing":
        proc.kill()
        _, err = proc.communicate()
        pytest.skip(f"writer did not start: {err.strip()[-300:]}")
    return proc


def _kill_writer(proc: subprocess.Popen, namespace: bool) -> None:
    """SIGKILL the writing Python itself (inside a namespace: unshare's child, as this host numbers it)."""
    victims = [proc.pid]
    if namespace:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            victims = [int(pid) for pid in fh.read().split()] + victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)


def _unshare_works() -> bool:
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "--uts", "sh", "-c", "hostname probe-ns"],
                               capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.parametrize("namespace", [False, True], ids=["same-namespace", "other-pid-and-uts-namespace"])
def test_cleanup_keeps_the_live_temp_file_of_another_writer_and_removes_it_once_killed(two, namespace):
    """A writer in a container sharing the folder (own PID and host-name namespaces) keeps its file.

    Its pid means nothing here and its host name differs; only its lock says it is live. Once it is
    killed, the same kernel's next run removes its file.
    """
    paths, frames, out = two
    prefix = ()
    if namespace:
        if not _unshare_works():
            pytest.skip("cannot create PID and UTS namespaces here (unshare)")
        prefix = ("unshare", "--pid", "--fork", "--uts", "--kill-child", "sh", "-c",
                  'hostname container-14 && exec "$0" "$@"')
    writer = _start_writer(out, prefix)
    try:
        temps = temp_files(out.parent)
        assert len(temps) == 1, files(out.parent)
        live = out.parent / temps[0]
        if namespace:
            assert ".avgstack-container-14-" in live.name
        before = state(live)
        result = run(["-o", out, *paths])
        assert result.returncode == 0 and result.stderr == "", describe(result)
        assert state(live) == before, "the live temporary file of another writer was touched"
    finally:
        _kill_writer(writer, namespace)
    assert temp_files(out.parent) == temps, "a killed writer leaves its file"
    result = run(["-o", out, *paths])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert files(out.parent) == ["out.tif"]
    np.testing.assert_array_equal(read(out), mean_reference(frames))


def test_cleanup_temp_file_is_private_while_written_and_gets_the_previous_mode(tmp_path):
    from avgstack.writing.atomic import atomic_output

    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    with atomic_output(str(out)) as fh:
        (temp,) = temp_files(tmp_path)
        assert stat.S_IMODE(os.stat(tmp_path / temp).st_mode) & 0o077 == 0, "readable by others while written"
        fh.write(b"new")
    assert out.read_bytes() == b"new" and stat.S_IMODE(out.stat().st_mode) == 0o640
    assert files(tmp_path) == ["out.bin"]


# -- --log-file ----------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_log_file_on_a_full_disk_exits_2_with_one_line_before_doing_anything(two):
    paths, _, out = two
    result = run(["--log-file", "/dev/full", "-o", out, *paths])
    one_error(result, 2, "--log-file", "/dev/full", "disk full")
    assert out.read_bytes() == PREVIOUS and files(out.parent) == ["out.tif"]


_LOG_FILLS_UP = """
import errno, sys
import avgstack.cli.logs as logs

class Filling:
    def __init__(self, stream):
        self.stream, self.lines = stream, 0
    def write(self, text):
        self.lines += 1
        if self.lines > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.stream.write(text)
    def flush(self):
        self.stream.flush()
    def close(self):
        self.stream.close()

_open = logs._LogFile._open
logs._LogFile._open = lambda self: Filling(_open(self))
from avgstack.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_log_file_filling_up_during_the_run_gives_one_line_and_exit_1(two):
    paths, frames, out = two
    log = out.parent.parent / "run.log"
    result = run_wrapped(_LOG_FILLS_UP, ["-v", "--log-file", log, "-o", out, *paths])
    assert result.returncode == 1, describe(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("avgstack: error:")]
    assert len(errors) == 1 and "run.log" in errors[0] and "disk full" in errors[0], describe(result)
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr
    assert len(log.read_text().splitlines()) == 2
    np.testing.assert_array_equal(read(out), mean_reference(frames))  # the job itself was done
    assert files(out.parent) == ["out.tif"]


# -- carried metadata ----------------------------------------------------------------------------


def test_metadata_gdal_utf8_is_carried_as_its_bytes(tmp_path):
    text = '<GDALMetadata><Item name="Ort">Zürich – 東京</Item></GDALMetadata>'
    frames = []
    for i in range(2):
        data = np.full((20, 30, 3), 10 * i, np.uint8)
        tifffile.imwrite(tmp_path / f"g{i}.tif", data, photometric="rgb",
                         extratags=[(42112, 2, None, text.encode("utf-8"), True)])
        frames.append(data)
    result = run(["-o", tmp_path / "avg.tif", tmp_path / "g0.tif", tmp_path / "g1.tif"])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    with tifffile.TiffFile(tmp_path / "avg.tif") as tif:
        assert tif.pages[0].tags[42112].value == text
    np.testing.assert_array_equal(read(tmp_path / "avg.tif"), mean_reference(frames))


def test_metadata_tag_that_cannot_be_written_is_dropped_with_one_warning(caplog):
    from avgstack.writing.tiff import carried_tags

    good = (274, 3, 1, 1, True)
    utf8 = (42112, 2, 5, "Zürich", True)
    bad = [(33550, 12, 3, "not numbers", True), (34735, 3, 4, (1, 2, 70000, 4), True), (301, 99, 1, 1, True)]
    with caplog.at_level("WARNING", logger="avgstack"):
        kept = carried_tags([good, bad[0], utf8, bad[1], bad[2]])
    assert kept == [good, (42112, 2, 8, "Zürich".encode(), True)]
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all("dropped" in r.getMessage() for r in warnings)
    assert "33550" in warnings[0].getMessage() and "ModelPixelScale" in warnings[0].getMessage()


# -- encoder limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ext, shape, needle",
    [(".webp", (1, 16384, 3), "at most 16383"), (".webp", (16384, 1, 3), "at most 16383"),
     (".jpg", (1, 65501, 3), "at most 65500"), (".jp2", (31, 40, 3), "at least 32"),
     (".png", (1, 1_000_001), "at most 1000000")],
)
def test_encoder_size_limit_exits_2_before_reading_any_pixel(tmp_path, ext, shape, needle):
    data = np.zeros(shape, np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="rgb" if len(shape) == 3 else None)
    out = tmp_path / f"avg{ext}"
    out.write_bytes(PREVIOUS)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(cli_env(), TMPDIR=str(tmp))
    result = subprocess.run(cli_command(["-o", out, tmp_path / "a.tif", tmp_path / "a.tif"]),
                            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
    one_error(result, 2, f"avg{ext}", needle, "use a .tif output")
    assert out.read_bytes() == PREVIOUS
    assert files(tmp_path) == ["a.tif", f"avg{ext}", "tmp"] and files(tmp) == []


def test_encoder_jpeg2000_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    """OpenCV's JPEG 2000 encoder goes through a file ``/tmp/__opencv_temp.*`` (it ignores TMPDIR)."""
    import glob
    import tempfile

    from avgstack.errors import WriteError
    from avgstack.writing.opencv import write_opencv

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delenv("OPENCV_TEMP_PATH", raising=False)
    before = set(glob.glob("/tmp/__opencv_temp.*"))
    ok = io.BytesIO()
    write_opencv(ok, np.zeros((40, 40, 3), np.uint8), ".jp2", "ok.jp2")
    assert ok.getvalue()[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    with pytest.raises(WriteError, match="bad.jp2"):
        write_opencv(io.BytesIO(), np.zeros((8, 8, 3), np.uint8), ".jp2", "bad.jp2")  # OpenJPEG refuses
    assert set(glob.glob("/tmp/__opencv_temp.*")) <= before
    assert files(tmp) == []
    assert "OPENCV_TEMP_PATH" not in os.environ


# -- signals while starting ----------------------------------------------------------------------


def _caught(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_at_start_gives_one_line_and_the_exit_code(two, signum, code):
    """Sent while avgstack imports numpy and tifffile (its start-up handler is in place, main is not)."""
    paths, _, out = two
    proc = subprocess.Popen(cli_command(["-o", out, *paths]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 30
    while not _caught(proc.pid) & (1 << (signal.SIGTERM - 1)):  # Python itself never catches SIGTERM
        assert time.monotonic() < deadline and proc.poll() is None, "the start-up handler never appeared"
        time.sleep(0.0005)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(), stderr.decode())
    one_error(result, code, "output left as it was")
    assert out.read_bytes() == PREVIOUS and files(out.parent) == ["out.tif"]


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_signal_at_start_at_any_moment_never_gives_a_traceback(two):
    paths, _, out = two
    for delay in (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.45):
        proc = subprocess.Popen(cli_command(["-o", out, *paths]), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
        while proc.poll() is None and not _caught(proc.pid) & (1 << (signal.SIGTERM - 1)):
            time.sleep(0.0005)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(), stderr.decode())
        if proc.returncode == 0:  # finished first (a signal while Python exits is ignored)
            assert stderr == b"", describe(result)
            assert out.read_bytes() != PREVIOUS
            continue
        one_error(result, 130, "interrupted")
        assert temp_files(out.parent) == []


# -- names with control characters ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shown",
    [("a\nb.tif", "$'a\\nb.tif'"), ("x.tif\navgstack: error: forged", "$'x.tif\\navgstack: error: forged'"),
     ("tab\there.tif", "$'tab\\there.tif'"), ("red\x1b]0;title\x07.tif", "$'red\\E]0;title\\a.tif'"),
     (os.fsdecode(b"caf\xe9.tif"), "$'caf\\xe9.tif'"), ("it's\r.tif", "$'it\\'s\\r.tif'"),
     ("line\u2028sep.tif", "$'line\\xe2\\x80\\xa8sep.tif'")],
    ids=["newline", "forged-line", "tab", "escape", "latin1", "quote-cr", "unicode-separator"],
)
def test_name_with_control_characters_is_quoted_on_one_line(two, name, shown):
    paths, _, out = two
    result = run(["-o", "out.tif", paths[0], name], cwd=out.parent)  # the name as given, relative
    line = one_error(result, 2, f"error: {shown}: ", "no such file")
    assert line.startswith("avgstack: error: $'")  # a forged error line stays inside the quotes
    assert out.read_bytes() == PREVIOUS


def test_name_with_a_newline_works_as_output_and_in_the_log_and_plan(two):
    paths, frames, out = two
    odd = out.parent / "new\nline.tif"
    log = out.parent.parent / "run.log"
    result = run(["-v", "--log-file", log, "-o", odd, *paths])
    assert result.returncode == 0, describe(result)
    assert all(line.startswith("avgstack: ") for line in result.stderr.splitlines()), describe(result)
    assert "$'" in result.stderr and "new\\nline.tif" in result.stderr
    assert all(" INFO " in line for line in log.read_text().splitlines())
    np.testing.assert_array_equal(read(odd), mean_reference(frames))
    plan = run(["-n", "-o", odd, *paths])
    assert plan.returncode == 0 and "new\\nline.tif" in plan.stdout and "new\nline" not in plan.stdout


# -- stdout closed early -------------------------------------------------------------------------


def test_stdout_closed_early_ends_quietly_with_141(two):
    paths, _, out = two
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before avgstack writes: `avgstack --dry-run ... | true`
    try:
        proc = subprocess.run(cli_command(["--dry-run", "-o", out, *paths]), stdin=subprocess.DEVNULL,
                              stdout=write_end, stderr=subprocess.PIPE, env=cli_env(), timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert proc.stderr == b""
    assert out.read_bytes() == PREVIOUS and files(out.parent) == ["out.tif"]


# -- the output path ------------------------------------------------------------------------------


def test_output_symlink_is_written_through_atomically_and_stays_a_link(two):
    paths, frames, out = two
    real_dir = out.parent.parent / "real"
    real_dir.mkdir()
    target = real_dir / "avg.tif"
    target.write_bytes(PREVIOUS)
    link = out.parent / "latest.tif"
    link.symlink_to(os.path.relpath(target, link.parent))
    result = run(["-o", link, *paths])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    assert link.is_symlink() and os.readlink(link) == os.path.relpath(target, link.parent)
    np.testing.assert_array_equal(read(target), mean_reference(frames))
    assert files(real_dir) == ["avg.tif"] and files(out.parent) == ["latest.tif", "out.tif"]


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_output_symlink_to_nothing_exits_2(two, kind):
    paths, _, out = two
    link = out.parent / "latest.tif"
    if kind == "dangling":
        link.symlink_to("nowhere/avg.tif")
    else:
        link.symlink_to("latest.tif")
    one_error(run(["-o", link, *paths]), 2, "latest.tif")
    assert link.is_symlink() and files(out.parent) == ["latest.tif", "out.tif"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444, 0o664])
def test_output_keeps_the_previous_permission_bits(two, mode):
    paths, _, out = two
    out.chmod(mode)
    result = run(["-o", out, *paths])
    assert result.returncode == 0, describe(result)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert out.read_bytes() != PREVIOUS


def test_output_new_file_gets_the_umask_mode(two):
    paths, _, out = two
    new = out.parent / "new.tif"
    result = subprocess.run(["sh", "-c", 'umask 027 && exec "$@"', "sh", *cli_command(["-o", new, *paths])],
                            capture_output=True, text=True, env=cli_env(), timeout=60)
    assert result.returncode == 0, describe(result)
    assert stat.S_IMODE(new.stat().st_mode) == 0o640


@pytest.mark.parametrize("length", [244, 250, 255])
def test_output_long_legal_names_can_be_written(two, length):
    paths, frames, out = two
    name = "é" * 10 + "n" * (length - 20 - 4) + ".tif"  # 'é' is two bytes: `length` bytes in all
    assert len(os.fsencode(name)) == length
    result = run(["-o", out.parent / name, *paths])
    assert result.returncode == 0 and result.stderr == "", describe(result)
    np.testing.assert_array_equal(read(out.parent / name), mean_reference(frames))
    assert files(out.parent) == sorted(["out.tif", name])


def test_output_that_is_a_fifo_exits_2_and_stays_a_fifo(two):
    paths, _, out = two
    fifo = out.parent / "pipe.tif"
    os.mkfifo(fifo)
    one_error(run(["-o", fifo, *paths], timeout=60), 2, "pipe.tif", "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and files(out.parent) == ["out.tif", "pipe.tif"]


def test_output_link_to_a_device_is_refused_even_for_root(two):
    """As root, /dev is writable: renaming a file over /dev/null would replace the device."""
    paths, _, out = two
    link = out.parent / "null.tif"
    link.symlink_to("/dev/null")
    before = os.lstat("/dev/null")
    one_error(run(["-o", link, *paths]), 2, "null.tif", "not a regular file")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    assert not [n for n in os.listdir("/dev") if ".avgstack-" in n]


def test_output_write_errors_still_name_the_output(two):
    """A genuine write failure (no space) still blames the output (errno mapping unchanged)."""
    from avgstack.errors import WriteError
    from avgstack.writing.atomic import atomic_output

    _, _, out = two
    with pytest.raises(WriteError, match="out.tif: write failed \\(disk full\\)"):
        with atomic_output(str(out)):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert out.read_bytes() == PREVIOUS and files(out.parent) == ["out.tif"]
