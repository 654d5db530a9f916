"""Batch files (``python -m avgstack --batch jobs.toml``), as cron runs them.

Each test lays out a small project folder (``proj/in``, ``proj/lists``,
``proj/out``, ``proj/jobs.toml``) and runs the batch from another working
directory, so relative paths must resolve against the batch file's folder.
"""

from __future__ import annotations

import os
import re
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
    describe,
    error_lines,
    make_frames,
    mean_reference,
    read,
    run,
    snapshot,
    temp_files,
    weighted_float,
    write_corrupt_tiff,
)

SUMMARY = re.compile(r"batch \S*jobs\.toml: (\d+) done, (\d+) skipped, (\d+) failed$")


class Project:
    """A project folder with inputs, an output folder and a batch file, run from ``elsewhere``."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "proj"
        self.inp = self.root / "in"
        self.out = self.root / "out"
        self.out.mkdir(parents=True)
        self.elsewhere = tmp_path / "elsewhere"
        self.elsewhere.mkdir()
        self.batch = self.root / "jobs.toml"
        names = ["a1.tif", "a2.tif", "a3.tif", "b1.tif", "b2.tif"]
        self.frames = dict(zip(names, make_frames(self.inp, names, seed=11)))

    def write(self, text: str) -> None:
        self.batch.write_text(text)

    def run(self, *extra):
        """Run the batch from another folder, naming the batch file by a relative path."""
        return run(["--batch", os.path.relpath(self.batch, self.elsewhere), *extra], cwd=self.elsewhere)


@pytest.fixture
def project(tmp_path) -> Project:
    return Project(tmp_path)


def summary(result) -> tuple[int, int, int]:
    """(done, skipped, failed) from the batch summary, which must be the last stderr line."""
    last = result.stderr.splitlines()[-1] if result.stderr else ""
    m = SUMMARY.search(last)
    assert m, f"last line is not the batch summary\n{describe(result)}"
    return tuple(int(g) for g in m.groups())


def set_times(paths, when: float) -> None:
    for path in paths:
        os.utime(path, (when, when))


# -- jobs, options, defaults, relative paths -------------------------------------------------------------


def test_jobs_run_with_globs_lists_options_and_top_level_defaults(project):
    (project.root / "lists").mkdir()
    lists = project.root / "lists"
    (lists / "diff.txt").write_text("# minuend, then subtrahend\n../in/b2.tif\n\n../in/b1.tif\n")
    project.write(
        'compression = "zstd"\n'
        'max_memory = "16MiB"\n'
        "\n"
        "[[jobs]]\n"
        'output = "out/mean.tif"\n'
        'inputs = ["in/a*.tif"]\n'
        "\n"
        "[[jobs]]\n"
        'output = "out/diff.tif"\n'
        'inputs = ["@lists/diff.txt"]\n'
        "weights = [1.0, -1.0]\n"
        'dtype = "float32"\n'
        'compression = "lzw"\n'
        "\n"
        "[[jobs]]\n"
        'output = "out/tiled.tif"\n'
        f'inputs = ["{project.inp / "a1.tif"}", "in/b1.tif"]\n'
        "tile = 16\n"
        'max_memory = "32MiB"\n'
    )
    result = project.run()
    assert_silent_success(result, project.out)
    assert sorted(os.listdir(project.out)) == ["diff.tif", "mean.tif", "tiled.tif"]
    f = project.frames

    mean = project.out / "mean.tif"
    np.testing.assert_array_equal(read(mean), mean_reference([f["a1.tif"], f["a2.tif"], f["a3.tif"]]))
    with tifffile.TiffFile(mean) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ZSTD  # top-level default
        assert not tif.pages[0].is_tiled

    diff = project.out / "diff.tif"
    got = read(diff)
    assert got.dtype == np.float32
    expected = weighted_float([f["b2.tif"], f["b1.tif"]], [1.0, -1.0]).astype(np.float32)
    np.testing.assert_array_equal(got, expected)
    with tifffile.TiffFile(diff) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW  # the job's own value wins

    tiled = project.out / "tiled.tif"
    np.testing.assert_array_equal(read(tiled), mean_reference([f["a1.tif"], f["b1.tif"]]))
    with tifffile.TiffFile(tiled) as tif:
        page = tif.pages[0]
        assert page.is_tiled and (page.tilewidth, page.tilelength) == (16, 16)
        assert page.compression == tifffile.COMPRESSION.ZSTD

    # -v shows each job's plan with its own budget, and the summary last
    verbose = project.run("-v", "--force")
    assert verbose.returncode == 0, describe(verbose)
    assert verbose.stdout == ""
    assert_no_bar_no_traceback(verbose)
    plan = verbose.stderr
    assert re.search(r"job 1 \(\S*mean\.tif\): memory: .*budget 16\.0 MiB", plan), describe(verbose)
    assert re.search(r"job 2 \(\S*diff\.tif\): operation: weighted sum", plan), describe(verbose)
    assert re.search(r"job 3 \(\S*tiled\.tif\): memory: .*budget 32\.0 MiB", plan), describe(verbose)
    assert summary(verbose) == (3, 0, 0)
    assert temp_files(project.out) == []
    np.testing.assert_array_equal(read(mean), mean_reference([f["a1.tif"], f["a2.tif"], f["a3.tif"]]))


# -- up-to-date skipping -------------------------------------------------------------------------------


def test_rerun_skips_up_to_date_jobs_force_redoes_and_touch_redoes_one(project):
    project.write(
        '[[jobs]]\noutput = "out/a.tif"\ninputs = ["in/a*.tif"]\n\n'
        '[[jobs]]\noutput = "out/b.tif"\ninputs = ["in/b1.tif", "in/b2.tif"]\n'
    )
    assert_silent_success(project.run(), project.out)
    now = time.time()
    set_times([*project.inp.iterdir(), project.batch], now - 1000)
    set_times(project.out.iterdir(), now - 500)
    first = snapshot(project.out)

    # nothing changed: both skipped, outputs not rewritten
    again = project.run("-v")
    assert again.returncode == 0, describe(again)
    assert_no_bar_no_traceback(again)
    assert summary(again) == (0, 2, 0)
    assert snapshot(project.out) == first

    # a silent rerun stays silent
    assert_silent_success(project.run(), project.out)
    assert snapshot(project.out) == first

    # one input of job 1 changes: job 1 only is redone
    os.utime(project.inp / "a2.tif", (now, now))
    touched = project.run("-v")
    assert touched.returncode == 0, describe(touched)
    assert summary(touched) == (1, 1, 0)
    after = snapshot(project.out)
    assert after["a.tif"] != first["a.tif"]
    assert after["b.tif"] == first["b.tif"]
    f = project.frames
    a_frames = [f["a1.tif"], f["a2.tif"], f["a3.tif"]]
    np.testing.assert_array_equal(read(project.out / "a.tif"), mean_reference(a_frames))

    # --force redoes every job
    forced = project.run("-v", "--force")
    assert forced.returncode == 0, describe(forced)
    assert summary(forced) == (2, 0, 0)
    redone = snapshot(project.out)
    assert redone["a.tif"] != after["a.tif"] and redone["b.tif"] != after["b.tif"]
    np.testing.assert_array_equal(read(project.out / "b.tif"), mean_reference([f["b1.tif"], f["b2.tif"]]))

    # an edited batch file makes every output stale
    set_times(project.out.iterdir(), now - 500)
    os.utime(project.batch, (now, now))
    edited = project.run("-v")
    assert summary(edited) == (2, 0, 0)
    assert temp_files(project.out) == []


# -- a failing job among good ones ---------------------------------------------------------------------


def test_failing_jobs_do_not_stop_the_others(project, tmp_path):
    f = project.frames
    write_corrupt_tiff(project.inp / "corrupt.tif", f["b1.tif"])
    previous = b"last night's output \x00\x01"
    (project.out / "corrupt_job.tif").write_bytes(previous)
    log = tmp_path / "cron.log"
    project.write(
        '[[jobs]]\noutput = "out/first.tif"\ninputs = ["in/a1.tif", "in/a2.tif"]\n\n'
        '[[jobs]]\noutput = "out/missing_job.tif"\ninputs = ["in/a1.tif", "in/nothere.tif"]\n\n'
        '[[jobs]]\noutput = "out/corrupt_job.tif"\ninputs = ["in/b2.tif", "in/corrupt.tif"]\n\n'
        '[[jobs]]\noutput = "out/last.tif"\ninputs = ["in/b1.tif", "in/b2.tif", "in/a3.tif"]\n'
    )
    result = project.run("--log-file", log)
    assert result.returncode == 1, describe(result)
    assert result.stdout == ""
    assert_no_bar_no_traceback(result)
    lines = result.stderr.splitlines()
    assert lines == error_lines(result.stderr), "only error lines without -v"
    assert len(lines) == 3, describe(result)
    assert "job 2" in lines[0] and "missing_job.tif" in lines[0] and "nothere.tif" in lines[0]
    assert "job 3" in lines[1] and "corrupt_job.tif" in lines[1] and "corrupt.tif" in lines[1]
    assert summary(result) == (2, 0, 2)

    np.testing.assert_array_equal(read(project.out / "first.tif"), mean_reference([f["a1.tif"], f["a2.tif"]]))
    np.testing.assert_array_equal(
        read(project.out / "last.tif"), mean_reference([f["b1.tif"], f["b2.tif"], f["a3.tif"]])
    )
    assert (project.out / "corrupt_job.tif").read_bytes() == previous
    assert sorted(os.listdir(project.out)) == ["corrupt_job.tif", "first.tif", "last.tif"]

    logged = log.read_text().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line) for line in logged)
    assert SUMMARY.search(logged[-1]) and "2 done, 0 skipped, 2 failed" in logged[-1]
    assert any("ERROR" in line and "nothere.tif" in line for line in logged)


# -- invalid batch files: nothing runs -----------------------------------------------------------------

#: a job that is valid until the key each case appends
ODD_JOB = '[[jobs]]\noutput = "out/x.tif"\ninputs = ["in/b1.tif"]\n'
GOOD_JOB = '[[jobs]]\noutput = "out/good.tif"\ninputs = ["in/a1.tif", "in/a2.tif"]\n\n'
BAD_BATCHES = {
    "not TOML": GOOD_JOB + "[[jobs]\noutput = 'out/x.tif'\n",
    "unknown job key": GOOD_JOB + ODD_JOB + 'colour = "red"\n',
    "unknown top-level key": 'verbose = true\n' + GOOD_JOB,
    "wrong type: tile": GOOD_JOB + ODD_JOB + 'tile = "big"\n',
    "wrong type: inputs": GOOD_JOB + '[[jobs]]\noutput = "out/x.tif"\ninputs = "in/b1.tif"\n',
    "wrong type: weights": GOOD_JOB + ODD_JOB + 'weights = [1, "1"]\n',
    "bad dtype": GOOD_JOB + ODD_JOB + 'dtype = "uint64"\n',
    "bad default dtype": 'dtype = "int64"\n' + GOOD_JOB,
    "missing output": GOOD_JOB + '[[jobs]]\ninputs = ["in/b1.tif"]\n',
    "no jobs": 'compression = "zstd"\n',
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_invalid_batch_file_exits_2_and_runs_no_job(project, case):
    project.write(BAD_BATCHES[case])
    result = project.run()
    assert_one_error_line(result, 2, "jobs.toml")
    assert os.listdir(project.out) == [], "no job may run when the batch file is invalid"


@pytest.mark.parametrize("case", ["missing batch file", "inputs with --batch", "output with --batch"])
def test_batch_usage_errors_exit_2(project, case):
    project.write(GOOD_JOB)
    if case == "missing batch file":
        result = run(["--batch", project.root / "nojobs.toml"])
        assert_one_error_line(result, 2, "nojobs.toml")
    else:
        extra = [project.inp / "b1.tif"] if case == "inputs with --batch" else ["-o", project.out / "x.tif"]
        result = run(["--batch", project.batch, *extra])
        assert result.returncode == 2, describe(result)
        assert_no_bar_no_traceback(result)
        assert ERROR_RE.match(result.stderr.splitlines()[-1]) and "--batch" in result.stderr, describe(result)
    assert os.listdir(project.out) == []


def test_edited_list_file_makes_its_job_stale(project):
    """A job's @list file counts like its inputs: editing the list redoes that job only."""
    lists = project.root / "lists"
    lists.mkdir()
    (lists / "b.txt").write_text("../in/b1.tif\n")
    project.write(
        '[[jobs]]\noutput = "out/a.tif"\ninputs = ["in/a1.tif", "in/a2.tif"]\n\n'
        '[[jobs]]\noutput = "out/b.tif"\ninputs = ["@lists/b.txt"]\n'
    )
    assert_silent_success(project.run(), project.out)
    now = time.time()
    set_times([*project.inp.iterdir(), project.batch, lists / "b.txt"], now - 1000)
    set_times(project.out.iterdir(), now - 500)
    (lists / "b.txt").write_text("../in/b1.tif\n../in/b2.tif\n")
    os.utime(lists / "b.txt", (now, now))
    result = project.run("-v")
    assert result.returncode == 0, describe(result)
    assert summary(result) == (1, 1, 0)
    f = project.frames
    np.testing.assert_array_equal(read(project.out / "b.tif"), mean_reference([f["b1.tif"], f["b2.tif"]]))
