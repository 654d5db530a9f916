"""Stacks with far more inputs than the process may open files at once."""

from __future__ import annotations

import resource

import numpy as np
import pytest
import tifffile
from conftest import assert_same_bits, budget_for_bands, exact_int_mean_fast, run_cli

pytestmark = pytest.mark.slow

COUNT = 300
NOFILE = 64


def _limit_open_files():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """300 small RGB uint16 TIFFs in three layouts: direct strips, deflate tiles, LZW strips of 7 rows."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(300)
    frames, paths = [], []
    layouts = [
        dict(),
        dict(compression="zlib", tile=(16, 16)),
        dict(compression="lzw", predictor=2, rowsperstrip=7),
    ]
    for i in range(COUNT):
        frame = rng.integers(0, 65535, (120, 90, 3), dtype=np.uint16, endpoint=True)
        path = folder / f"frame{i:03d}.tif"
        tifffile.imwrite(path, frame, photometric="rgb", **layouts[i % 3])
        frames.append(frame)
        paths.append(str(path))
    return folder, paths, exact_int_mean_fast(frames).astype(np.uint16)


def test_limit_is_really_applied(tmp_path):
    """The child cannot open 64 files: the limit the other tests rely on is in force."""
    import subprocess
    import sys

    script = "import os\ntry:\n    [os.open(os.devnull, os.O_RDONLY) for _ in range(70)]\nexcept OSError:\n    raise SystemExit(3)\n"
    proc = subprocess.run([sys.executable, "-c", script], preexec_fn=_limit_open_files)
    assert proc.returncode == 3


@pytest.mark.parametrize("threads", ["1", "4"])
def test_300_inputs_under_ulimit_64(many, threads):
    folder, paths, expected = many
    out = folder / f"mean-{threads}.tif"
    proc = run_cli(["-o", out, "--threads", threads, *paths], preexec_fn=_limit_open_files)
    assert proc.returncode == 0, proc.stderr
    assert_same_bits(tifffile.imread(out), expected)


def test_300_inputs_in_many_bands_under_ulimit_64(many):
    """Several bands: every input is read once per band, so descriptors are reused or reopened."""
    folder, paths, expected = many
    out = folder / "mean-bands.tif"
    budget = budget_for_bands(paths, out, tile=32, threads=4)
    list_file = folder / "inputs.txt"
    list_file.write_text("\n".join(paths) + "\n")
    proc = run_cli(["-v", "-o", out, "--max-memory", budget, "--tile", "32", "-j", "4",
                    f"@{list_file}"], preexec_fn=_limit_open_files)
    assert proc.returncode == 0, proc.stderr
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].is_tiled
    assert_same_bits(tifffile.imread(out), expected)
