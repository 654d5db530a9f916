"""Multi-page TIFFs as stacks: ``scan.tif[:]`` and ``scan.tif[a:b:c]``, against tifffile's pages."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import tifffile
from clihelpers import assert_one_error_line, describe, run
from conftest import bgr, exact_int_mean

import avgstack
from avgstack.reading.tiff_checks import count_pages


def _pages(path) -> list[np.ndarray]:
    """Every page of ``path`` as tifffile decodes it, (rows, cols, samples) in stored order."""
    with tifffile.TiffFile(path) as tif:
        out = []
        for page in tif.pages:
            a = page.asarray()
            out.append(a if a.ndim == 3 else a[:, :, None])
        return out


def _layout(rgb: np.ndarray) -> np.ndarray:
    return rgb[:, :, 0] if rgb.shape[2] == 1 else bgr(rgb)


@pytest.fixture
def scan(tmp_path, rng):
    """A plain multi-page TIFF of 7 RGB uint16 pages, one strip per 5 rows."""
    data = rng.integers(0, 65535, (7, 23, 17, 3), dtype=np.uint16, endpoint=True)
    path = tmp_path / "scan.tif"
    with tifffile.TiffWriter(path) as tw:
        for page in data:
            tw.write(page, photometric="rgb", rowsperstrip=5, compression="zlib")
    return path


@pytest.mark.parametrize("selection, pages", [
    ("[:]", slice(None)), ("[2:5]", slice(2, 5)), ("[::3]", slice(None, None, 3)),
    ("[-3:]", slice(-3, None)), ("[5:1:-2]", slice(5, 1, -2)),
])
def test_page_range_is_a_stack_of_its_pages(scan, selection, pages):
    frames = _pages(scan)[pages]
    got = avgstack.average([f"{scan}{selection}"], max_memory="4MiB")
    np.testing.assert_array_equal(got, _layout(exact_int_mean(frames)))


def test_page_range_takes_one_weight_per_page_and_mixes_with_files(scan, tmp_path):
    frames = _pages(scan)
    extra = tmp_path / "extra.tif"
    tifffile.imwrite(extra, frames[0], photometric="rgb")
    weights = [0.5, 0.25, -0.125, 1.0]
    got = avgstack.average([f"{scan}[1:4]", str(extra)], weights, dtype="float64")
    want = sum(w * f.astype(np.float64) for w, f in zip(weights, [*frames[1:4], frames[0]], strict=True))
    np.testing.assert_array_equal(got, bgr(want))
    with pytest.raises(avgstack.UsageError, match="4 weight"):
        avgstack.average([f"{scan}[:]"], [1.0] * 4)


def test_imagej_hyperstack_pages(tmp_path, rng):
    # T=3, Z=2 gray uint8 frames: ImageJ stores them as 6 pages
    data = rng.integers(0, 255, (3, 2, 19, 21), dtype=np.uint8, endpoint=True)
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZYX"})
    frames = _pages(path)
    assert len(frames) == 6
    np.testing.assert_array_equal(avgstack.average([f"{path}[:]"]), exact_int_mean(frames)[:, :, 0])
    np.testing.assert_array_equal(avgstack.average([f"{path}[1::2]"]), exact_int_mean(frames[1::2])[:, :, 0])


def test_ome_tiff_series_pages(tmp_path, rng):
    data = rng.integers(0, 65535, (4, 16, 18, 3), dtype=np.uint16, endpoint=True)
    path = tmp_path / "series.ome.tif"
    tifffile.imwrite(path, data, photometric="rgb", metadata={"axes": "TYXS"}, ome=True, tile=(16, 16))
    frames = _pages(path)
    assert len(frames) == 4
    np.testing.assert_array_equal(avgstack.average([f"{path}[:]"]), bgr(exact_int_mean(frames)))


def test_cli_page_range(scan, tmp_path):
    out = tmp_path / "avg.tif"
    result = run(["-o", out, f"{scan}[1:6:2]"])
    assert result.returncode == 0, describe(result)
    np.testing.assert_array_equal(tifffile.imread(out), exact_int_mean(_pages(scan)[1:6:2]))


def test_range_that_selects_nothing_or_is_not_a_tiff(scan, tmp_path):
    with pytest.raises(avgstack.InputError, match="selects no page of the 7"):
        avgstack.average([f"{scan}[7:]"])
    with pytest.raises(avgstack.UsageError, match="step cannot be zero"):
        avgstack.average([f"{scan}[::0]"])
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(avgstack.InputError, match="only be selected in TIFF"):
        avgstack.average([f"{png}[:]"])
    result = run(["-o", tmp_path / "o.tif", f"{tmp_path / 'missing.tif'}[:]"])
    assert_one_error_line(result, 2, "no such file")


def _chain(tmp_path, offsets_next: list[int]) -> str:
    """A little-endian classic TIFF header followed by empty IFDs at 8, 14, ...; IFD i points to offsets_next[i]."""
    body = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for nxt in offsets_next:
        body += struct.pack("<HI", 0, nxt)
    path = tmp_path / "chain.tif"
    path.write_bytes(bytes(body))
    return str(path)


def test_count_pages_walks_the_chain_within_the_file(tmp_path):
    assert count_pages(_chain(tmp_path, [14, 20, 0])) == 3
    assert count_pages(_chain(tmp_path, [14, 20, 14])) == 3  # loops back: distinct pages only
    assert count_pages(_chain(tmp_path, [14, 20, 8])) == 3
    assert count_pages(_chain(tmp_path, [8])) == 1
    assert count_pages(_chain(tmp_path, [14, 2**31])) == 2  # points past the end
    path = tmp_path / "huge-count.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 4000) + b"\0" * 20)
    assert count_pages(str(path)) == 0  # an IFD declaring more entries than the file holds
