"""The methods from the command line, batch files and the planner: flags, messages, exit codes, memory."""

from __future__ import annotations

import numpy as np
import pytest
from clihelpers import assert_one_error_line, make_frames, read, run
from conftest import write_tiff

import avgstack


@pytest.fixture
def frames5(tmp_path):
    names = [f"f{i}.tif" for i in range(5)]
    frames = make_frames(tmp_path, names, shape=(20, 24, 4), seed=3)
    return [str(tmp_path / n) for n in names], frames


def test_median_from_the_command_line_with_verbose_plan(tmp_path, frames5):
    paths, frames = frames5
    out = tmp_path / "med.tif"
    result = run(["-v", "-o", out, "--method", "median", *paths])
    assert result.returncode == 0, result.stderr
    assert "operation: median" in result.stderr
    assert "5 frames, median, " in result.stderr  # the summary line
    np.testing.assert_array_equal(read(out), np.median(np.stack(frames), axis=0).astype(np.uint8))


def test_dry_run_names_the_method_and_its_parameters(tmp_path, frames5):
    paths, _ = frames5
    result = run(["-n", "-o", tmp_path / "p.tif", "--method", "percentile", "--percentile", "90", *paths])
    assert result.returncode == 0, result.stderr
    assert "operation: percentile (percentile=90)" in result.stdout
    result = run(["-n", "-o", tmp_path / "c.tif", "--method", "sigma-clip", "--sigma-low", "2.5", *paths])
    assert "operation: sigma-clip (max_iters=5, sigma_high=3, sigma_low=2.5)" in result.stdout
    result = run(["-n", "-o", tmp_path / "s.tif", "--method", "std", "--ddof", "1", *paths])
    assert "operation: std (ddof=1)" in result.stdout and "float32" in result.stdout
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize("args, needle", [
    (["--method", "percentile"], "method percentile needs percentile (--percentile"),
    (["--method", "median", "--nlow", "1"], "nlow (--nlow) applies only to method minmax"),
    (["--method", "minmax", "--nlow", "3", "--nhigh", "2"], "leaves nothing of 5 input(s)"),
    (["--method", "std", "--ddof", "-1"], "ddof (--ddof) must be at least 0"),
    (["--method", "max", "--weights=1,1,1,1,1"], "method max takes no weights"),
    (["--method", "sigma-clip", "--max-iters", "0"], "max_iters (--max-iters) must be at least 1"),
])
def test_bad_method_flags_exit_2_with_one_line(tmp_path, frames5, args, needle):
    paths, _ = frames5
    out = tmp_path / "out.tif"
    result = run(["-o", out, *paths, *args])
    assert_one_error_line(result, 2, needle)
    assert not out.exists()


def test_unknown_method_is_refused_by_the_parser(tmp_path, frames5):
    paths, _ = frames5
    result = run(["-o", tmp_path / "o.tif", "--method", "mode", *paths])
    assert result.returncode == 2 and "--method" in result.stderr and "Traceback" not in result.stderr


def test_batch_jobs_take_method_keys_and_are_checked_before_running(tmp_path, frames5):
    paths, frames = frames5
    batch = tmp_path / "jobs.toml"
    quoted = ", ".join(f'"{p}"' for p in paths)
    batch.write_text(
        f'[[jobs]]\noutput = "p.tif"\ninputs = [{quoted}]\nmethod = "percentile"\npercentile = 25\n\n'
        f'[[jobs]]\noutput = "m.tif"\ninputs = [{quoted}]\nmethod = "minmax"\nnlow = 2\nnhigh = 0\n'
    )
    result = run(["--batch", batch])
    assert result.returncode == 0, result.stderr
    cube = np.stack(frames).astype(np.float64)
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), np.rint(np.percentile(cube, 25, axis=0)).astype(np.uint8))
    kept = np.sort(cube, axis=0)[2:]
    np.testing.assert_array_equal(read(tmp_path / "m.tif"), np.rint(kept.mean(axis=0)).astype(np.uint8))
    batch.write_text(
        f'[[jobs]]\noutput = "ok.tif"\ninputs = [{quoted}]\n\n'
        f'[[jobs]]\noutput = "bad.tif"\ninputs = [{quoted}]\nmethod = "percentile"\n'
    )
    result = run(["--batch", batch])
    assert_one_error_line(result, 2, "job 2", "needs percentile")
    assert not (tmp_path / "ok.tif").exists()  # the whole file is checked before any job runs


