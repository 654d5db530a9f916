"""Real peak memory of ``python -m avgstack`` on a stack much larger than the budget.

Each run is a fresh subprocess whose peak resident set size is taken from
``os.wait4`` (the rusage of that one child). A baseline subprocess that only
imports avgstack and its libraries gives the interpreter's own footprint; the
run may exceed it by the budget plus a generous margin for unaccounted
allocations (the budget covers pixel buffers only).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from conftest import peak_rss_of

pytestmark = pytest.mark.slow

FRAMES = 8
HEIGHT, WIDTH, SAMPLES = 2500, 2500, 4  # 25 MB per frame, 200 MB per stack
BUDGET = 16 * 2**20
MARGIN = 1.0  # the promise: peak RSS below the baseline plus the budget


def _frame(rng: np.random.Generator) -> np.ndarray:
    """Noise over a smooth gradient: every value occurs, and LZW still finds something to compress."""
    y = np.arange(HEIGHT, dtype=np.uint16)[:, None, None]
    x = np.arange(WIDTH, dtype=np.uint16)[None, :, None]
    base = ((x + y) // 20).astype(np.uint8)
    noise = rng.integers(0, 32, (HEIGHT, WIDTH, SAMPLES), dtype=np.uint8)
    return (base + noise).astype(np.uint8)  # wraps: still uint8, still varied


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Eight 2500x2500 RGBA uint8 frames as striped TIFFs (and LZW-tiled copies of the first four)."""
    folder = tmp_path_factory.mktemp("memory")
    rng = np.random.default_rng(99)
    plain = []
    for i in range(FRAMES):
        path = folder / f"frame{i}.tif"
        tifffile.imwrite(path, _frame(rng), photometric="rgb", extrasamples=["unassalpha"])
        plain.append(str(path))
    return folder, plain


def _frames(paths):
    return [tifffile.memmap(p) for p in paths]  # uncompressed: mapped, not loaded


def _check_mean(out: str, paths) -> None:
    frames = _frames(paths)
    result = tifffile.imread(out)
    n = len(frames)
    for top in range(0, HEIGHT, 250):
        rows = slice(top, top + 250)
        total = np.zeros((min(250, HEIGHT - top), WIDTH, SAMPLES), np.int64)
        for f in frames:
            total += f[rows]
        # n = 8 or 4: the quotient is exact in float64, so rint rounds the exact mean half to even
        expected = np.rint(total / n).astype(np.uint8)
        assert np.array_equal(result[rows], expected), f"rows {top}..{top + 250} differ"


def _assert_within_budget(peak: int, baseline: int, what: str) -> None:
    extra = peak - baseline
    assert extra < BUDGET * MARGIN, (
        f"{what}: peak RSS {peak / 2**20:.1f} MiB is {extra / 2**20:.1f} MiB above the "
        f"{baseline / 2**20:.1f} MiB baseline; budget {BUDGET / 2**20:.0f} MiB x {MARGIN}"
    )


def test_mean_of_200_mb_stack_stays_within_16_mib(stack, baseline):
    folder, paths = stack
    out = str(folder / "mean.tif")
    code, peak, stderr = peak_rss_of(["-m", "avgstack", "-o", out, "--max-memory", "16MiB", *paths], folder)
    assert code == 0, stderr
    assert sum(os.path.getsize(p) for p in paths) > 10 * BUDGET  # the stack is much larger than the budget
    _assert_within_budget(peak, baseline, "mean")
    _check_mean(out, paths)


def test_weighted_sum_stays_within_16_mib(stack, baseline):
    folder, paths = stack
    out = str(folder / "weighted.tif")
    weights = [0.25, -0.125, 0.5, 0.125, 0.0625, 0.3, -0.05, 0.1]
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", out, "--max-memory", "16MiB", *paths, "--weights", *map(str, weights)], folder
    )
    assert code == 0, stderr
    _assert_within_budget(peak, baseline, "weighted")
    result = tifffile.imread(out)
    frames = _frames(paths)
    for top in range(0, HEIGHT, 500):
        rows = slice(top, top + 500)
        reference = sum(w * f[rows].astype(np.float64) for w, f in zip(weights, frames))
        expected = np.clip(reference, 0, 255)
        assert np.abs(result[rows].astype(np.float64) - expected).max() <= 1.0


