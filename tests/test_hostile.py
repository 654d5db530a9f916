"""Issue 8, reading side: nothing is allocated on a file's word alone.

Each hostile file is generated here (large ones as sparse files) and run through
``python -m avgstack`` in a subprocess whose peak RSS is measured: the run must
end within the interpreter baseline plus the budget, either with exit 0 or with
one clear error line naming the file (exit 2 before any pixel is read, exit 1
for damaged pixel data found while reading).
"""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import cli_env, peak_rss_of
from faultfiles import check_cli_failure, set_tag_entry, tag_spots
from test_headers import gif

from avgstack.errors import BudgetError, InputError
from avgstack.reading import FilePool
from avgstack.reading.tiff import CARRIED_TAG_LIMIT, TiffSource

BUDGET = 16 * 2**20
MARGIN = 1.0  # the promise: peak RSS below the baseline plus the budget


def run_bounded(args, tmp_path, baseline) -> tuple[int, str]:
    """Run ``python -m avgstack -m 16MiB ARGS``; assert its peak RSS stays within baseline + budget."""
    code, peak, stderr = peak_rss_of(["-m", "avgstack", "--max-memory", "16MiB", *map(str, args)], tmp_path)
    assert peak - baseline < BUDGET * MARGIN, (
        f"peak RSS {peak / 2**20:.1f} MiB, baseline {baseline / 2**20:.1f} MiB, budget 16 MiB; stderr: {stderr}"
    )
    return code, stderr


