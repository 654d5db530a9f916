"""The count map: frames that contributed to each sample, streamed with the output, both or neither."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from conftest import write_tiff

import avgstack
from avgstack.errors import AvgstackError, UsageError

NODATA = -9999


def _stack(tmp_path, rng, count=4, shape=(1200, 170, 3), holes=0.3):
    frames, paths = [], []
    for i in range(count):
        f = rng.integers(-500, 500, shape).astype(np.int16)
        f[rng.random(shape) < holes] = NODATA
        frames.append(f)
        paths.append(write_tiff(tmp_path / f"f{i}.tif", f, photometric="rgb", rowsperstrip=16,
                                extratags=[(42113, "s", 0, "-9999", True), (33550, "d", 3, (2.0, 2.0, 0.0), True)]))
    return frames, paths


@pytest.mark.parametrize("threads", [1, 2])
def test_count_map_counts_valid_frames_band_by_band(tmp_path, rng, threads):
    frames, paths = _stack(tmp_path, rng)
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", count_map=tmp_path / "n.tif",
                                      max_memory="7MiB", threads=threads)
    assert report.bands > 1
    valid = np.stack(frames) != NODATA
    with tifffile.TiffFile(tmp_path / "n.tif") as tif:
        page = tif.pages[0]
        counts = page.asarray()
        assert page.dtype == np.uint16
        assert page.tags.valueof(33550) == (2.0, 2.0, 0.0)  # georeferencing carried
        assert 42113 not in page.tags  # counts have no nodata
    assert np.array_equal(counts, valid.sum(axis=0))
    out = tifffile.imread(tmp_path / "out.tif")
    assert (out[counts == 0] == NODATA).all()


def test_count_map_without_nodata_and_with_min_count(tmp_path, rng):
    frames, paths = _stack(tmp_path, rng, count=3, shape=(20, 30, 3))
    avgstack.average_to_file(paths, tmp_path / "out.tif", nodata="none", count_map=tmp_path / "n.tif")
    assert (tifffile.imread(tmp_path / "n.tif") == 3).all()
    avgstack.average_to_file(paths, tmp_path / "out.tif", min_count=2, count_map=tmp_path / "n.tif")
    counts = tifffile.imread(tmp_path / "n.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert (out[counts < 2] == NODATA).all() and (out[counts >= 2] != NODATA).any()


def test_count_map_and_output_are_written_both_or_neither(tmp_path, rng):
    frames, paths = _stack(tmp_path, rng, count=2, shape=(64, 40, 3))
    with open(paths[1], "r+b") as fh:  # cut the last strip short: found while processing
        fh.truncate(os.path.getsize(paths[1]) - 500)
    out, counts = tmp_path / "out.tif", tmp_path / "n.tif"
    with pytest.raises(AvgstackError):
        avgstack.average_to_file(paths, out, count_map=counts)
    assert not out.exists() and not counts.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_count_map_must_be_a_tiff_other_than_the_output(tmp_path, rng):
    _, paths = _stack(tmp_path, rng, count=2, shape=(8, 8, 3))
    with pytest.raises(UsageError, match="count map"):
        avgstack.average_to_file(paths, tmp_path / "out.tif", count_map=tmp_path / "n.png")
    with pytest.raises(AvgstackError, match="count map"):
        avgstack.average_to_file(paths, tmp_path / "out.tif", count_map=tmp_path / "out.tif")
    with pytest.raises(AvgstackError):
        avgstack.average_to_file(paths, tmp_path / "out.tif", count_map=paths[0])
