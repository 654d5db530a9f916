"""The command line as a terminal user and cron see it: ``python -m avgstack`` in a subprocess.

Every run has no TTY (stdin /dev/null, stdout and stderr pipes) unless the
test says otherwise; tests check exit codes, stdout and stderr line by line,
the absence of progress bars and tracebacks, and the files left in the
output folder.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from clihelpers import (
    ERROR_RE,
    assert_no_bar_no_traceback,
    assert_one_error_line,
    assert_silent_success,
    cli_command,
    cli_env,
    describe,
    make_frames,
    mean_reference,
    read,
    run,
    snapshot,
    temp_files,
    to_int,
    weighted_float,
    write_corrupt_tiff,
)

README = Path(__file__).resolve().parents[1] / "README.md"
SUMMARY_RE = (
    r"avgstack: (?P<out>\S+): (?P<w>\d+)x(?P<h>\d+)x(?P<s>\d+) (?P<dtype>\w+), (?P<frames>\d+) frames, "
    r"[\d.]+ s, \d+ MB/s read, peak memory [\d.]+ [KMG]?i?B, (?P<clipped>\d+) clipped samples$"
)


@pytest.fixture
def stack(tmp_path):
    """Three 24x32 RGB uint8 frames a/b/c.tif in ``in/`` and an empty ``out/`` folder."""
    class Stack:
        pass

    s = Stack()
    s.inp = tmp_path / "in"
    s.out_dir = tmp_path / "out"
    s.out_dir.mkdir()
    s.frames = make_frames(s.inp, ["a.tif", "b.tif", "c.tif"], seed=1)
    s.paths = [str(s.inp / n) for n in ("a.tif", "b.tif", "c.tif")]
    s.out = str(s.out_dir / "avg.tif")
    return s


# -- silence, quiet, verbose --------------------------------------------------------------


def test_success_without_tty_is_silent_and_leaves_only_the_output(stack):
    result = run(["-o", stack.out, *stack.paths])
    assert_silent_success(result, stack.out_dir)
    assert os.listdir(stack.out_dir) == ["avg.tif"]
    np.testing.assert_array_equal(read(stack.out), mean_reference(stack.frames))


def test_clipping_is_reported_once_by_default_and_not_with_quiet(stack):
    # 1*a + 1*b + 1*c overflows uint8 in most samples
    expected, clipped = to_int(weighted_float(stack.frames, [1, 1, 1]), np.uint8)
    assert clipped > 0
    loud = run(["-o", stack.out, *stack.paths, "--weights", "1", "1", "1"])
    assert loud.returncode == 0, describe(loud)
    assert loud.stdout == ""
    assert_no_bar_no_traceback(loud)
    lines = loud.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("avgstack: warning:"), describe(loud)
    assert str(clipped) in lines[0]
    np.testing.assert_array_equal(read(stack.out), expected)

    quiet = run(["-q", "-o", stack.out, *stack.paths, "--weights", "1", "1", "1"])
    assert_silent_success(quiet, stack.out_dir)
    np.testing.assert_array_equal(read(stack.out), expected)


def test_quiet_still_prints_the_error(stack):
    missing = str(stack.inp / "missing.tif")
    result = run(["-q", "-o", stack.out, stack.paths[0], missing])
    assert_one_error_line(result, 2, "missing.tif")
    assert os.listdir(stack.out_dir) == []


def test_verbose_prints_plan_and_one_summary_line(stack):
    result = run(["-v", "-o", stack.out, *stack.paths])
    assert result.returncode == 0, describe(result)
    assert result.stdout == ""
    assert_no_bar_no_traceback(result)
    err = result.stderr
    plan_parts = ("inputs: 3 frames", "32x24", "uint8", "exact mean", "bands:", "rows", "memory:", "read:",
                  "write:")
    for needle in plan_parts:
        assert needle in err, f"{needle!r} missing from the -v plan\n{describe(result)}"
    summaries = [line for line in err.splitlines() if re.match(SUMMARY_RE, line)]
    assert len(summaries) == 1, describe(result)
    m = re.match(SUMMARY_RE, summaries[0])
    assert m["out"] == stack.out
    got = (m["w"], m["h"], m["s"], m["dtype"], m["frames"], m["clipped"])
    assert got == ("32", "24", "3", "uint8", "3", "0")
    assert err.splitlines()[-1] == summaries[0], "the summary is the last line"
    np.testing.assert_array_equal(read(stack.out), mean_reference(stack.frames))


def test_readme_weighted_example_matches_numpy_and_counts_clipped(stack):
    # exactly the README/--help command line, run in the inputs' folder
    args = ["-v", "-o", "avg.tif", "a.tif", "b.tif", "c.tif", "--weights", "0.01", "-0.002", "-0.002"]
    result = run(args, cwd=stack.inp)
    assert result.returncode == 0, describe(result)
    assert_no_bar_no_traceback(result)
    assert "weighted sum" in result.stderr
    expected, clipped = to_int(weighted_float(stack.frames, [0.01, -0.002, -0.002]), np.uint8)
    assert clipped > 0  # negative results saturate to 0
    # the contract for weighted integer results: within 1 unit of the float64 reference
    got = read(stack.inp / "avg.tif")
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.abs(got.astype(np.int64) - expected.astype(np.int64)).max() <= 1
    m = re.search(SUMMARY_RE, result.stderr, re.M)
    assert m is not None, describe(result)
    assert int(m["clipped"]) == clipped
    assert temp_files(stack.inp) == []


def test_readme_weighted_example_as_float32_keeps_negative_values(stack):
    weights = ["--weights", "0.01", "-0.002", "-0.002"]
    result = run(["-o", stack.out, *stack.paths, *weights, "--dtype", "float32"])
    assert_silent_success(result, stack.out_dir)
    got = read(stack.out)
    assert got.dtype == np.float32
    expected = weighted_float(stack.frames, [0.01, -0.002, -0.002]).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    assert (got < 0).any()


# -- dry run --------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(stack):
    Path(stack.out).write_bytes(b"previous output")
    before = snapshot(stack.out_dir)
    result = run(["--dry-run", "-o", stack.out, *stack.paths, "--max-memory", "64MiB"])
    assert result.returncode == 0, describe(result)
    assert result.stderr == "", describe(result)
    assert_no_bar_no_traceback(result)
    out = result.stdout
    for needle in (
        "inputs: 3 frames of 32x24 RGB uint8",
        "exact mean",
        f"output: {stack.out} (TIFF",
        "classic TIFF",
        "32x24x3 uint8",
        "of 24 rows",  # band height: the whole image in one band
        "memory:",
        "budget 64.0 MiB",
        "read:",
        "write:",
    ):
        assert needle in out, f"{needle!r} missing from the dry-run plan\n{describe(result)}"
    assert "BigTIFF" not in out
    assert snapshot(stack.out_dir) == before
    assert Path(stack.out).read_bytes() == b"previous output"


def test_dry_run_of_a_huge_stack_plans_bigtiff_without_reading_pixels(tmp_path):
    # sparse inputs whose headers describe 40000x36000 RGB: 4.3 GB each, nothing on disk
    names = []
    for i in range(2):
        name = tmp_path / f"huge{i}.tif"
        tifffile.imwrite(name, shape=(36000, 40000, 3), dtype=np.uint8, photometric="rgb", bigtiff=True)
        names.append(name)
    before = snapshot(tmp_path)
    result = run(["-n", "-o", tmp_path / "avg.tif", *names])
    assert result.returncode == 0, describe(result)
    assert result.stderr == ""
    assert "BigTIFF" in result.stdout and "classic TIFF" not in result.stdout, describe(result)
    assert "40000x36000x3 uint8" in result.stdout
    assert re.search(r"write: 4\.0 GiB", result.stdout), describe(result)
    assert snapshot(tmp_path) == before


def test_dry_run_names_an_opencv_output_format(stack):
    out = stack.out_dir / "avg.png"
    result = run(["--dry-run", "-o", out, *stack.paths])
    assert result.returncode == 0, describe(result)
    assert "(PNG)" in result.stdout, describe(result)
    assert os.listdir(stack.out_dir) == []


# -- help -------------------------------------------------------------------------------------

ALL_OPTIONS = [
    "-h", "--help", "-o", "--output", "--batch", "--force", "-w", "--weights", "--dtype",
    "-m", "--max-memory", "-c", "--compression", "--tile", "-j", "--threads", "-n", "--dry-run",
    "-v", "--verbose", "-q", "--quiet", "--progress", "--no-progress", "--log-file", "--debug", "--version",
]


def test_help_mentions_every_option_and_the_weighted_example():
    result = run(["--help"])
    assert result.returncode == 0, describe(result)
    assert result.stderr == ""
    text = result.stdout
    for option in ALL_OPTIONS:
        found = re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
        assert found, f"--help does not mention {option}"
    assert "python -m avgstack -o avg.tif a.tif b.tif c.tif --weights 0.01 -0.002 -0.002" in text
    # every option in the README's table is in --help too
    readme_options = set(re.findall(r"^\| `(-[^|]*)` \|", README.read_text(), re.M))
    flags = {f for cell in readme_options for f in re.findall(r"--?[a-z][\w-]*", cell)}
    assert flags, "README option table not found"
    missing = sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text))
    assert missing == []


# -- progress bar -------------------------------------------------------------------------------


def test_progress_forced_without_tty_draws_tqdm_on_stderr(stack):
    result = run(["--progress", "-o", stack.out, *stack.paths])
    assert result.returncode == 0, describe(result)
    assert result.stdout == ""
    assert "%|" in result.stderr and "\r" in result.stderr, describe(result)
    assert "Traceback" not in result.stderr
    np.testing.assert_array_equal(read(stack.out), mean_reference(stack.frames))
    assert temp_files(stack.out_dir) == []


def _run_with_pty_stderr(args, timeout=60.0) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal of 24x80 (stdin /dev/null, stdout a pipe)."""
    master, slave = pty.openpty()
    # a real terminal has a size; tqdm draws nothing on a 0-column one
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen(
            cli_command(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=cli_env()
        )
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError as err:  # EIO: every writer of the terminal has gone
                if err.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            chunks.append(data)
        stdout, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_by_default_and_never_with_no_progress(stack):
    code, stdout, err = _run_with_pty_stderr(["-o", stack.out, *stack.paths])
    assert code == 0, err
    assert stdout == ""
    assert "%|" in err, f"no progress bar on a terminal: {err!r}"
    assert "Traceback" not in err
    np.testing.assert_array_equal(read(stack.out), mean_reference(stack.frames))

    code, stdout, err = _run_with_pty_stderr(["--no-progress", "-o", stack.out, *stack.paths])
    assert code == 0, err
    assert (stdout, err) == ("", "")


# -- weights ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where",
    ["after inputs", "short option after inputs", "comma form before inputs", "comma form after inputs"],
)
def test_weights_forms_give_the_numpy_weighted_sum(stack, where):
    weights = ["0.5", "0.25", "0.25"]
    if where == "after inputs":
        args = ["-o", stack.out, *stack.paths, "--weights", *weights]
    elif where == "short option after inputs":
        args = ["-o", stack.out, *stack.paths, "-w", *weights]
    elif where == "comma form before inputs":
        args = ["--weights=0.5,0.25,0.25", "-o", stack.out, *stack.paths]
    else:
        args = ["-o", stack.out, *stack.paths, "--weights=0.5,0.25,0.25"]
    result = run(args)
    assert_silent_success(result, stack.out_dir)
    # binary fractions: every product and sum is exact in float64
    expected, clipped = to_int(weighted_float(stack.frames, [0.5, 0.25, 0.25]), np.uint8)
    assert clipped == 0
    np.testing.assert_array_equal(read(stack.out), expected)