def one_error_line(stderr: str, *names: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("avgstack: error: ") and all(n in lines[0] for n in names), stderr
    return lines[0]


def sparse_extend(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


# ---------------------------------------------------------------- formats decoded whole


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_issue8_gif_bomb(tmp_path, baseline, dry_run):
    """A tiny GIF declaring a 20000x20000 screen: sized from its header, refused by the budget, never decoded."""
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(gif(20000, 20000, ((0, 0, 1, 1, None),)))
    assert bomb.stat().st_size < 1000
    args = ["-o", tmp_path / "out.tif", bomb] + (["--dry-run"] if dry_run else [])
    code, stderr = run_bounded(args, tmp_path, baseline)
    assert code == 2, stderr
    one_error_line(stderr, str(bomb))
    assert not (tmp_path / "out.tif").exists()


def test_issue8_formats_without_probe_are_refused_not_decoded(tmp_path):
    import cv2

    path = tmp_path / "image.avif"
    ok, buf = cv2.imencode(".avif", np.zeros((8, 8, 3), np.uint8))
    assert ok
    path.write_bytes(buf.tobytes())
    proc = subprocess.run([sys.executable, "-m", "avgstack", "-o", tmp_path / "out.tif", path],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 2
    assert "convert" in one_error_line(proc.stderr, str(path))


def test_issue8_library_changes_no_process_state():
    """Importing the OpenCV reader sets no environment variable and leaves OpenCV's log level alone."""
    code = (
        "import os, cv2; level = cv2.utils.logging.getLogLevel(); env = dict(os.environ)\n"
        "import avgstack, avgstack.reading.opencv\n"
        "assert dict(os.environ) == env, set(os.environ) ^ set(env)\n"
        "assert cv2.utils.logging.getLogLevel() == level\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------- TIFF strips and tiles


def _png_zeros(height: int, width: int) -> bytes:
    """A valid gray PNG of zeros, compressed row by row (never held whole)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    deflate = zlib.compressobj(9)
    row = bytes(width + 1)
    idat = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_issue8_tile_payload_larger_than_its_tile(tmp_path, baseline):
    """A PNG tile whose payload declares 12000x12000 pixels is refused before it is decoded."""
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, np.zeros((256, 256), np.uint8), tile=(256, 256), compression="png")
    spots = tag_spots(path)
    data = bytearray(path.read_bytes())
    payload = _png_zeros(12000, 12000)
    assert len(payload) < 4 * 256 * 256  # within what a 256x256 tile may hold on disk
    struct.pack_into("<I", data, spots[324].value, len(data))
    struct.pack_into("<I", data, spots[325].value, len(payload))
    path.write_bytes(bytes(data) + payload)
    code, stderr = run_bounded(["-o", tmp_path / "out.tif", path], tmp_path, baseline)
    assert code == 1, stderr
    assert "strip/tile 0" in one_error_line(stderr, str(path))


def test_issue8_strip_byte_count_beyond_what_it_decodes_to(tmp_path, baseline):
    """A deflate strip declaring 1.2 GB (sparse file): refused from the header, never read."""
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), compression="zlib")
    spots = tag_spots(path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, spots[279].value, 1_200_000_000)
    path.write_bytes(bytes(data))
    sparse_extend(path, 1_300_000_000)
    code, stderr = run_bounded(["-o", tmp_path / "out.tif", path], tmp_path, baseline)
    assert code == 2, stderr
    one_error_line(stderr, str(path))


def _many_strips(path: Path, count: int) -> None:
    """A 1-pixel-wide image of ``count`` one-row strips whose tables lie in a sparse region."""
    tifffile.imwrite(path, np.zeros((1, 1), np.uint8))
    spots = tag_spots(path)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, spots[257].value, count)
    table = 1 << 16
    for code, where in ((273, table), (279, table + 4 * count)):
        set_tag_entry(data, spots[code], dtype=4, count=count)
        struct.pack_into("<I", data, spots[code].entry + 8, where)
    path.write_bytes(bytes(data))
    sparse_extend(path, table + 8 * count + 4096)


def test_issue8_twenty_million_strips_dry_run(tmp_path, baseline):
    path = tmp_path / "strips.tif"
    _many_strips(path, 20_000_000)
    code, stderr = run_bounded(["-o", tmp_path / "out.tif", "--dry-run", path], tmp_path, baseline)
    assert code == 2, stderr
    assert "strip/tile table" in one_error_line(stderr, str(path))


def test_issue8_strip_table_within_budget_is_read(tmp_path):
    path = tmp_path / "strips.tif"
    _many_strips(path, 100_000)
    with FilePool() as pool, TiffSource(str(path), 0, pool, budget=BUDGET) as src:
        assert src.info.height == 100_000
    with FilePool() as pool, pytest.raises(BudgetError, match="strip/tile table"):
        TiffSource(str(path), 0, pool, budget=2**20)


def test_issue8_long_ifd_chain_is_not_walked(tmp_path, baseline):
    """Page 0 of a file with a million pages: the chain is not followed past the page used."""
    path = tmp_path / "chain.tif"
    frame = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(path, frame)
    with tifffile.TiffFile(path) as tif:
        ifd = tif.pages[0].offset
        entries = len(tif.pages[0].tags)
    data = bytearray(path.read_bytes())
    pages = 1_000_000
    start = len(data) + len(data) % 2
    data += bytes(start - len(data))
    struct.pack_into("<I", data, ifd + 2 + 12 * entries, start)
    records = np.zeros(pages, np.dtype([("n", "<u2"), ("code", "<u2"), ("type", "<u2"), ("count", "<u4"),
                                        ("value", "<u4"), ("next", "<u4")]))
    records["n"], records["code"], records["type"], records["count"], records["value"] = 1, 254, 4, 1, 0
    records["next"] = start + 18 * np.arange(1, pages + 1, dtype=np.uint64)
    records["next"][-1] = 0
    path.write_bytes(bytes(data) + records.tobytes())
    out = tmp_path / "out.tif"
    code, stderr = run_bounded(["-o", out, path, path], tmp_path, baseline)
    assert code == 0, stderr
    assert np.array_equal(tifffile.imread(out), frame)


def test_issue8_missing_page_found_without_walking_the_chain(tmp_path):
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((4, 4), np.uint8))
        tw.write(np.ones((4, 4), np.uint8))
    with FilePool() as pool:
        assert TiffSource(str(path), 1, pool).info.height == 4
        with pytest.raises(InputError, match=r"has 2 page\(s\), page 5 was asked for"):
            TiffSource(str(path), 5, pool)


# ---------------------------------------------------------------- metadata


def _with_icc(path: Path, declared: int) -> None:
    """An RGB TIFF whose ICC tag declares ``declared`` bytes (the file is extended sparsely to hold them)."""
    tifffile.imwrite(path, np.full((16, 16, 3), 7, np.uint8), photometric="rgb", iccprofile=b"icc" * 100)
    spots = tag_spots(path)
    data = bytearray(path.read_bytes())
    set_tag_entry(data, spots[34675], count=declared)
    path.write_bytes(bytes(data))
    sparse_extend(path, spots[34675].value + declared + 16)


def test_issue8_gigabyte_icc_tag_is_never_read(tmp_path, baseline):
    path = tmp_path / "icc.tif"
    _with_icc(path, 1_000_000_000)
    out = tmp_path / "out.tif"
    code, stderr = run_bounded(["-o", out, path, path], tmp_path, baseline)
    assert code == 0, stderr
    with tifffile.TiffFile(out) as tif:
        assert 34675 not in tif.pages[0].tags
        assert np.array_equal(tif.asarray(), np.full((16, 16, 3), 7, np.uint8))


def test_issue8_icc_carried_once_and_capped(tmp_path, caplog):
    """Metadata is not held per input; carried_metadata() loads it on demand, dropping tags over the cap."""
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((4, 4, 3), np.uint8), photometric="rgb", iccprofile=b"p" * 5000)
    big = tmp_path / "big.tif"
    _with_icc(big, CARRIED_TAG_LIMIT + 1)
    with FilePool() as pool, TiffSource(str(small), 0, pool) as a, TiffSource(str(big), 0, pool) as b:
        assert "iccprofile" not in a.info.metadata and a.info.metadata["orientation"] == 1
        assert a.carried_metadata()["iccprofile"] == b"p" * 5000
        with caplog.at_level(logging.WARNING, logger="avgstack"):
            carried = b.carried_metadata()
        assert "iccprofile" not in carried
        assert [r.getMessage() for r in caplog.records if "not carried" in r.getMessage()] == [
            f"{big}: ICC profile ({CARRIED_TAG_LIMIT + 1} bytes) not carried to the output (larger than 16 MiB)"
        ]


def test_issue8_huge_eager_tag_is_refused(tmp_path):
    """ImageDescription is loaded whole by tifffile: one declaring 100 MB is refused before that."""
    path = tmp_path / "desc.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), description="x" * 100)
    spots = tag_spots(path)
    data = bytearray(path.read_bytes())
    set_tag_entry(data, spots[270], count=100_000_000)
    path.write_bytes(bytes(data))
    sparse_extend(path, spots[270].value + 100_000_016)
    with FilePool() as pool, pytest.raises(InputError, match="tag 270 declares 100000000 bytes"):
        TiffSource(str(path), 0, pool)


def test_issue8_damaged_png_gives_one_line(tmp_path):
    """libpng's own stderr line is pre-empted by avgstack's check, without touching fd 2."""
    import cv2

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    data = bytearray(good.read_bytes())
    pos = data.index(b"IDAT")
    data[pos + 30 : pos + 34] = b"\x00\x00\x00\x00"  # CRC no longer matches
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "avgstack", "-o", tmp_path / "out.tif", good, bad],
                          capture_output=True, text=True, env=cli_env(), timeout=60)
    check_cli_failure(proc, 1, str(bad))
    assert not os.path.exists(tmp_path / "out.tif")
