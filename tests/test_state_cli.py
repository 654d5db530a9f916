"""``--state FILE``: a running result across command-line runs equals one run over every input."""

from __future__ import annotations

import numpy as np
import tifffile
from clihelpers import assert_one_error_line, describe, run

import avgstack


def _frames(folder, n, shape=(21, 34, 3), dtype=np.uint8, seed=5):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype)
    paths = []
    for i in range(n):
        path = folder / f"f{i}.tif"
        tifffile.imwrite(path, rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True),
                         photometric="rgb" if len(shape) == 3 else "minisblack", rowsperstrip=4)
        paths.append(path)
    return paths


def test_two_runs_with_state_equal_one_run(tmp_path):
    paths = _frames(tmp_path, 6)
    state, out, one = tmp_path / "sums.npz", tmp_path / "avg.tif", tmp_path / "one.tif"
    for part in (paths[:2], paths[2:]):
        result = run(["--state", state, "-o", out, *part])
        assert result.returncode == 0 and result.stderr == "", describe(result)
    assert run(["-o", one, *paths]).returncode == 0
    np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(one))
    assert avgstack.Accumulator.load(state).count == 6
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries


def test_weighted_gray_uint16_state(tmp_path):
    paths = _frames(tmp_path, 4, shape=(15, 9), dtype=np.uint16)
    state, out, one = tmp_path / "w.npz", tmp_path / "w.tif", tmp_path / "one.tif"
    w = [0.5, -0.25, 2.0, 0.125]
    first = ["--state", state, "-o", out, *paths[:3], "--weights", *map(str, w[:3]), "--dtype", "float32"]
    assert run(first).returncode == 0
    assert run(["--state", state, "-o", out, paths[3], "--weights", str(w[3]), "--dtype", "float32"]).returncode == 0
    assert run(["-o", one, *paths, "--weights", *map(str, w), "--dtype", "float32"]).returncode == 0
    got, want = tifffile.imread(out), tifffile.imread(one)
    assert got.dtype == np.float32 and got.shape == (15, 9)
    np.testing.assert_array_equal(got, want)


def test_failed_run_changes_neither_state_nor_output(tmp_path):
    paths = _frames(tmp_path, 3)
    state, out = tmp_path / "s.npz", tmp_path / "avg.tif"
    assert run(["--state", state, "-o", out, paths[0]]).returncode == 0
    before = state.read_bytes(), out.read_bytes()
    bad = tmp_path / "bad.tif"
    data = bytearray(paths[1].read_bytes())
    noise = np.random.default_rng(1).integers(0, 255, (21, 34, 3), dtype=np.uint8)
    tifffile.imwrite(bad, noise, photometric="rgb", compression="zlib", rowsperstrip=4)
    with tifffile.TiffFile(bad) as tif:
        offset, count = tif.pages[0].dataoffsets[2], tif.pages[0].databytecounts[2]
    raw = bytearray(bad.read_bytes())
    raw[offset : offset + count] = b"\xff" * count  # a corrupt compressed strip, found while processing
    bad.write_bytes(bytes(raw))
    result = run(["--state", state, "-o", out, paths[1], bad])
    assert result.returncode == 1, describe(result)
    assert (state.read_bytes(), out.read_bytes()) == before
    assert data == paths[1].read_bytes()


def test_state_of_another_kind_is_refused(tmp_path):
    paths = _frames(tmp_path, 2)
    state, out = tmp_path / "s.npz", tmp_path / "avg.tif"
    assert run(["--state", state, "-o", out, paths[0]]).returncode == 0
    assert_one_error_line(run(["--state", state, "-o", out, paths[1], "--dtype", "float32"]), 2, "output type uint8")
    assert_one_error_line(run(["--state", state, "-o", out, paths[1], "--weights=1"]), 2, "saved for a mean")
    (tmp_path / "other").mkdir()
    other = _frames(tmp_path / "other", 1, shape=(22, 34, 3))
    assert_one_error_line(run(["--state", state, "-o", out, other[0]]), 2, "use a new state file")
    assert_one_error_line(run(["--state", out, "-o", out, paths[1]]), 2, "cannot be the output")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert_one_error_line(run(["--state", tmp_path / "junk.npz", "-o", out, paths[1]]), 2, "not an avgstack state")


def test_state_dry_run_writes_nothing(tmp_path):
    paths = _frames(tmp_path, 2)
    result = run(["--dry-run", "--state", tmp_path / "s.npz", "-o", tmp_path / "o.tif", *paths])
    assert result.returncode == 0 and "this run adds 2 frames" in result.stdout, describe(result)
    assert not (tmp_path / "s.npz").exists() and not (tmp_path / "o.tif").exists()