@pytest.mark.parametrize("weights", [["0.5", "0.5"], ["0.5", "0.25", "0.25", "0.1"], ["--weights=1,2"]])
def test_wrong_number_of_weights_exits_2_with_one_line(stack, weights):
    args = ["-o", stack.out, *stack.paths]
    args += weights if weights[0].startswith("--") else ["--weights", *weights]
    result = run(args)
    assert_one_error_line(result, 2, "weight")
    assert os.listdir(stack.out_dir) == []


@pytest.mark.parametrize("form", ["separate", "comma"])
def test_non_numeric_weight_exits_2(stack, form):
    if form == "separate":
        args = ["-o", stack.out, *stack.paths, "--weights", "0.5", "half", "0.25"]
    else:
        args = ["--weights=0.5,half,0.25", "-o", stack.out, *stack.paths]
    result = run(args)
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    assert_no_bar_no_traceback(result)
    last = result.stderr.splitlines()[-1]
    assert ERROR_RE.match(last) and "'half'" in last, describe(result)
    assert os.listdir(stack.out_dir) == []


def test_space_separated_weights_before_inputs_are_refused_with_a_hint(stack):
    result = run(["--weights", "0.5", "0.25", "0.25", *stack.paths, "-o", stack.out])
    assert result.returncode == 2, describe(result)
    assert_no_bar_no_traceback(result)
    assert "--weights=" in result.stderr.splitlines()[-1], describe(result)
    assert os.listdir(stack.out_dir) == []