# -- memory: the cube holds N rows per band row ------------------------------------------------


def _stack(tmp_path, count, shape=(400, 300, 4)):
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        paths.append(write_tiff(tmp_path / f"s{count}-{i}.tif", rng.integers(0, 256, shape, dtype=np.uint8),
                                photometric="rgb", extrasamples=["unassalpha"], rowsperstrip=1))
    return paths


def test_bands_shrink_as_the_number_of_frames_grows(tmp_path):
    few, many = _stack(tmp_path, 3), _stack(tmp_path, 30)
    budget = "8MiB"
    a = avgstack.plan_to_file(few, tmp_path / "a.tif", method="median", max_memory=budget, threads=1, tile=16)
    b = avgstack.plan_to_file(many, tmp_path / "b.tif", method="median", max_memory=budget, threads=1, tile=16)
    assert b.band_height < a.band_height
    assert b.memory <= 8 * 2**20 and a.memory <= 8 * 2**20
    assert a.method == "median"


def test_a_cube_that_cannot_hold_one_row_of_every_frame_is_refused_before_processing(tmp_path):
    paths = _stack(tmp_path, 40, shape=(8, 4000, 4))  # a band of 40 frames: 625 KiB per row
    out = tmp_path / "o.tif"
    result = run(["-o", out, "--method", "median", "--max-memory", "4MiB", *paths])
    assert_one_error_line(result, 2, "median of 40 frames", "needs at least", "raise max_memory")
    assert not out.exists()
    with pytest.raises(avgstack.BudgetError):
        avgstack.plan_to_file(paths, out, method="median", max_memory="4MiB")
    # the mean is fed one frame at a time: the same budget is plenty
    assert avgstack.plan_to_file(paths, out, max_memory="4MiB").bands >= 1


def test_report_says_the_method(tmp_path, frames5):
    paths, _ = frames5
    report = avgstack.average_to_file(paths, tmp_path / "o.tif", method="minmax", nlow=0, nhigh=2)
    assert report.method == "minmax (nhigh=2, nlow=0)"
    assert "5 frames, minmax (nhigh=2, nlow=0), " in report.summary()


def test_tiles_taller_than_the_band_are_decoded_a_whole_number_of_times_and_said_so(tmp_path):
    rng = np.random.default_rng(5)
    frames = [rng.integers(0, 256, (512, 256, 4), dtype=np.uint8) for _ in range(20)]
    paths = [write_tiff(tmp_path / f"t{i}.tif", f, photometric="rgb", extrasamples=["unassalpha"],
                        tile=(256, 256), compression="zlib") for i, f in enumerate(frames)]
    out = tmp_path / "med.tif"
    small = avgstack.plan_to_file(paths, out, method="median", max_memory="6MiB", tile=16)
    assert small.band_height < 256 and 256 % small.band_height == 0  # each tile lies in whole bands
    assert small.decodes == 256 // small.band_height
    assert f"decoded {small.decodes} times" in "\n".join(small.lines())
    large = avgstack.plan_to_file(paths, out, method="median", max_memory="64MiB", tile=16)
    assert large.decodes == 1 and "decoded" not in "\n".join(large.lines())
    avgstack.average_to_file(paths, out, method="median", max_memory="6MiB", tile=16)
    expected = np.rint(np.median(np.stack(frames).astype(np.float64), axis=0)).astype(np.uint8)
    np.testing.assert_array_equal(read(out), expected)
