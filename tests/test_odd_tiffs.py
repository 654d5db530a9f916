"""Odd TIFFs as scanners, microscopes, GIS and photo tools write them.

Each case generates a small file of one kind and averages three copies of it.
avgstack must either give back exactly what tifffile decodes from the input,
with the same colour meaning (photometric, ExtraSamples, orientation and, where
it can, bits per sample), or refuse it with one clear line: an
:class:`avgstack.AvgstackError` that names the file and the problem. Never
silent garbage.

Kinds tifffile cannot write (FillOrder 2, CCITT G4, old-style JPEG, float24,
sparse strips, signed 12-bit, ...) are built byte by byte with
:func:`write_tiff`. Known avgstack bugs are marked ``xfail(strict=True)`` so a
fix shows up as an unexpected pass and the mark can be dropped.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile

import avgstack

PACKAGE_ROOT = str(Path(avgstack.__file__).resolve().parents[1])
H, W = 21, 19  # odd sizes: partial strips, tiles and bytes of packed bits

# -- a minimal classic TIFF writer for what tifffile will not write ---------------

_FORMATS = {1: "B", 3: "H", 4: "I", 5: "I", 11: "f", 12: "d"}


def write_tiff(
    path: Path,
    width: int,
    height: int,
    segments: list[bytes | None],
    tags: dict[int, tuple[int, object]],
    byteorder: str = "<",
    loop: bool = False,
) -> Path:
    """Write one IFD with ``segments`` (None: sparse, offset and byte count 0).

    ``tags`` maps a code to ``(type, value or values)``; type 2 values are
    strings. Strip offsets and counts are filled in unless ``tags`` has
    TileWidth (322), in which case tile offsets and counts are. ``loop`` makes
    the next-IFD offset point back at the IFD itself (a damaged chain).
    """
    bo = byteorder
    body = bytearray(8)
    offsets, counts = [], []
    for seg in segments:
        if seg is None:
            offsets.append(0)
            counts.append(0)
            continue
        offsets.append(len(body))
        counts.append(len(seg))
        body += seg
        if len(body) % 2:
            body += b"\0"
    tags = {256: (4, width), 257: (4, height), **tags}
    tiled = 322 in tags
    tags.setdefault(324 if tiled else 273, (4, offsets))
    tags.setdefault(325 if tiled else 279, (4, counts))
    ifd = len(body)
    extra_at = ifd + 2 + 12 * len(tags) + 4
    entries, extra = b"", bytearray()
    for code in sorted(tags):
        typ, values = tags[code]
        if typ == 2:
            raw = str(values).encode("latin-1") + b"\0"
            count = len(raw)
        else:
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            count = len(values) // 2 if typ == 5 else len(values)
            raw = struct.pack(f"{bo}{len(values)}{_FORMATS[typ]}", *values)
        if len(raw) <= 4:
            value = raw.ljust(4, b"\0")
        else:
            value = struct.pack(f"{bo}I", extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) % 2)
        entries += struct.pack(f"{bo}HHI", code, typ, count) + value
    body[:8] = (b"II" if bo == "<" else b"MM") + struct.pack(f"{bo}HI", 42, ifd)
    body += struct.pack(f"{bo}H", len(tags)) + entries + struct.pack(f"{bo}I", ifd if loop else 0) + extra
    path.write_bytes(bytes(body))
    return path


def _gray_tags(bits: int, rows: int, more: dict | None = None) -> dict:
    """Tags of an uncompressed one-sample image, updated with ``more``."""
    return {258: (3, bits), 259: (3, 1), 262: (3, 1), 277: (3, 1), 278: (4, rows), **(more or {})}


def _reverse_bits(data: np.ndarray) -> np.ndarray:
    """Bit order reversed within each byte (FillOrder 2)."""
    bits = np.unpackbits(data.reshape(-1, 1), axis=1)[:, ::-1]
    return np.packbits(bits, axis=1).reshape(data.shape)


def _float24_bytes(values: np.ndarray) -> bytes:
    """Little-endian float24 (sign, 7 exponent, 16 mantissa bits) of exactly representable values."""
    b = values.astype(np.float32).view(np.uint32).astype(np.int64)
    sign, exp, mant = (b >> 31) & 1, (b >> 23) & 0xFF, (b >> 7) & 0xFFFF
    exp = np.where(values == 0, 0, exp - 127 + 63)
    v = (sign << 23) | (exp << 16) | mant
    return np.stack([v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF], -1).astype(np.uint8).tobytes()


# -- generated kinds -----------------------------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _ints(shape, dtype, hi=None):
    dtype = np.dtype(dtype)
    info = np.iinfo(dtype)
    return _rng().integers(info.min, (hi if hi is not None else info.max) + 1, shape, dtype=dtype)


def _imwrite(**kwargs):
    """A maker writing ``data`` with tifffile.imwrite and the given arguments."""
    data = kwargs.pop("data")

    def make(path: Path) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tifffile.imwrite(path, data() if callable(data) else data, **kwargs)
        return path

    return make


def _rgb8():
    return _ints((H, W, 3), np.uint8)


def _fillorder2_u8(path: Path) -> Path:
    g = _ints((H, W), np.uint8)
    return write_tiff(path, W, H, [_reverse_bits(g).tobytes()], _gray_tags(8, H, {266: (3, 2)}))


def _fillorder2_bilevel(path: Path) -> Path:
    bits = _rng().integers(0, 2, (H, 16)).astype(bool)
    packed = _reverse_bits(np.packbits(bits, axis=1))
    return write_tiff(path, 16, H, [packed.tobytes()], _gray_tags(1, H, {262: (3, 0), 266: (3, 2)}))


def _fillorder2_u12(path: Path) -> Path:
    import imagecodecs

    v = _ints((H, W), np.uint16, 4095)
    packed = np.frombuffer(imagecodecs.packints_encode(v, 12, runlen=W), np.uint8)
    return write_tiff(path, W, H, [_reverse_bits(packed).tobytes()], _gray_tags(12, H, {266: (3, 2)}))


def _ccitt_g4(path: Path) -> Path:
    """CCITT Group 4, MinIsWhite, 16 wide: every row 4 white, 4 black, 8 white."""
    rows = 5
    first = "001" + "1011" + "011" + "1"  # horizontal mode (white 4, black 4), then V0
    bits = first + "111" * (rows - 1) + "000000000001" * 2  # V0 V0 V0 per row, EOFB
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return write_tiff(
        path, 16, rows, [data], {258: (3, 1), 259: (3, 4), 262: (3, 0), 277: (3, 1), 278: (4, rows)}
    )


def _old_style_jpeg(path: Path) -> Path:
    import imagecodecs

    jpeg = imagecodecs.jpeg8_encode(_ints((16, 24, 3), np.uint8), level=90)
    tags = {
        258: (3, [8, 8, 8]),
        259: (3, 6),
        262: (3, 6),
        277: (3, 3),
        278: (4, 16),
        513: (4, 8),
        514: (4, len(jpeg)),
    }
    return write_tiff(path, 24, 16, [jpeg], tags)


def _float24(path: Path, predictor: bool = False) -> Path:
    values = (_rng().integers(-500, 500, (H, W)) / 64).astype(np.float32)
    data = _float24_bytes(values)
    tags = _gray_tags(24, H, {339: (3, 3)})
    if predictor:
        return write_tiff(path, W, H, [zlib.compress(data)], {**tags, 259: (3, 8), 317: (3, 3)})
    return write_tiff(path, W, H, [data], tags)


def _signed12(path: Path) -> Path:
    return write_tiff(path, 4, 2, [bytes(range(12))], _gray_tags(12, 2, {339: (3, 2)}))


def _sparse_tiles(path: Path, nodata: str | None = None) -> Path:
    """Tiled int16, 32x32 in 16x16 tiles; the top two tiles are not stored (GDAL SPARSE_OK)."""
    tile = _ints((16, 16), np.int16)
    tags = {258: (3, 16), 259: (3, 8), 262: (3, 1), 277: (3, 1), 322: (3, 16), 323: (3, 16), 339: (3, 2)}
    if nodata is not None:
        tags[42113] = (2, nodata)
    seg = zlib.compress(tile.tobytes())
    return write_tiff(path, 32, 32, [None, None, seg, seg], tags)


def _sparse_strips(path: Path, compressed: bool, nodata: str | None = None) -> Path:
    """Strips of 2 rows, the first two not stored."""
    d = _ints((2, W), np.uint16, 999).tobytes()
    tags = _gray_tags(16, 2)
    if compressed:
        tags[259] = (3, 8)
        d = zlib.compress(d)
    if nodata is not None:
        tags[42113] = (2, nodata)
    return write_tiff(path, W, 6, [None, None, d], tags)


def _two_pages(path: Path) -> Path:
    with tifffile.TiffWriter(path) as tw:
        tw.write(_rgb8(), photometric="rgb")
        tw.write(_ints((H, W), np.uint16, 4095), bitspersample=12, photometric="miniswhite")
    return path


def _float64_extremes(path: Path) -> Path:
    big = np.finfo(np.float64).max
    data = np.array([[-big, big, 1e308, -7e307, 5e-324, -0.0]], np.float64)
    tifffile.imwrite(path, data, compression="zlib", predictor=3)
    return path


def _inkset(path: Path) -> Path:
    """Four inks that are not CMYK (InkSet 2) with their names."""
    tifffile.imwrite(
        path,
        _ints((H, W, 4), np.uint8),
        photometric="separated",
        extratags=[
            (332, 3, 1, 2, True),
            (334, 3, 1, 4, True),
            (333, "s", 0, "Cyan\0Magenta\0Spot 123\0Black\0", True),
        ],
    )
    return path


def _logluv(path: Path) -> Path:
    data = _ints((H, W, 3), np.int16)
    return write_tiff(
        path,
        W,
        H,
        [data.tobytes()],
        {258: (3, [16] * 3), 259: (3, 1), 262: (3, 32845), 277: (3, 3), 278: (4, H), 339: (3, [2] * 3)},
    )


def _lab(code: int):
    def make(path: Path) -> Path:
        return write_tiff(
            path,
            W,
            H,
            [_rgb8().tobytes()],
            {258: (3, [8] * 3), 259: (3, 1), 262: (3, code), 277: (3, 3), 278: (4, H)},
        )

    return make


# -- the cases -------------------------------------------------------------------


@dataclass
class Case:
    id: str
    make: Callable[[Path], Path]
    refuse: str | None = None  # regex the refusal must match; None: must be exact
    photometric: int | None = None  # expected output photometric when it differs on purpose
    bits: int | None = None  # expected output bits per sample when it differs on purpose
    page: int = 0
    marks: list = field(default_factory=list)


def _bug(reason: str):
    return [pytest.mark.xfail(strict=True, reason=f"avgstack bug: {reason}")]


CASES = [
    # bilevel and MinIsWhite
    Case("bilevel-odd-width", _imwrite(data=lambda: _rng().integers(0, 2, (H, 13)).astype(bool))),
    Case(
        "bilevel-miniswhite-tiled",
        _imwrite(
            data=lambda: _rng().integers(0, 2, (40, 40)).astype(bool), photometric="miniswhite", tile=(16, 16)
        ),
    ),
    Case("bilevel-fillorder2", _fillorder2_bilevel),
    Case("ccitt-g4-miniswhite", _ccitt_g4),
    Case("miniswhite-u8", _imwrite(data=lambda: _ints((H, W), np.uint8), photometric="miniswhite")),
    Case(
        "miniswhite-u16-alpha",
        _imwrite(data=lambda: _ints((H, W, 2), np.uint16), photometric="miniswhite", extrasamples=[2]),
    ),
    # packed and odd bit depths
    Case("gray-2bit", _imwrite(data=lambda: _ints((H, W), np.uint8, 3), bitspersample=2)),
    Case("gray-4bit", _imwrite(data=lambda: _ints((H, W), np.uint8, 15), bitspersample=4)),
    Case("rgb-4bit", _imwrite(data=lambda: _ints((H, W, 3), np.uint8, 15), bitspersample=4)),
    Case("gray-10bit", _imwrite(data=lambda: _ints((H, W), np.uint16, 1023), bitspersample=10)),
    Case("gray-12bit", _imwrite(data=lambda: _ints((H, W), np.uint16, 4095), bitspersample=12)),
    Case(
        "rgb-12bit-bigendian",
        _imwrite(data=lambda: _ints((H, W, 3), np.uint16, 4095), bitspersample=12, byteorder=">"),
    ),
    Case("gray-14bit", _imwrite(data=lambda: _ints((H, W), np.uint16, 16383), bitspersample=14)),
    Case("rgb-24bit", _imwrite(data=lambda: _ints((H, W, 3), np.uint32, 2**24 - 1), bitspersample=24)),
    Case("gray-12bit-fillorder2", _fillorder2_u12),
    Case("gray-u8-fillorder2", _fillorder2_u8),
    Case("signed-12bit", _signed12, refuse=r"12-bit"),
    # byte order, planar, tiles, alpha kinds
    Case(
        "rgb16-bigendian-lzw-pred2",
        _imwrite(data=lambda: _ints((H, W, 3), np.uint16), byteorder=">", compression="lzw", predictor=2),
    ),
    Case(
        "rgba16-planar-assoc",
        _imwrite(
            data=lambda: _ints((4, H, W), np.uint16),
            photometric="rgb",
            planarconfig="separate",
            extrasamples=[1],
        ),
    ),
    Case(
        "rgba8-planar-tiled-unassoc",
        _imwrite(
            data=lambda: _ints((4, 40, 40), np.uint8),
            photometric="rgb",
            planarconfig="separate",
            extrasamples=[2],
            tile=(16, 16),
            compression="zlib",
        ),
    ),
    Case(
        "gray-alpha-unassoc",
        _imwrite(data=lambda: _ints((H, W, 2), np.uint8), photometric="minisblack", extrasamples=[2]),
    ),
    Case(
        "gray-assoc-plus-unspecified",
        _imwrite(
            data=lambda: _ints((H, W, 3), np.uint8),
            photometric="minisblack",
            planarconfig="contig",
            extrasamples=[1, 0],
        ),
    ),
    Case(
        "rgba-unspecified",
        _imwrite(data=lambda: _ints((H, W, 4), np.uint8), photometric="rgb", extrasamples=[0]),
    ),
    Case(
        "rgb-alpha-plus-unspecified-u16",
        _imwrite(data=lambda: _ints((H, W, 5), np.uint16), photometric="rgb", extrasamples=[2, 0]),
    ),
    # CMYK / separated
    Case("cmyk8", _imwrite(data=lambda: _ints((H, W, 4), np.uint8), photometric="separated")),
    Case(
        "cmyk16-bigendian",
        _imwrite(data=lambda: _ints((H, W, 4), np.uint16), photometric="separated", byteorder=">"),
    ),
    Case(
        "cmyk-assoc-alpha",
        _imwrite(data=lambda: _ints((H, W, 5), np.uint8), photometric="separated", extrasamples=[1]),
    ),
    Case("separated-6-inks", _imwrite(data=lambda: _ints((H, W, 6), np.uint8), photometric="separated")),
    # JPEG in TIFF
    Case(
        "ycbcr-jpeg-2x2",
        _imwrite(data=_rgb8, photometric="ycbcr", subsampling=(2, 2), compression="jpeg"),
        photometric=2,
    ),
    Case(
        "ycbcr-jpeg-2x1-tiled",
        _imwrite(
            data=lambda: _ints((40, 40, 3), np.uint8),
            photometric="ycbcr",
            subsampling=(2, 1),
            compression="jpeg",
            tile=(16, 16),
        ),
        photometric=2,
    ),
    Case(
        "ycbcr-jpeg-orientation6",
        _imwrite(
            data=_rgb8,
            photometric="ycbcr",
            subsampling=(2, 2),
            compression="jpeg",
            extratags=[(274, 3, 1, 6, True)],
        ),
        photometric=2,
    ),
    Case("rgb-jpeg", _imwrite(data=_rgb8, photometric="rgb", compression="jpeg"), photometric=2),
    Case("gray-jpeg", _imwrite(data=lambda: _ints((H, W), np.uint8), compression="jpeg")),
    Case(
        "gray-jpeg-12bit",
        _imwrite(data=lambda: _ints((H, W), np.uint16, 4095), bitspersample=12, compression="jpeg"),
    ),
    Case("old-style-jpeg", _old_style_jpeg, photometric=2),
    Case(
        "ycbcr-uncompressed", _imwrite(data=_rgb8, photometric="ycbcr", subsampling=(1, 1)), refuse=r"YCbCr"
    ),
    # orientation
    Case(
        "gray-orientation3", _imwrite(data=lambda: _ints((H, W), np.uint8), extratags=[(274, 3, 1, 3, True)])
    ),
    Case(
        "gray12-orientation5",
        _imwrite(
            data=lambda: _ints((H, W), np.uint16, 4095), bitspersample=12, extratags=[(274, 3, 1, 5, True)]
        ),
    ),
    Case(
        "bilevel-orientation8",
        _imwrite(data=lambda: _rng().integers(0, 2, (H, W)).astype(bool), extratags=[(274, 3, 1, 8, True)]),
    ),
    # floats
    Case(
        "float16-pred3",
        _imwrite(
            data=lambda: _rng().standard_normal((H, W)).astype(np.float16), compression="zlib", predictor=3
        ),
    ),
    Case(
        "float32-bigendian-pred3",
        _imwrite(
            data=lambda: _rng().standard_normal((H, W, 3)).astype(np.float32),
            byteorder=">",
            compression="zlib",
            predictor=3,
        ),
    ),
    Case(
        "float32-planar-tiled-pred3",
        _imwrite(
            data=lambda: _rng().standard_normal((3, 40, 40)).astype(np.float32),
            photometric="rgb",
            planarconfig="separate",
            tile=(16, 16),
            compression="zlib",
            predictor=3,
        ),
    ),
    Case(
        "float64-tiled-pred3",
        _imwrite(
            data=lambda: _rng().standard_normal((40, 40)), tile=(16, 16), compression="zlib", predictor=3
        ),
    ),
    Case("float32-nan-inf", _imwrite(data=np.array([[np.nan, np.inf, -np.inf, -0.0, 1e-45]], np.float32))),
    Case("float24", _float24, bits=32),
    Case(
        "float24-pred3",
        lambda p: _float24(p, predictor=True),
        refuse=r"float24|decode",
    ),
    Case(
        "float64-extremes",
        _float64_extremes,
    ),
    # integer kinds
    Case("int8", _imwrite(data=lambda: _ints((H, W), np.int8))),
    Case("int16-pred2", _imwrite(data=lambda: _ints((H, W, 3), np.int16), compression="zlib", predictor=2)),
    Case("int32-bigendian", _imwrite(data=lambda: _ints((H, W), np.int32), byteorder=">")),
    Case("uint32", _imwrite(data=lambda: _ints((H, W), np.uint32))),
    Case("int64", _imwrite(data=lambda: _ints((H, W), np.int64))),
    Case("uint64", _imwrite(data=lambda: _ints((H, W), np.uint64))),
    Case("complex64", _imwrite(data=lambda: np.ones((H, W), np.complex64)), refuse=r"complex"),
    # CIELab is averaged with signed a*/b* and written back as CIELab (palette images: tests/test_kinds.py)
    Case("cielab", _lab(8)),
    # colour models avgstack refuses
    Case("icclab", _lab(9), refuse=r"ICCLab"),
    Case("itulab", _lab(10), refuse=r"ITULab"),
    Case("logluv", _logluv, refuse=r"LogLuv"),
    # sparse files (zero byte counts, as GDAL writes with SPARSE_OK=TRUE)
    Case("sparse-tiles", _sparse_tiles),
    Case("sparse-compressed-strips", lambda p: _sparse_strips(p, compressed=True)),
    Case(
        "sparse-tiles-nodata",
        lambda p: _sparse_tiles(p, nodata="-9"),
    ),
    Case(
        "sparse-uncompressed-strips",
        lambda p: _sparse_strips(p, compressed=False),
    ),
    # containers
    Case("bigtiff", _imwrite(data=_rgb8, bigtiff=True)),
    Case("second-page-12bit-miniswhite", _two_pages, page=1),
    Case(
        "inkset-not-cmyk",
        _inkset,
    ),
]


def _stored(page: tifffile.TiffPage) -> np.ndarray:
    """Decoded samples as (rows, columns, samples)."""
    data = page.asarray()
    if page.axes.startswith("S") and data.ndim == 3:
        data = np.moveaxis(data, 0, -1)
    return data.reshape(data.shape[0], data.shape[1], -1)


def _meaning(page: tifffile.TiffPage) -> dict:
    tags = page.tags
    return {
        "photometric": int(page.photometric),
        "extrasamples": tuple(int(e) for e in (page.extrasamples or ())),
        "orientation": int(tags.valueof(274, 1)),
        "bits": int(page.bitspersample),
        "sampleformat": int(page.sampleformat),
        "inks": (tags.valueof(332), tags.valueof(333), tags.valueof(334)),
    }


def _same_bits(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind == "f":
        return np.array_equal(got.view(f"u{got.dtype.itemsize}"), want.view(f"u{want.dtype.itemsize}"))
    return np.array_equal(got, want)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_mean_of_three_copies_is_exact_or_refused(case: Case, tmp_path: Path) -> None:
    path = case.make(tmp_path / f"{case.id}.tif")
    spec = f"{path}[{case.page}]" if case.page else str(path)
    out = tmp_path / "mean.tif"
    if case.refuse is not None:
        with pytest.raises(avgstack.AvgstackError) as info:
            avgstack.average_to_file([spec] * 3, out)
        message = str(info.value)
        assert path.name in message, message
        assert "\n" not in message, message
        assert re.search(case.refuse, message), message
        assert not out.exists()
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[case.page]
            want, meaning = _stored(page), _meaning(page)
    avgstack.average_to_file([spec] * 3, out)
    with tifffile.TiffFile(out) as tif:
        assert len(tif.pages) == 1
        got, got_meaning = _stored(tif.pages[0]), _meaning(tif.pages[0])
    assert _same_bits(got, want), f"{got.dtype}{got.shape} vs {want.dtype}{want.shape}"
    if case.photometric is not None:
        meaning["photometric"] = case.photometric
    if case.bits is not None:
        meaning["bits"] = case.bits
    assert got_meaning == meaning


# -- the command line ------------------------------------------------------------


def _cli(tmp_path: Path, *inputs: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "avgstack", "-o", str(tmp_path / "cli.tif"), *inputs],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _one_clear_line(proc: subprocess.CompletedProcess, name: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    assert name in lines[0]


def test_cli_exact_kind_exits_0(tmp_path: Path) -> None:
    path = _imwrite(data=lambda: _ints((H, W), np.uint16, 4095), bitspersample=12, byteorder=">")(
        tmp_path / "g12.tif"
    )
    proc = _cli(tmp_path, *[str(path)] * 3)
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "cli.tif"), tifffile.imread(path))


@pytest.mark.parametrize(
    "maker",
    [
        pytest.param(_logluv, id="logluv"),
        pytest.param(_signed12, id="signed-12bit"),
        pytest.param(
            lambda p: _float24(p, predictor=True),
            id="float24-pred3",
        ),
    ],
)
def test_cli_refusal_is_one_line_exit_2(maker, tmp_path: Path) -> None:
    path = maker(tmp_path / "odd.tif")
    _one_clear_line(_cli(tmp_path, *[str(path)] * 3), path.name)


def test_cli_refusal_of_damaged_file_is_still_one_line(tmp_path: Path) -> None:
    # a transparency mask whose IFD chain loops back on itself: tifffile logs a warning while counting pages
    path = write_tiff(
        tmp_path / "loop.tif",
        W,
        H,
        [_ints((H, W), np.uint8).tobytes()],
        _gray_tags(8, H, {262: (3, 4)}),
        loop=True,
    )
    _one_clear_line(_cli(tmp_path, *[str(path)] * 3), path.name)