# -- inputs: @lists, globs, pages ------------------------------------------------------------------------


def test_list_file_with_comments_blank_lines_and_relative_paths_from_another_cwd(tmp_path):
    frames = make_frames(tmp_path / "data" / "frames", ["f0.tif", "f1.tif", "f2.tif"], seed=2)
    lists = tmp_path / "data" / "lists"
    lists.mkdir()
    absolute = tmp_path / "data" / "frames" / "f0.tif"
    (lists / "night.txt").write_text(
        "# frames of the night, in this order\n"
        "\n"
        "../frames/f2.tif\n"
        "   \n"
        "  ../frames/f1.tif  \n"
        "# ../frames/missing.tif is commented out\n"
        f"{absolute}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # weights tell the order: f2, f1, f0
    result = run(["-o", "../out/avg.tif", "@../data/lists/night.txt", "--weights", "0.5", "0.25", "0.125"],
                 cwd=elsewhere)
    assert_silent_success(result, out_dir)
    expected, _ = to_int(weighted_float([frames[2], frames[1], frames[0]], [0.5, 0.25, 0.125]), np.uint8)
    np.testing.assert_array_equal(read(out_dir / "avg.tif"), expected)


def test_missing_list_file_exits_2_with_one_line(tmp_path):
    result = run(["-o", tmp_path / "avg.tif", f"@{tmp_path / 'nolist.txt'}"])
    assert_one_error_line(result, 2, "nolist.txt")
    assert os.listdir(tmp_path) == []


def test_quoted_glob_is_expanded_by_avgstack_and_sorted(tmp_path):
    # written in an unsorted order; the pattern is one argv element (no shell)
    names = ["n03.tif", "n01.tif", "n02.tif"]
    frames = dict(zip(names, make_frames(tmp_path / "night", names, seed=3)))
    make_frames(tmp_path / "night", ["other.tif"], seed=4)  # does not match
    ordered = [frames[n] for n in sorted(names)]
    result = run(["-o", "avg.tif", "night/n*.tif", "--weights", "0.5", "0.25", "0.125"], cwd=tmp_path)
    assert_silent_success(result, tmp_path)
    expected, _ = to_int(weighted_float(ordered, [0.5, 0.25, 0.125]), np.uint8)
    np.testing.assert_array_equal(read(tmp_path / "avg.tif"), expected)


def test_glob_matching_nothing_exits_2_naming_the_pattern(stack):
    pattern = str(stack.inp / "z*.tif")
    result = run(["-o", stack.out, stack.paths[0], pattern])
    assert_one_error_line(result, 2, "z*.tif")
    assert os.listdir(stack.out_dir) == []


def test_page_syntax_picks_pages_also_inside_a_list(tmp_path):
    rng = np.random.default_rng(5)
    pages = rng.integers(0, 256, size=(3, 24, 32, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", pages, photometric="rgb")
    (tmp_path / "pages.txt").write_text("scan.tif[2]\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = run(["-o", out_dir / "avg.tif", f"{tmp_path / 'scan.tif'}[1]", f"@{tmp_path / 'pages.txt'}",
                  "--weights", "0.5", "0.5"])
    assert_silent_success(result, out_dir)
    expected, _ = to_int(weighted_float([pages[1], pages[2]], [0.5, 0.5]), np.uint8)
    np.testing.assert_array_equal(read(out_dir / "avg.tif"), expected)


# -- log file ------------------------------------------------------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ ")


def test_log_file_appends_timestamped_lines_even_when_quiet(stack, tmp_path):
    log = tmp_path / "avgstack.log"
    first = run(["-q", "--log-file", log, "-o", stack.out, *stack.paths])
    assert_silent_success(first, stack.out_dir)
    text1 = log.read_text()
    lines1 = text1.splitlines()
    assert lines1 and all(STAMP.match(line) for line in lines1), text1
    assert "start" in lines1[0]
    assert any("inputs: 3 frames" in line for line in lines1), text1  # the plan
    # the summary
    assert re.search(r"avg\.tif: 32x24x3 uint8, 3 frames, .*clipped samples$", lines1[-1]), text1
    assert "ERROR" not in text1

    missing = stack.inp / "missing.tif"
    second = run(["-q", "--log-file", log, "-o", stack.out, stack.paths[0], missing])
    assert_one_error_line(second, 2, "missing.tif")
    text2 = log.read_text()
    assert text2.startswith(text1), "the second run must append, not overwrite"
    added = text2[len(text1):].splitlines()
    assert len(added) >= 2 and all(STAMP.match(line) for line in added), text2
    assert "start" in added[0]
    assert "ERROR" in added[-1] and "missing.tif" in added[-1]


# -- errors: exit codes, one line, nothing left behind -------------------------------------------------


@pytest.mark.parametrize(
    "case, needle",
    [
        ("no output option", "-o"),
        ("no inputs", "no inputs"),
        ("output folder missing", "does not exist"),
        ("output is an input", "same file"),
        ("unknown dtype", "--dtype"),
        ("force without batch", "--force"),
    ],
)
def test_usage_and_pre_processing_errors_exit_2(stack, case, needle):
    args = {
        "no output option": [*stack.paths],
        "no inputs": ["-o", stack.out],
        "output folder missing": ["-o", stack.out_dir / "nope" / "avg.tif", *stack.paths],
        "output is an input": ["-o", stack.paths[1], *stack.paths],
        "unknown dtype": ["-o", stack.out, *stack.paths, "--dtype", "uint64"],
        "force without batch": ["--force", "-o", stack.out, *stack.paths],
    }[case]
    before = snapshot(stack.inp)
    result = run(args)
    assert result.returncode == 2, describe(result)
    assert result.stdout == ""
    assert_no_bar_no_traceback(result)
    last = result.stderr.splitlines()[-1]
    assert ERROR_RE.match(last) and needle in last, describe(result)
    assert os.listdir(stack.out_dir) == []
    assert snapshot(stack.inp) == before


def test_corrupt_pixel_data_exits_1_and_keeps_the_previous_output(stack):
    bad = write_corrupt_tiff(stack.inp / "bad.tif", stack.frames[0])  # header intact, zlib stream not
    previous = b"previous output \x00\xff"
    Path(stack.out).write_bytes(previous)
    result = run(["-o", stack.out, stack.paths[0], bad])
    assert_one_error_line(result, 1, "bad.tif")
    assert Path(stack.out).read_bytes() == previous
    assert os.listdir(stack.out_dir) == ["avg.tif"]


def test_tiff_with_bad_first_ifd_offset_gives_exactly_one_error_line(stack):
    """The error for a TIFF whose first-IFD offset points past its end is one ``avgstack: error:`` line.

    Observed: tifffile's own logger adds a line such as
    ``<tifffile.TiffPages @1000000000> invalid offset to first page 1000000000``
    to stderr before avgstack's error.
    """
    data = bytearray(Path(stack.paths[1]).read_bytes())
    data[4:8] = (10**9).to_bytes(4, "little")  # classic little-endian TIFF: first IFD offset
    bad = stack.inp / "badoffset.tif"
    bad.write_bytes(bytes(data))
    result = run(["-o", stack.out, stack.paths[0], bad])
    assert_one_error_line(result, 2, "badoffset.tif")
    assert os.listdir(stack.out_dir) == []