def test_lzw_tiled_inputs_and_output_stay_within_16_mib(stack, baseline):
    folder, paths = stack
    tiled = []
    for i, path in enumerate(paths[:4]):
        target = folder / f"lzw{i}.tif"
        tifffile.imwrite(target, tifffile.imread(path), photometric="rgb", extrasamples=["unassalpha"],
                         compression="lzw", predictor=2, tile=(256, 256))
        tiled.append(str(target))
    out = str(folder / "lzw-mean.tif")
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", out, "--max-memory", "16MiB", "--compression", "lzw", "--tile", "256", *tiled],
        folder,
    )
    assert code == 0, stderr
    _assert_within_budget(peak, baseline, "LZW tiled")
    _check_mean(out, paths[:4])


def test_the_measurement_sees_an_allocation_over_the_budget(tmp_path, baseline):
    """The harness is not blind: a process that touches 2x the budget beyond the imports is caught."""
    code, peak, stderr = peak_rss_of(
        ["-c", "import numpy, cv2, tifffile, avgstack, avgstack.cli; a = numpy.ones(4 * 2**20)"], tmp_path
    )
    assert code == 0, stderr
    assert peak - baseline > BUDGET * MARGIN


MEDIAN_FRAMES, MEDIAN_SIDE, MEDIAN_BUDGET = 25, 2000, 32 * 2**20


def test_median_of_25_frames_stays_within_32_mib(tmp_path, baseline):
    """A cube method holds every frame's rows of a band: the planner shrinks the band to fit the budget."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(MEDIAN_FRAMES):
        path = tmp_path / f"m{i}.tif"
        frame = rng.integers(0, 256, (MEDIAN_SIDE, MEDIAN_SIDE, 4), dtype=np.uint8)
        tifffile.imwrite(path, frame, photometric="rgb", extrasamples=["unassalpha"], rowsperstrip=64)
        paths.append(str(path))
    out = str(tmp_path / "median.tif")
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", out, "--method", "median", "--max-memory", "32MiB", *paths], tmp_path
    )
    assert code == 0, stderr
    extra = peak - baseline
    assert extra < MEDIAN_BUDGET * MARGIN, (
        f"median: peak RSS {peak / 2**20:.1f} MiB is {extra / 2**20:.1f} MiB above the baseline"
    )
    result = tifffile.imread(out)
    frames = _frames(paths)
    for top in range(0, MEDIAN_SIDE, 400):
        rows = slice(top, top + 400)
        expected = np.median(np.stack([f[rows] for f in frames]), axis=0).astype(np.uint8)  # odd N: a stored value
        assert np.array_equal(result[rows], expected), f"rows {top}..{top + 400} differ"


def test_nodata_and_count_map_stay_within_16_mib(stack, baseline):
    """Missing data adds a valid mask and counts per band, the count map its own band buffers: all declared."""
    folder, paths = stack
    out, counts = str(folder / "nodata.tif"), str(folder / "counts.tif")
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", out, "--max-memory", "16MiB", "--nodata", "7", "--count-map", counts, *paths],
        folder,
    )
    assert code == 0, stderr
    _assert_within_budget(peak, baseline, "nodata + count map")
    rows = slice(1000, 1100)
    frames = np.stack([f[rows] for f in _frames(paths)])
    valid = frames != 7
    expected = np.rint(np.where(valid, frames, 0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1))
    expected[valid.sum(axis=0) == 0] = 7
    assert np.array_equal(tifffile.imread(out)[rows], expected.astype(np.uint8))
    assert np.array_equal(tifffile.imread(counts)[rows], valid.sum(axis=0))


def test_alpha_coverage_and_count_map_stay_within_16_mib(stack, baseline):
    folder, paths = stack
    out, counts = str(folder / "coverage.tif"), str(folder / "coverage-counts.tif")
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", out, "--max-memory", "16MiB", "--alpha", "coverage", "--count-map", counts,
         *paths], folder,
    )
    assert code == 0, stderr
    _assert_within_budget(peak, baseline, "alpha coverage + count map")
    rows = slice(2000, 2050)
    frames = np.stack([f[rows].astype(np.float64) for f in _frames(paths)])
    a = frames[..., 3:]
    assert np.array_equal(tifffile.imread(counts)[rows], (a[..., 0] > 0).sum(axis=0))
    colour = np.where(a.sum(0) > 0, (a * frames[..., :3]).sum(0) / np.maximum(a.sum(0), 1), frames[..., :3].mean(0))
    assert np.abs(tifffile.imread(out)[rows][..., :3] - colour).max() <= 0.5
