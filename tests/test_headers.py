"""Tests for avgstack.reading.headers.

The only truth is OpenCV: every case writes a real file, reads it with
``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` and checks that ``probe_header``
predicts exactly that (or, for files OpenCV cannot read, that ``probe_header``
returns None or raises HeaderError).
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from avgstack.reading import headers
from avgstack.reading.headers import HEAD_SIZE, Header, HeaderError, probe_header, sniff_format


@pytest.fixture(autouse=True, scope="module")
def _quiet_opencv():
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    yield
    cv2.utils.logging.setLogLevel(level)


def cv2_header(path: Path) -> tuple[int, int, int, np.dtype] | None:
    """What cv2.imread(IMREAD_UNCHANGED) returns, as (height, width, channels, dtype); None if it fails."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if image is None:
        return None
    return image.shape[0], image.shape[1], 1 if image.ndim == 2 else image.shape[2], image.dtype


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def encode(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return buf.tobytes()


def animation(ext: str, channels: int, tmp_path: Path) -> bytes:
    shape = (4, 5) if channels == 1 else (4, 5, channels)
    anim = cv2.Animation()
    anim.frames = [np.zeros(shape, np.uint8), np.full(shape, 200, np.uint8)]
    anim.durations = [100, 100]
    path = tmp_path / f"anim{ext}"
    assert cv2.imwriteanimation(str(path), anim)
    return path.read_bytes()


RNG = np.random.default_rng(12345)
GRAY8 = RNG.integers(0, 256, (6, 9), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (6, 9), dtype=np.uint16)
BGR8 = RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8)
BGR16 = RNG.integers(0, 65536, (6, 9, 3), dtype=np.uint16)
BGRA8 = RNG.integers(0, 256, (6, 9, 4), dtype=np.uint8)
BGRA16 = RNG.integers(0, 65536, (6, 9, 4), dtype=np.uint16)
OPAQUE = np.dstack([BGR8, np.full((6, 9), 255, np.uint8)])

# ---------------------------------------------------------------- PNG builders


def chunk(kind: bytes, data: bytes, crc_ok: bool = True) -> bytes:
    crc = zlib.crc32(kind + data) ^ (0 if crc_ok else 1)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def ihdr(width: int, height: int, depth: int, color: int, interlace: int = 0, method: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, method, 0, interlace))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_rows(width: int, height: int, depth: int, color: int, interlace: int) -> bytes:
    bits = depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    if not interlace:
        passes = [(width, height)]
    else:  # Adam7
        passes = [
            (max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy)))
            for x0, y0, dx, dy in ADAM7
        ]
    return b"".join((b"\x00" + bytes(-(-w * bits // 8))) * h for w, h in passes if w and h)


def png(width=3, height=2, depth=8, color=0, extra=(), interlace=0) -> bytes:
    """A valid PNG of zeros; ``extra`` chunks (kind, data[, crc_ok]) go between IHDR and IDAT."""
    body = b"".join(chunk(*c) for c in extra)
    idat = chunk(b"IDAT", zlib.compress(png_rows(width, height, depth, color, interlace)))
    return b"\x89PNG\r\n\x1a\n" + ihdr(width, height, depth, color, interlace) + body + idat + chunk(b"IEND", b"")


def fctl(seq: int, width: int, height: int, dispose: int = 0) -> bytes:
    """The body of an APNG frame control chunk for a frame at (0, 0) shown for 1/10 s."""
    return struct.pack(">IIIIIHHBB", seq, width, height, 0, 0, 1, 10, dispose, 0)


def apng(depth: int, color: int, extra=()) -> bytes:
    """A two-frame APNG of zeros, 3x2."""
    rows = zlib.compress(png_rows(3, 2, depth, color, 0))
    return (
        b"\x89PNG\r\n\x1a\n" + ihdr(3, 2, depth, color) + chunk(b"acTL", struct.pack(">II", 2, 0))
        + b"".join(chunk(*c) for c in extra) + chunk(b"fcTL", fctl(0, 3, 2)) + chunk(b"IDAT", rows)
        + chunk(b"fcTL", fctl(1, 3, 2)) + chunk(b"fdAT", struct.pack(">I", 2) + rows) + chunk(b"IEND", b"")
    )


PLTE4 = (b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]))  # 4 colour entries
PLTE_GRAY = (b"PLTE", bytes([0, 0, 0, 255, 255, 255]))
PLTE256 = (b"PLTE", bytes(range(256)) * 3)
TRNS1 = (b"tRNS", b"\x00")  # entry 0 transparent


def tiff_exif(orientation: int) -> bytes:
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


# ---------------------------------------------------------------- JPEG builders


def segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def jpeg(height=8, width=8, count=1, *, sof=0xC0, precision=8, adobe=None, sampling=0x11, prefix=b"") -> bytes:
    """A hand-made JPEG of a flat image: every DC difference and AC run is the single code '0'."""
    lossless, arithmetic = sof in (0xC3, 0xCB), sof in (0xC9, 0xCA, 0xCB)
    out = b"\xff\xd8" + prefix
    if adobe is not None:
        out += segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, adobe))
    if not lossless:
        out += segment(0xDB, b"\x00" + bytes([1] * 64))
    components = b"".join(bytes([i + 1, sampling, 0]) for i in range(count))
    out += segment(sof, struct.pack(">BHHB", precision, height, width, count) + components)
    if not arithmetic:
        out += segment(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
        if not lossless:
            out += segment(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
    progressive = sof in (0xC2, 0xCA)
    start, end = (1, 0) if lossless else (0, 0) if progressive else (0, 63)
    selectors = b"".join(bytes([i + 1, 0]) for i in range(count))
    out += segment(0xDA, bytes([count]) + selectors + bytes([start, end, 0]))
    if arithmetic:
        data = bytes(16)
    else:
        blocks = -(-height // 8) * -(-width // 8) * count
        bits = height * width * count if lossless else blocks * (1 if progressive else 2)
        data = bytes(bits // 8) + (bytes([0xFF >> (bits % 8)]) if bits % 8 else b"")
    return out + data + b"\xff\xd9"


def with_sof_dims(data: bytes, height: int, width: int) -> bytes:
    i = data.index(b"\xff\xc0")
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def exif_segment(orientation: int) -> bytes:
    return segment(0xE1, b"Exif\x00\x00" + tiff_exif(orientation))


def after_soi(data: bytes, insert: bytes) -> bytes:
    return data[:2] + insert + data[2:]


def after_app0(data: bytes, insert: bytes) -> bytes:
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + insert + data[end:]


def before_scan(data: bytes, insert: bytes) -> bytes:
    i = data.index(b"\xff\xda")
    return data[:i] + insert + data[i:]


# ---------------------------------------------------------------- BMP builders


def bmp(width=5, height=3, bpp=24, compression=0, size=40, palette=None, colours=0, masks=None, pixels=None) -> bytes:
    """A BMP with an info header of ``size`` bytes; ``palette`` is a list of (b, g, r)."""
    quad = size != 12
    table = b"".join(bytes(c) + (b"\x00" if quad else b"") for c in palette or ())
    stride = (abs(width) * bpp + 31) // 32 * 4
    pixels = bytes(stride * abs(height)) if pixels is None else pixels
    if size == 12:
        info = struct.pack("<IHHHH", 12, width, height, 1, bpp)
    else:
        info = struct.pack("<IiiHHIIiiII", size, width, height, 1, bpp, compression, len(pixels), 0, 0, colours, 0)
        fields = b"".join(struct.pack("<I", m) for m in masks or ())
        if size > 40:  # masks inside a V2+ header
            info += (fields + bytes(size))[: size - 40]
        else:  # masks after a 40-byte header
            info += fields
    offset = 14 + len(info) + len(table)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + table + pixels


GRAY2 = [(0, 0, 0), (255, 255, 255)]
COLOR2 = [(0, 0, 0), (0, 0, 255)]
GRAY16P = [(i * 17,) * 3 for i in range(16)]
COLOR16P = [(i * 17, 0, 0) for i in range(16)]
GRAY256 = [(i,) * 3 for i in range(256)]
COLOR256 = [(i, 255 - i, 0) for i in range(256)]
RLE4_ROWS = (b"\x05\x00" + b"\x00\x00") * 3 + b"\x00\x01"
RLE8_END = b"\x00\x01"
ALPHA_MASKS = [0xFF0000, 0xFF00, 0xFF, 0xFF000000]
NO_ALPHA_MASKS = [0xFF0000, 0xFF00, 0xFF, 0]


def bmp_v4_16bit_masks_after_header() -> bytes:
    """A V4 BMP that repeats its 565 masks after the header, where OpenCV looks for them."""
    data = bytearray(bmp(bpp=16, compression=3, size=108, masks=[0xF800, 0x7E0, 0x1F, 0]))
    data[122:122] = struct.pack("<III", 0xF800, 0x7E0, 0x1F)
    struct.pack_into("<I", data, 10, 122 + 12)
    return bytes(data)


# ---------------------------------------------------------------- netpbm, PFM, HDR builders


def pam(depth: int, maxval: int, tupltype: bytes | None = None, extra: bytes = b"", width=5, height=3) -> bytes:
    head = b"P7\nWIDTH %d\nHEIGHT %d\nDEPTH %d\nMAXVAL %d\n" % (width, height, depth, maxval)
    if tupltype is not None:
        head += b"TUPLTYPE " + tupltype + b"\n"
    return head + extra + b"ENDHDR\n" + bytes(abs(width * height) * depth * (2 if maxval > 255 else 1))


def pfm(kind: bytes, head: bytes, width=5, height=3) -> bytes:
    return kind + head + bytes(4 * width * height * (3 if kind == b"PF\n" else 1))


def hdr(lines: bytes, resolution: bytes = b"-Y 3 +X 5\n", magic: bytes = b"#?RADIANCE\n") -> bytes:
    return magic + lines + b"\n" + resolution + bytes(4 * 15)


HDR_FORMAT = b"FORMAT=32-bit_rle_rgbe\n"
HDR_NONE = cv2.IMWRITE_HDR_COMPRESSION_NONE


VP8_KEY_FRAME = b"\x10\x02\x00\x9d\x01\x2a\x09\x00\x06\x00"  # shown key frame, 9x6


def riff(kind: bytes, payload: bytes, riff_size: int = 64, chunk_size: int = 32) -> bytes:
    """A 72-byte WebP file whose first chunk is ``kind`` with ``payload`` then zeros."""
    head = b"RIFF" + struct.pack("<I", riff_size) + b"WEBP" + kind + struct.pack("<I", chunk_size)
    return head + payload.ljust(52, b"\x00")


# ---------------------------------------------------------------- GIF, Sun raster, JPEG 2000 builders


def gif_pixels(count: int) -> bytes:
    """LZW data (minimum code size 2) for ``count`` pixels of colour 0, in sub-blocks."""
    codes = []
    for i in range(0, count, 2):
        codes += [4] + [0] * min(2, count - i)  # clear before the table grows past 3-bit codes
    codes.append(5)
    bits = sum(c << (3 * i) for i, c in enumerate(codes))
    data = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    blocks = b"".join(bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255))
    return b"\x02" + blocks + b"\x00"


def gif(width=5, height=3, frames=((0, 0, 5, 3, None),), table=True, version=b"89a", background=0, extra=b""):
    """A GIF of zeros; each frame is (left, top, width, height, transparent flag or None for no control block)."""
    flags = 0xF1 if table else 0x70
    out = b"GIF" + version + struct.pack("<HHBBB", width, height, flags, background, 0)
    out += bytes([0, 0, 0, 255, 255, 255, 9, 9, 9, 200, 0, 0]) if table else b""
    out += extra
    for left, top, w, h, transparent in frames:
        if transparent is not None:
            out += b"\x21\xf9\x04" + bytes([int(transparent)]) + b"\x0a\x00\x00\x00"
        out += b"\x2c" + struct.pack("<HHHHB", left, top, w, h, 0) + gif_pixels(w * h)
    return out + b"\x3b"


def ras(bpp=8, width=5, height=3, kind=1, maptype=0, colours=b""):
    row = -(-width * bpp // 8)
    row += row % 2
    head = struct.pack(">4s7i", b"\x59\xa6\x6a\x95", width, height, bpp, row * height, kind, maptype, len(colours))
    return head + colours + bytes(row * height)


def jpeg2k(image: np.ndarray, codecformat: str) -> bytes:
    import imagecodecs

    return imagecodecs.jpeg2k_encode(image, codecformat=codecformat)


# ---------------------------------------------------------------- cases OpenCV reads

Make = Callable[[Path], bytes]


def case(name: str, fmt: str, make: Make | bytes):
    return pytest.param(fmt, make, id=name)


READABLE = [
    # PNG written by OpenCV
    case("png-gray8", "png", lambda t: encode(".png", GRAY8)),
    case("png-gray16", "png", lambda t: encode(".png", GRAY16)),
    case("png-bgr8", "png", lambda t: encode(".png", BGR8)),
    case("png-bgr16", "png", lambda t: encode(".png", BGR16)),
    case("png-bgra8", "png", lambda t: encode(".png", BGRA8)),
    case("png-bgra16", "png", lambda t: encode(".png", BGRA16)),
    # PNG written by hand: every colour type and depth, with and without tRNS
    *[case(f"png-gray{d}", "png", png(depth=d)) for d in (1, 2, 4)],
    *[case(f"png-gray{d}-trns", "png", png(depth=d, extra=[(b"tRNS", bytes(2))])) for d in (1, 2, 4, 8, 16)],
    case("png-rgb8-trns", "png", png(color=2, extra=[(b"tRNS", bytes(6))])),
    case("png-rgb16-trns", "png", png(depth=16, color=2, extra=[(b"tRNS", bytes(6))])),
    case("png-rgb8-trns-out-of-range", "png", png(color=2, extra=[(b"tRNS", b"\xff" * 6)])),
    case("png-gray-alpha8", "png", png(color=4)),
    case("png-gray-alpha16", "png", png(depth=16, color=4)),
    case("png-rgba8-hand", "png", png(color=6)),
    *[case(f"png-palette{d}", "png", png(depth=d, color=3, extra=[PLTE4])) for d in (1, 2, 4, 8)],
    *[case(f"png-palette{d}-trns", "png", png(depth=d, color=3, extra=[PLTE4, TRNS1])) for d in (1, 2, 4, 8)],
    case("png-gray-palette8", "png", png(color=3, extra=[PLTE_GRAY])),
    case("png-palette-trns-full", "png", png(color=3, extra=[PLTE4, (b"tRNS", bytes(4))])),
    case("png-palette-trns-too-long", "png", png(color=3, extra=[PLTE4, (b"tRNS", bytes(5))])),
    case("png-palette-trns-empty", "png", png(color=3, extra=[PLTE4, (b"tRNS", b"")])),
    case("png-palette-trns-bad-crc", "png", png(color=3, extra=[PLTE4, (b"tRNS", b"\x00", False)])),
    case("png-palette-trns-before-plte", "png", png(color=3, extra=[(b"tRNS", b"\x00"), PLTE4])),
    case("png-palette-trns-twice", "png", png(color=3, extra=[PLTE4, (b"tRNS", b"\x00"), (b"tRNS", b"\x00")])),
    case("png-palette-invalid-then-valid-trns", "png", png(color=3, extra=[PLTE4, (b"tRNS", b""), (b"tRNS", b"\x00")])),
    case("png-palette1-256-entries", "png", png(depth=1, color=3, extra=[PLTE256])),
    case("png-palette1-trns-beyond-depth", "png", png(depth=1, color=3, extra=[PLTE256, (b"tRNS", bytes(3))])),
    case("png-palette1-trns-within-depth", "png", png(depth=1, color=3, extra=[PLTE256, (b"tRNS", bytes(2))])),
    case("png-rgb8-trns-wrong-length", "png", png(color=2, extra=[(b"tRNS", bytes(2))])),
    case("png-rgb8-trns-bad-crc", "png", png(color=2, extra=[(b"tRNS", bytes(6), False)])),
    case("png-gray-alpha-trns-ignored", "png", png(color=4, extra=[(b"tRNS", bytes(2))])),
    case("png-gray-with-plte-ignored", "png", png(extra=[PLTE4])),
    case("png-gray-with-bad-plte-ignored", "png", png(extra=[(b"PLTE", bytes(13))])),
    case("png-rgb-with-suggested-plte-trns", "png", png(color=2, extra=[PLTE4, (b"tRNS", bytes(6))])),
    case("png-rgb-with-bad-plte-ignored", "png", png(color=2, extra=[(b"PLTE", bytes(13), False)])),
    case("png-rgb8-interlaced", "png", png(width=11, height=9, color=2, interlace=1)),
    case("png-palette-trns-interlaced", "png", png(width=11, height=9, color=3, extra=[PLTE4, TRNS1], interlace=1)),
    case("png-ancillary-chunks", "png", png(extra=[(b"tEXt", b"a\x00b"), (b"abCD", b"x"), (b"tEXt", b"c", False)])),
    case("png-exif-orientation-6-ignored", "png", png(width=9, height=6, color=2, extra=[(b"eXIf", tiff_exif(6))])),
    case("apng-gray-cv2", "png", lambda t: animation(".png", 1, t)),
    case("apng-bgr-cv2", "png", lambda t: animation(".png", 3, t)),
    case("apng-bgra-cv2", "png", lambda t: animation(".png", 4, t)),
    case("apng-gray16", "png", apng(16, 0)),
    case("apng-rgb16", "png", apng(16, 2)),
    case("apng-rgb8-trns", "png", apng(8, 2, [(b"tRNS", bytes(6))])),
    case("apng-palette-trns", "png", apng(8, 3, [PLTE4, (b"tRNS", b"\x00")])),
    case("apng-gray-alpha16", "png", apng(16, 4)),
    # JPEG written by OpenCV
    case("jpeg-gray", "jpeg", lambda t: encode(".jpg", GRAY8)),
    case("jpeg-bgr", "jpeg", lambda t: encode(".jpg", BGR8)),
    case("jpeg-progressive", "jpeg", lambda t: encode(".jpg", BGR8, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))),
    case("jpeg-restart-interval", "jpeg", lambda t: encode(".jpg", BGR8, (cv2.IMWRITE_JPEG_RST_INTERVAL, 1))),
    case("jpeg-exif-orientation-6-ignored", "jpeg", lambda t: after_soi(encode(".jpg", BGR8), exif_segment(6))),
    case("jpeg-exif-orientation-8-ignored", "jpeg", lambda t: after_soi(encode(".jpg", GRAY8), exif_segment(8))),
    case("jpeg-junk-between-segments", "jpeg", lambda t: after_app0(encode(".jpg", BGR8), b"\x00\x12junk\xff\x00")),
    case("jpeg-fill-bytes", "jpeg", lambda t: after_app0(encode(".jpg", BGR8), b"\xff\xff\xff")),
    case("jpeg-no-app0", "jpeg", jpeg(6, 9, 3)),
    # JPEG written by hand
    case("jpeg-sof1-gray", "jpeg", jpeg(6, 9, sof=0xC1)),
    case("jpeg-sof2-dc-only", "jpeg", jpeg(6, 9, 3, sof=0xC2)),
    case("jpeg-sof3-lossless-gray", "jpeg", jpeg(6, 9, sof=0xC3)),
    case("jpeg-sof3-lossless-rgb", "jpeg", jpeg(6, 9, 3, sof=0xC3)),
    case("jpeg-sof3-lossless-6bit", "jpeg", jpeg(6, 9, sof=0xC3, precision=6)),
    case("jpeg-sof9-arithmetic", "jpeg", jpeg(6, 9, 3, sof=0xC9)),
    case("jpeg-sof10-progressive-arithmetic", "jpeg", jpeg(6, 9, sof=0xCA)),
    case("jpeg-cmyk", "jpeg", jpeg(6, 9, 4)),
    case("jpeg-cmyk-adobe", "jpeg", jpeg(6, 9, 4, adobe=0)),
    case("jpeg-ycck-adobe", "jpeg", jpeg(6, 9, 4, adobe=2)),
    case("jpeg-rgb-adobe", "jpeg", jpeg(6, 9, 3, adobe=0)),
    case("jpeg-subsampled", "jpeg", jpeg(16, 16, 1, sampling=0x22)),
    case("jpeg-height-65500", "jpeg", jpeg(65500, 8)),
    # BMP written by OpenCV: 8-bit gray palette, 24-bit, 32-bit V5 with bit fields
    case("bmp-gray-cv2", "bmp", lambda t: encode(".bmp", GRAY8)),
    case("bmp-bgr-cv2", "bmp", lambda t: encode(".bmp", BGR8)),
    case("bmp-bgra-cv2", "bmp", lambda t: encode(".bmp", BGRA8)),
    # BMP written by hand
    case("bmp-1bit-gray", "bmp", bmp(bpp=1, palette=GRAY2)),
    case("bmp-1bit-color", "bmp", bmp(bpp=1, palette=COLOR2)),
    case("bmp-4bit-gray", "bmp", bmp(bpp=4, palette=GRAY16P)),
    case("bmp-4bit-color", "bmp", bmp(bpp=4, palette=COLOR16P)),
    case("bmp-8bit-gray", "bmp", bmp(bpp=8, palette=GRAY256)),
    case("bmp-8bit-color", "bmp", bmp(bpp=8, palette=COLOR256)),
    case("bmp-8bit-2-colours-gray", "bmp", bmp(bpp=8, palette=GRAY2, colours=2)),
    case("bmp-8bit-2-colours-color", "bmp", bmp(bpp=8, palette=COLOR2, colours=2)),
    case("bmp-4bit-2-colours-gray", "bmp", bmp(bpp=4, palette=GRAY2, colours=2)),
    case("bmp-1bit-1-colour-color", "bmp", bmp(bpp=1, palette=[(0, 0, 9)], colours=1)),
    case("bmp-rle8-gray", "bmp", bmp(bpp=8, compression=1, palette=GRAY256, pixels=RLE8_END)),
    case("bmp-rle8-color", "bmp", bmp(bpp=8, compression=1, palette=COLOR256, pixels=RLE8_END)),
    case("bmp-rle4-gray", "bmp", bmp(bpp=4, compression=2, palette=GRAY16P, pixels=RLE4_ROWS)),
    case("bmp-rle4-color", "bmp", bmp(bpp=4, compression=2, palette=COLOR16P, pixels=RLE4_ROWS)),
    case("bmp-16bit-rgb555", "bmp", bmp(bpp=16)),
    case("bmp-16bit-bitfields-565", "bmp", bmp(bpp=16, compression=3, masks=[0xF800, 0x7E0, 0x1F])),
    case("bmp-16bit-bitfields-555", "bmp", bmp(bpp=16, compression=3, masks=[0x7C00, 0x3E0, 0x1F])),
    case("bmp-16bit-v4-masks-after-header", "bmp", bmp_v4_16bit_masks_after_header()),
    case("bmp-24bit-top-down", "bmp", bmp(height=-3)),
    *[case(f"bmp-24bit-header{s}", "bmp", bmp(size=s)) for s in (52, 56, 64, 108, 124)],
    case("bmp-24bit-colours-ignored", "bmp", bmp(colours=5)),
    case("bmp-32bit-rgb", "bmp", bmp(bpp=32)),
    case("bmp-32bit-rgb-v5", "bmp", bmp(bpp=32, size=124)),
    case("bmp-32bit-bitfields-no-alpha", "bmp", bmp(bpp=32, compression=3, masks=NO_ALPHA_MASKS[:3])),
    case("bmp-32bit-bitfields-52", "bmp", bmp(bpp=32, compression=3, size=52, masks=NO_ALPHA_MASKS[:3])),
    case("bmp-32bit-bitfields-v4-alpha", "bmp", bmp(bpp=32, compression=3, size=108, masks=ALPHA_MASKS)),
    case("bmp-32bit-bitfields-v5-no-alpha", "bmp", bmp(bpp=32, compression=3, size=124, masks=NO_ALPHA_MASKS)),
    case("bmp-os2-24bit", "bmp", bmp(size=12)),
    case("bmp-os2-32bit", "bmp", bmp(bpp=32, size=12)),
    case("bmp-os2-8bit-color", "bmp", bmp(bpp=8, size=12, palette=COLOR256)),
    case("bmp-os2-1bit-gray", "bmp", bmp(bpp=1, size=12, palette=GRAY2)),
    # netpbm written by OpenCV
    case("pgm8-cv2", "pnm", lambda t: encode(".pgm", GRAY8)),
    case("pgm16-cv2", "pnm", lambda t: encode(".pgm", GRAY16)),
    case("ppm8-cv2", "pnm", lambda t: encode(".ppm", BGR8)),
    case("ppm16-cv2", "pnm", lambda t: encode(".ppm", BGR16)),
    case("pbm-cv2", "pnm", lambda t: encode(".pbm", GRAY8)),
    case("pam-gray-cv2", "pnm", lambda t: encode(".pam", GRAY8)),
    case("pam-bgr-cv2", "pnm", lambda t: encode(".pam", BGR8)),
    # netpbm written by hand
    case("pnm-p1", "pnm", b"P1\n5 3\n" + b"0 1 0 1 0\n" * 3),
    case("pnm-p1-packed", "pnm", b"P1\n5 3\n" + b"01010\n" * 3),
    case("pnm-p2-255", "pnm", b"P2\n5 3\n255\n" + b"1 2 3 4 5\n" * 3),
    case("pnm-p2-1000", "pnm", b"P2\n5 3\n1000\n" + b"1 2 3 4 5\n" * 3),
    case("pnm-p3-255", "pnm", b"P3\n5 3\n255\n" + b"1 2 3 " * 15),
    case("pnm-p3-4095", "pnm", b"P3\n5 3\n4095\n" + b"1 2 3 " * 15),
    case("pnm-p4", "pnm", b"P4\n5 3\n" + bytes(3)),
    case("pnm-p5-maxval-1", "pnm", b"P5\n5 3\n1\n" + bytes(15)),
    case("pnm-p5-maxval-15", "pnm", b"P5\n5 3\n15\n" + bytes(15)),
    case("pnm-p5-maxval-256", "pnm", b"P5\n5 3\n256\n" + bytes(30)),
    case("pnm-p6-comments", "pnm", b"P6 # a\n# b\n5 # c\n 3\n#d\n255\n" + bytes(45)),
    case("pnm-p6-tabs-cr", "pnm", b"P6\t5\r3\r255\r" + bytes(45)),
    case("pnm-p6-maxval-leading-zeros", "pnm", b"P6\n5 3\n000255\n" + bytes(45)),
    case("pnm-p6-65535", "pnm", b"P6\n5 3\n65535\n" + bytes(90)),
    case("pam-bw-maxval-1", "pnm", pam(1, 1, b"BLACKANDWHITE")),
    case("pam-bw-maxval-65535", "pnm", pam(1, 65535, b"BLACKANDWHITE")),
    case("pam-gray-maxval-255", "pnm", pam(1, 255, b"GRAYSCALE")),
    case("pam-gray-maxval-1000", "pnm", pam(1, 1000, b"GRAYSCALE")),
    case("pam-gray-alpha-255", "pnm", pam(2, 255, b"GRAYSCALE_ALPHA")),
    case("pam-gray-alpha-65535", "pnm", pam(2, 65535, b"GRAYSCALE_ALPHA")),
    case("pam-rgb-maxval-1", "pnm", pam(3, 1, b"RGB")),
    case("pam-rgb-65535", "pnm", pam(3, 65535, b"RGB")),
    case("pam-rgb-alpha-255", "pnm", pam(4, 255, b"RGB_ALPHA")),
    case("pam-rgb-alpha-65535", "pnm", pam(4, 65535, b"RGB_ALPHA")),
    case("pam-depth1-maxval-1-untyped", "pnm", pam(1, 1)),
    case("pam-depth3-maxval-1-untyped", "pnm", pam(3, 1)),
    case("pam-tupltype-without-value", "pnm", pam(3, 255, None, b"TUPLTYPE\n")),
    case("pam-tupltype-trailing-spaces", "pnm", pam(3, 255, b"RGB   ")),
    case("pam-tupltype-twice", "pnm", pam(3, 255, b"GRAYSCALE", b"TUPLTYPE RGB\n")),
    case("pam-comment", "pnm", pam(3, 255, None, b"# hello\n")),
    case("pam-maxval-0", "pnm", pam(3, 0)),
    case("pam-crlf", "pnm", b"P7\r\nWIDTH 5\r\nHEIGHT 3\r\nDEPTH 3\r\nMAXVAL 255\r\nENDHDR\r\n" + bytes(45)),
    case("pam-blank-lines-tabs", "pnm", b"P7\n\n  WIDTH\t5\nHEIGHT 3 \nDEPTH 3\nMAXVAL 255\nENDHDR x\n" + bytes(45)),
    # PFM
    case("pfm-gray-cv2", "pfm", lambda t: encode(".pfm", GRAY8.astype(np.float32))),
    case("pfm-bgr-cv2", "pfm", lambda t: encode(".pfm", BGR8.astype(np.float32))),
    case("pfm-big-endian", "pfm", pfm(b"PF\n", b"5 3\n1.0\n")),
    case("pfm-scale-exponent", "pfm", pfm(b"Pf\n", b"5\t3\n-2.5e-1\n")),
    case("pfm-number-suffix", "pfm", pfm(b"Pf\n", b"5x 3\n-1\n")),
    # WebP written by OpenCV
    case("webp-lossless-bgr", "webp", lambda t: encode(".webp", BGR8)),
    case("webp-lossless-gray", "webp", lambda t: encode(".webp", GRAY8)),
    case("webp-lossless-bgra", "webp", lambda t: encode(".webp", BGRA8)),
    case("webp-lossless-opaque-bgra", "webp", lambda t: encode(".webp", OPAQUE)),
    case("webp-lossy-bgr", "webp", lambda t: encode(".webp", BGR8, (cv2.IMWRITE_WEBP_QUALITY, 80))),
    case("webp-lossy-bgra", "webp", lambda t: encode(".webp", BGRA8, (cv2.IMWRITE_WEBP_QUALITY, 80))),
    case("webp-1x1", "webp", lambda t: encode(".webp", BGRA8[:1, :1])),
    case("webp-animated-bgr", "webp", lambda t: animation(".webp", 3, t)),
    case("webp-animated-bgra", "webp", lambda t: animation(".webp", 4, t)),
    # Radiance HDR
    case("hdr-cv2-rle", "hdr", lambda t: encode(".hdr", BGR8.astype(np.float32) / 255)),
    case("hdr-cv2-gray", "hdr", lambda t: encode(".hdr", GRAY8)),
    case("hdr-cv2-flat", "hdr", lambda t: encode(".hdr", BGR8, (cv2.IMWRITE_HDR_COMPRESSION, HDR_NONE))),
    case("hdr-rgbe-magic", "hdr", hdr(HDR_FORMAT, magic=b"#?RGBE\n")),
    case("hdr-extra-lines", "hdr", hdr(b"# made by hand\nEXPOSURE=2.0\n" + HDR_FORMAT + b"GAMMA=1\n")),
    case("hdr-long-line", "hdr", hdr(b"SOFTWARE=" + b"x" * 300 + b"\n" + HDR_FORMAT)),
    case("hdr-resolution-spacing", "hdr", hdr(HDR_FORMAT, b"-Y   3  +X\t5\n")),
    # GIF
    case("gif-bgr-cv2", "gif", lambda t: encode(".gif", BGR8)),
    case("gif-bgra-cv2", "gif", lambda t: encode(".gif", BGRA8)),
    case("gif-animated-cv2", "gif", lambda t: animation(".gif", 3, t)),
    case("gif-no-control-block", "gif", gif()),
    case("gif87a", "gif", gif(version=b"87a")),
    case("gif-transparent", "gif", gif(frames=((0, 0, 5, 3, True),))),
    case("gif-frame-smaller-than-screen", "gif", gif(9, 7, ((2, 1, 5, 3, False),))),
    case("gif-last-control-block-decides", "gif", gif(frames=((0, 0, 5, 3, False), (0, 0, 5, 3, True)))),
    case("gif-last-control-block-opaque", "gif", gif(frames=((0, 0, 5, 3, True), (0, 0, 5, 3, False)))),
    case("gif-no-colour-table", "gif", gif(table=False)),
    case("gif-comment-and-app-blocks", "gif", gif(extra=b"\x21\xfe\x03abc\x00\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")),
    # Sun raster
    case("ras-gray-cv2", "ras", lambda t: encode(".ras", GRAY8)),
    case("ras-bgr-cv2", "ras", lambda t: encode(".ras", BGR8)),
    case("ras-bgra-cv2-is-bgr", "ras", lambda t: encode(".ras", BGRA8)),
    case("ras-1bit", "ras", ras(1)),
    case("ras-8bit-gray-map", "ras", ras(8, maptype=1, colours=bytes(range(4)) * 3)),
    case("ras-8bit-colour-map", "ras", ras(8, maptype=1, colours=bytes([1, 2, 3, 4, 5, 6]))),
    case("ras-1bit-colour-map", "ras", ras(1, maptype=1, colours=bytes([0, 9, 0, 9, 0, 8]))),
    case("ras-24bit-old", "ras", ras(24, kind=0)),
    case("ras-32bit", "ras", ras(32)),
    # JPEG 2000 (written by imagecodecs: this OpenCV cannot write images this small)
    *[case(f"{f}-{n}", f, functools.partial(lambda t, a, f: jpeg2k(a, f), a=a, f=f))
      for f in ("jp2", "j2k") for n, a in (("gray8", GRAY8), ("rgb8", BGR8), ("rgba8", BGRA8), ("gray16", GRAY16), ("rgb16", BGR16))],
    case("jp2-cv2", "jp2", lambda t: encode(".jp2", RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8))),
]


def build(tmp_path: Path, make: Make | bytes, name: str = "image") -> Path:
    data = make(tmp_path) if callable(make) else make
    return write(tmp_path, name, data)


@pytest.mark.parametrize(("fmt", "make"), READABLE)
def test_probe_matches_cv2(tmp_path, fmt, make):
    path = build(tmp_path, make)
    expected = cv2_header(path)
    assert expected is not None, "OpenCV must read this file"
    assert probe_header(path) == Header(fmt, *expected)
    assert probe_header(str(path)) == Header(fmt, *expected)


# Known OpenCV behaviours, pinned so that a change in OpenCV shows up here by name.
SURPRISES = [
    pytest.param(png(color=4), (2, 3, 4, np.uint8), id="png-gray-alpha-is-bgra"),
    pytest.param(png(color=2, extra=[(b"tRNS", bytes(6))]), (2, 3, 4, np.uint8), id="png-rgb-trns-gains-alpha"),
    pytest.param(png(extra=[(b"tRNS", bytes(2))]), (2, 3, 1, np.uint8), id="png-gray-trns-stays-gray"),
    pytest.param(png(color=3, extra=[PLTE_GRAY]), (2, 3, 3, np.uint8), id="png-gray-palette-is-bgr"),
    pytest.param(png(color=3, extra=[PLTE4, (b"tRNS", b"\x00")]), (2, 3, 4, np.uint8), id="png-palette-trns-is-bgra"),
    pytest.param(bmp(bpp=32), (3, 5, 3, np.uint8), id="bmp-32bit-rgb-drops-alpha"),
    pytest.param(bmp(bpp=32, compression=3, masks=NO_ALPHA_MASKS[:3]), (3, 5, 4, np.uint8), id="bmp-bitfields-keep-4"),
    pytest.param(bmp(size=12), (3, 5, 1, np.uint8), id="bmp-os2-is-gray"),
    pytest.param(bmp(bpp=8, palette=GRAY256), (3, 5, 1, np.uint8), id="bmp-gray-palette-is-gray"),
    pytest.param(jpeg(6, 9, 4), (6, 9, 3, np.uint8), id="jpeg-cmyk-is-bgr"),
    pytest.param(encode(".webp", OPAQUE), (6, 9, 3, np.uint8), id="webp-opaque-bgra-written-as-bgr"),
]


@pytest.mark.parametrize(("data", "expected"), SURPRISES)
def test_pinned_opencv_behaviour(tmp_path, data, expected):
    path = write(tmp_path, "image", data)
    h, w, c, dtype = expected
    assert cv2_header(path) == (h, w, c, np.dtype(dtype))
    assert probe_header(path) == Header(sniff_format(data), h, w, c, dtype)


def test_imread_unchanged_ignores_exif_orientation(tmp_path):
    path = write(tmp_path, "rotated.jpg", after_soi(encode(".jpg", BGR8), exif_segment(6)))
    assert cv2.imread(str(path), cv2.IMREAD_COLOR).shape == (9, 6, 3)  # rotated by the default flag
    assert probe_header(path).shape == cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (6, 9, 3)


# ---------------------------------------------------------------- valid files OpenCV does not read: None

UNSUPPORTED = [
    pytest.param(jpeg(6, 9, sof=0xC1, precision=12), id="jpeg-12bit"),
    pytest.param(jpeg(6, 9, 3, sof=0xC1, precision=12), id="jpeg-12bit-color"),
    pytest.param(jpeg(6, 9, sof=0xC3, precision=16), id="jpeg-lossless-16bit"),
    pytest.param(jpeg(6, 9, sof=0xC3, precision=12), id="jpeg-lossless-12bit"),
    pytest.param(jpeg(6, 9, sof=0xC5), id="jpeg-hierarchical"),
    pytest.param(jpeg(6, 9, sof=0xC8), id="jpeg-reserved-jpg-frame"),
    pytest.param(jpeg(6, 9, sof=0xCB), id="jpeg-lossless-arithmetic"),
    pytest.param(jpeg(6, 9, 2), id="jpeg-2-components"),
    pytest.param(jpeg(6, 9, 5), id="jpeg-5-components"),
    pytest.param(with_sof_dims(jpeg(8, 8), 0, 8), id="jpeg-height-0-dnl"),
    pytest.param(jpeg(65501, 8), id="jpeg-height-65501"),
    pytest.param(bmp(compression=4), id="bmp-jpeg-payload"),
    pytest.param(bmp(bpp=32, compression=6, size=56, masks=ALPHA_MASKS), id="bmp-alphabitfields"),
    pytest.param(bmp(bpp=2, palette=GRAY2 * 2), id="bmp-2bit"),
    pytest.param(bmp(compression=3, masks=NO_ALPHA_MASKS[:3]), id="bmp-24bit-bitfields"),
    pytest.param(bmp(bpp=4, compression=1, palette=COLOR16P, pixels=RLE8_END), id="bmp-rle8-at-4bit"),
    pytest.param(bmp(bpp=16, compression=3, masks=[0xF00, 0xF0, 0xF]), id="bmp-16bit-444"),
    pytest.param(bmp(bpp=16, compression=3, size=108, masks=[0xF800, 0x7E0, 0x1F, 0]), id="bmp-16bit-v4-masks"),
    pytest.param(bmp()[:14] + struct.pack("<I", 20) + bmp()[18:], id="bmp-header-size-20"),
    pytest.param(pam(1, 65535), id="pam-16bit-untyped"),
    pytest.param(pam(2, 255), id="pam-depth2-untyped"),
    pytest.param(pam(4, 255), id="pam-depth4-untyped"),
    pytest.param(pam(3, 255, b"FOO"), id="pam-unknown-tupltype"),
    pytest.param(pam(2, 255, b"BLACKANDWHITE_ALPHA"), id="pam-bw-alpha"),
    pytest.param(pam(1, 255, b"RGB"), id="pam-rgb-depth1"),
    pytest.param(pam(3, 255, b"GRAYSCALE"), id="pam-gray-depth3"),
    pytest.param(pam(2, 1, b"GRAYSCALE_ALPHA"), id="pam-gray-alpha-maxval-1"),
    pytest.param(pam(4, 1, b"RGB_ALPHA"), id="pam-rgb-alpha-maxval-1"),
    pytest.param(pam(5, 255, b"RGB_ALPHA"), id="pam-depth5"),
    pytest.param(pam(3, 255, b""), id="pam-tupltype-space-swallows-endhdr"),
    pytest.param(hdr(b"FORMAT=32-bit_rle_xyze\n"), id="hdr-xyze"),
    pytest.param(hdr(b""), id="hdr-no-format"),
    pytest.param(hdr(HDR_FORMAT, b"+Y 3 +X 5\n"), id="hdr-bottom-up"),
    pytest.param(hdr(HDR_FORMAT, b"-Y 3 -X 5\n"), id="hdr-right-to-left"),
    pytest.param(png(width=1_000_001, height=1), id="png-width-over-libpng-limit"),
    pytest.param(ras(8, kind=2), id="ras-byte-encoded-refused-by-opencv"),
    pytest.param(ras(16), id="ras-16bit"),
    pytest.param(ras(8, maptype=2, colours=bytes(6)), id="ras-raw-map"),
    pytest.param(jpeg2k(np.dstack([GRAY8, GRAY8]), "jp2"), id="jp2-two-components"),
    pytest.param(jpeg2k(GRAY8.astype(np.int8), "j2k"), id="j2k-signed"),
]


@pytest.mark.parametrize("data", UNSUPPORTED)
def test_unsupported_variants_give_none(tmp_path, data):
    path = write(tmp_path, "image", data)
    assert cv2_header(path) is None
    assert probe_header(path) is None


def test_formats_read_elsewhere_give_none(tmp_path):
    for ext, image in ((".tif", BGR16), (".avif", BGR8)):
        path = write(tmp_path, "image" + ext, encode(ext, image))
        assert cv2_header(path) is not None
        assert sniff_format(path.read_bytes()) == {".tif": "tiff", ".avif": "avif"}[ext]
        assert probe_header(path) is None
    exr = write(tmp_path, "image.exr", b"v/1\x01\x02\x00\x00\x00channels\x00chlist\x00" + bytes(64))
    assert cv2_header(exr) is None  # this OpenCV build has no OpenEXR
    assert probe_header(exr) is None


def test_unknown_and_empty_files_give_none(tmp_path):
    files = {"empty": b"", "text": b"hello, world\n", "junk-after-soi.jpg": after_soi(GOOD_JPEG, b"\x00")}
    for name, data in files.items():
        path = write(tmp_path, name, data)
        assert cv2_header(path) is None  # OpenCV, too, needs FF D8 FF to call a file JPEG
        assert probe_header(path) is None


def test_text_header_longer_than_head_gives_none(tmp_path):
    comment = b"# " + b"x" * HEAD_SIZE + b"\n"
    path = write(tmp_path, "long.pgm", b"P5\n" + comment + b"5 3\n255\n" + bytes(15))
    assert cv2_header(path) == (3, 5, 1, np.dtype(np.uint8))
    assert probe_header(path) is None


# ---------------------------------------------------------------- invalid headers: HeaderError

GOOD_PNG = png()
GOOD_JPEG = encode(".jpg", BGR8)
SOS = GOOD_JPEG.index(b"\xff\xda")
SOF = GOOD_JPEG.index(b"\xff\xc0")

INVALID = [
    pytest.param(b"\x89PNG\r\n\x1a\n", id="png-signature-only"),
    pytest.param(GOOD_PNG[:20], id="png-ihdr-cut"),
    pytest.param(GOOD_PNG[:33], id="png-ends-after-ihdr"),
    pytest.param(GOOD_PNG[:37], id="png-ends-inside-idat-header"),
    pytest.param(png(width=0), id="png-width-0"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + ihdr(3, 0, 8, 0) + GOOD_PNG[33:], id="png-height-0"),
    pytest.param(png()[:29] + b"\x00\x00\x00\x00" + png()[33:], id="png-ihdr-bad-crc"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + ihdr(3, 2, 3, 0) + GOOD_PNG[33:], id="png-depth-3"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + ihdr(3, 2, 4, 2) + GOOD_PNG[33:], id="png-rgb-depth-4"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + ihdr(3, 2, 8, 0, interlace=2) + GOOD_PNG[33:], id="png-interlace-2"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + ihdr(3, 2, 8, 0, method=1) + GOOD_PNG[33:], id="png-compression-1"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + chunk(b"CgBI", bytes(4)) + GOOD_PNG[8:], id="png-cgbi-first"),
    pytest.param(png(color=3), id="png-palette-without-plte"),
    pytest.param(png(color=3, extra=[(b"PLTE", bytes(13))]), id="png-palette-plte-13-bytes"),
    pytest.param(png(color=3, extra=[(b"PLTE", b"")]), id="png-palette-plte-empty"),
    pytest.param(png(color=3, extra=[(PLTE4[0], PLTE4[1], False)]), id="png-palette-plte-bad-crc"),
    pytest.param(png(color=3, extra=[PLTE4, PLTE4]), id="png-two-plte"),
    pytest.param(png(extra=[(b"ABCD", b"x")]), id="png-unknown-critical-chunk"),
    pytest.param(png(extra=[(b"ab1d", b"")]), id="png-invalid-chunk-type"),
    pytest.param(png(extra=[(b"IHDR", GOOD_PNG[16:29])]), id="png-second-ihdr"),
    pytest.param(png(extra=[(b"IEND", b"")]), id="png-iend-before-idat"),
    pytest.param(png(extra=[(b"acTL", struct.pack(">II", 0, 0))]), id="png-actl-zero-frames"),
    pytest.param(png(extra=[(b"acTL", b"\x00\x00\x00\x02")]), id="png-actl-short"),
    pytest.param(png(extra=[(b"fcTL", fctl(0, 4, 2))]), id="png-fctl-too-wide"),
    pytest.param(png(extra=[(b"fcTL", fctl(0, 3, 2, dispose=3))]), id="png-fctl-bad-dispose"),
    pytest.param(b"\xff\xd8\xff", id="jpeg-soi-only"),
    pytest.param(GOOD_JPEG[: SOF + 6], id="jpeg-frame-header-cut"),
    pytest.param(GOOD_JPEG[:SOS], id="jpeg-ends-before-scan"),
    pytest.param(GOOD_JPEG[: SOS + 6], id="jpeg-scan-header-cut"),
    pytest.param(with_sof_dims(GOOD_JPEG, 6, 0), id="jpeg-width-0"),
    pytest.param(GOOD_JPEG[: SOF + 9] + b"\x00" + GOOD_JPEG[SOF + 10 :], id="jpeg-0-components"),
    pytest.param(GOOD_JPEG[: SOF + 2] + b"\x00\x08" + GOOD_JPEG[SOF + 4 :], id="jpeg-frame-length-wrong"),
    pytest.param(GOOD_JPEG[:2] + GOOD_JPEG[SOS:], id="jpeg-scan-before-frame"),
    pytest.param(b"\xff\xd8\xff\xd9", id="jpeg-eoi-first"),
    pytest.param(after_soi(GOOD_JPEG, b"\xff\xd8"), id="jpeg-second-soi"),
    pytest.param(after_soi(GOOD_JPEG, segment(0x02, b"x")), id="jpeg-reserved-marker"),
    pytest.param(jpeg(8, 8, sampling=0x51), id="jpeg-sampling-5"),
    pytest.param(jpeg(8, 8, precision=7), id="jpeg-precision-7"),
    pytest.param(before_scan(jpeg(8, 8), segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")), id="jpeg-two-frames"),
    pytest.param(before_scan(jpeg(8, 8), segment(0xDA, b"\x01\x07\x00\x00\x3f\x00")), id="jpeg-scan-unknown-component"),
    pytest.param(before_scan(jpeg(8, 8), segment(0xDA, b"\x02\x01\x00\x00\x3f\x00")), id="jpeg-scan-length-wrong"),
    pytest.param(b"BM\x00\x00", id="bmp-cut"),
    pytest.param(bmp()[:40], id="bmp-info-header-cut"),
    pytest.param(bmp(width=0), id="bmp-width-0"),
    pytest.param(bmp(width=-5), id="bmp-width-negative"),
    pytest.param(bmp(height=0), id="bmp-height-0"),
    pytest.param(bmp(bpp=8, palette=COLOR256, colours=300), id="bmp-300-colours"),
    pytest.param(bmp(bpp=8, palette=[])[:60], id="bmp-palette-cut"),
    pytest.param(bmp(bpp=16, compression=3)[:60], id="bmp-bit-fields-cut"),
    pytest.param(bmp()[:14] + struct.pack("<I", 8) + bmp()[18:], id="bmp-header-size-8"),
    pytest.param(bmp(size=12, width=0), id="bmp-os2-width-0"),
    pytest.param(b"P6\n5", id="pnm-cut-in-size"),
    pytest.param(b"P6\n5 3\n", id="pnm-cut-before-maxval"),
    pytest.param(b"P5\n5 3\n255", id="pnm-cut-after-maxval"),
    pytest.param(b"P6\n5 x3\n255\n" + bytes(45), id="pnm-letter-in-size"),
    pytest.param(b"P6\n-5 3\n255\n" + bytes(45), id="pnm-negative-width"),
    pytest.param(b"P6\n0 3\n255\n" + bytes(45), id="pnm-width-0"),
    pytest.param(b"P5\n5 0\n255\n" + bytes(45), id="pnm-height-0"),
    pytest.param(b"P5\n5 3\n0\n" + bytes(45), id="pnm-maxval-0"),
    pytest.param(b"P5\n5 3\n65536\n" + bytes(45), id="pnm-maxval-65536"),
    pytest.param(b"P6\n99999999999 3\n255\n" + bytes(45), id="pnm-width-overflow"),
    pytest.param(b"P6\n5 3 #comment to the end 255\n" + bytes(45), id="pnm-comment-eats-maxval"),
    pytest.param(b"P7 \nWIDTH 5\nHEIGHT 3\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + bytes(45), id="pam-space-after-p7"),
    pytest.param(b"P7\nWIDTH 5\nHEIGHT 3\nDEPTH 3\nENDHDR\n" + bytes(45), id="pam-no-maxval"),
    pytest.param(pam(3, 255, width=0), id="pam-width-0"),
    pytest.param(pam(3, 255, width=-5), id="pam-width-negative"),
    pytest.param(pam(3, 255, None, b"FOO 1\n"), id="pam-unknown-field"),
    pytest.param(pam(3, 255, None, b"width 5\n"), id="pam-lower-case-field"),
    pytest.param(pam(3, 255, None, b"WIDTH 5\n"), id="pam-repeated-width"),
    pytest.param(pam(3, 70000), id="pam-maxval-70000"),
    pytest.param(b"P7\nWIDTH 5x\nHEIGHT 3\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + bytes(45), id="pam-width-5x"),
    pytest.param(b"P7\nWIDTH 5 6\nHEIGHT 3\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + bytes(45), id="pam-width-two-numbers"),
    pytest.param(b"P7\nWIDTH 5\nHEIGHT 3\n", id="pam-cut"),
    pytest.param(b"PF\n7", id="pfm-cut"),
    pytest.param(pfm(b"PF ", b"5 3\n-1\n"), id="pfm-space-after-signature"),
    pytest.param(pfm(b"Pf\n", b"5 3\n0\n"), id="pfm-scale-0"),
    pytest.param(pfm(b"Pf\n", b"5 3\nabc\n"), id="pfm-scale-text"),
    pytest.param(pfm(b"Pf\n", b"0 3\n-1\n"), id="pfm-width-0"),
    pytest.param(pfm(b"Pf\n", b"5  3\n-1\n"), id="pfm-two-spaces"),
    pytest.param(b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/", id="webp-shorter-than-32"),
    pytest.param(riff(b"VP8L", b"\x2f", riff_size=4), id="webp-riff-size-too-small"),
    pytest.param(riff(b"VP8X", bytes(10), chunk_size=11), id="webp-vp8x-size-11"),
    pytest.param(riff(b"VP8L", b"\x2e"), id="webp-vp8l-bad-signature"),
    pytest.param(riff(b"VP8L", b"\x2f\x00\x00\x00\xe0"), id="webp-vp8l-version-7"),
    pytest.param(riff(b"VP8 ", VP8_KEY_FRAME.replace(b"\x2a", b"\x2b")), id="webp-vp8-bad-start-code"),
    pytest.param(riff(b"VP8 ", VP8_KEY_FRAME[:6] + b"\x00\x00\x06\x00"), id="webp-vp8-width-0"),
    pytest.param(riff(b"VP8 ", b"\x11" + VP8_KEY_FRAME[1:]), id="webp-vp8-not-key-frame"),
    pytest.param(riff(b"VP8 ", VP8_KEY_FRAME, chunk_size=80), id="webp-vp8-chunk-too-big"),
    pytest.param(riff(b"ALPH", b""), id="webp-alph-first"),
    pytest.param(b"#?RADIANCE\n" + HDR_FORMAT, id="hdr-cut-before-blank-line"),
    pytest.param(b"#?RADIANCE\n" + HDR_FORMAT + b"\n", id="hdr-cut-before-resolution"),
    pytest.param(hdr(HDR_FORMAT, b"-Y 0 +X 5\n"), id="hdr-height-0"),
    pytest.param(hdr(HDR_FORMAT, b"-Y 3 +X -5\n"), id="hdr-width-negative"),
    pytest.param(gif()[:11], id="gif-cut-in-screen"),
    pytest.param(gif(width=0), id="gif-width-0"),
    pytest.param(gif()[:-1], id="gif-no-trailer"),
    pytest.param(gif(extra=b"\x99"), id="gif-unknown-block"),
    pytest.param(gif(frames=((1, 0, 5, 3, None),)), id="gif-frame-outside-screen"),
    pytest.param(gif(background=4), id="gif-background-outside-table"),
    pytest.param(gif(frames=()), id="gif-no-image"),
    pytest.param(ras()[:20], id="ras-cut"),
    pytest.param(ras(width=0), id="ras-width-0"),
    pytest.param(ras(8, maptype=1, colours=bytes(6))[:34], id="ras-map-cut"),
    pytest.param(jpeg2k(GRAY8, "j2k")[:30], id="j2k-siz-cut"),
    pytest.param(jpeg2k(GRAY8, "jp2")[:40], id="jp2-no-codestream"),
]


@pytest.mark.parametrize("data", INVALID)
def test_invalid_headers_raise(tmp_path, data):
    path = write(tmp_path, "zz_input_file", data)
    assert cv2_header(path) is None
    with pytest.raises(HeaderError) as info:
        probe_header(path)
    message = str(info.value)
    assert message and str(tmp_path) not in message and "zz_input_file" not in message


def test_header_error_is_a_value_error():
    assert issubclass(HeaderError, ValueError)


def test_missing_file_raises_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe_header(tmp_path / "missing.png")


# ---------------------------------------------------------------- reading only the header

BIG = RNG.integers(0, 256, (400, 600, 3), dtype=np.uint8)
BIG_FILES = {
    "png": (".png", lambda: encode(".png", BIG, (cv2.IMWRITE_PNG_COMPRESSION, 1))),
    "jpeg": (".jpg", lambda: encode(".jpg", BIG)),
    "bmp": (".bmp", lambda: encode(".bmp", BIG)),
    "ppm": (".ppm", lambda: encode(".ppm", BIG)),
    "pam": (".pam", lambda: encode(".pam", BIG)),
    "pfm": (".pfm", lambda: encode(".pfm", BIG.astype(np.float32))),
    "webp": (".webp", lambda: encode(".webp", BIG, (cv2.IMWRITE_WEBP_QUALITY, 95))),
    "hdr": (".hdr", lambda: encode(".hdr", BIG)),
}


@functools.cache
def big_file(kind: str) -> bytes:
    return BIG_FILES[kind][1]()


class CountingFile:
    """A read-only file that counts the bytes read from it."""

    def __init__(self, path, log: list[int]) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by __exit__
        self._log = log

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._log.append(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def fileno(self) -> int:
        return self._f.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


@pytest.fixture
def read_log(monkeypatch) -> list[int]:
    log: list[int] = []
    monkeypatch.setattr(headers, "open", lambda path, mode="rb": CountingFile(path, log), raising=False)
    return log


@pytest.mark.parametrize("kind", sorted(BIG_FILES))
def test_large_file_reads_at_most_the_head(tmp_path, read_log, kind):
    ext = BIG_FILES[kind][0]
    path = write(tmp_path, "big" + ext, big_file(kind))
    assert path.stat().st_size > 3 * HEAD_SIZE
    header = probe_header(path)
    assert sum(read_log) <= HEAD_SIZE
    assert header == Header(header.format, *cv2_header(path))


@pytest.mark.parametrize("kind", sorted(BIG_FILES))
def test_file_truncated_after_the_header(tmp_path, kind):
    ext = BIG_FILES[kind][0]
    data = big_file(kind)
    full = write(tmp_path, "full" + ext, data)
    cut = write(tmp_path, "cut" + ext, data[:4096])
    expected = probe_header(full)
    assert expected == Header(expected.format, *cv2_header(full))
    assert probe_header(cut) == expected


def test_jpeg_markers_past_the_head_are_read_sparingly(tmp_path, read_log):
    big_app = segment(0xE2, bytes(65533))
    path = write(tmp_path, "app.jpg", after_soi(encode(".jpg", BIG), big_app * 4))
    assert probe_header(path) == Header("jpeg", *cv2_header(path))
    assert sum(read_log) <= HEAD_SIZE + 1024


def test_png_chunks_past_the_head_are_read_sparingly(tmp_path, read_log):
    text = (b"tEXt", b"comment\x00" + b"x" * (3 * HEAD_SIZE))
    path = write(tmp_path, "text.png", png(width=300, height=200, color=3, extra=[text, PLTE4, (b"tRNS", b"\x00")]))
    assert probe_header(path) == Header("png", *cv2_header(path)) == Header("png", 200, 300, 4, np.uint8)
    assert sum(read_log) <= HEAD_SIZE + 1024


# ---------------------------------------------------------------- sniff_format


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"II+\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00+\x00\x08\x00\x00", "tiff"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR", "png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"BM\x36\x00\x00\x00", "bmp"),
        *[(b"P%d\n5 3\n" % k, "pnm") for k in range(1, 8)],
        (b"P6 5 3 255 ", "pnm"),
        (b"PF\n5 3\n-1\n", "pfm"),
        (b"Pf\n5 3\n-1\n", "pfm"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"v/1\x01\x02\x00\x00\x00", "exr"),
        (b"#?RADIANCE\n", "hdr"),
        (b"#?RGBE\n", "hdr"),
        (b"GIF87a\x01\x00", "gif"),
        (b"GIF89a\x01\x00", "gif"),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2"),
        (b"\xff\x4f\xff\x51\x00\x2f", "j2k"),
        (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),
        (b"\xff\x0a\xfa\x7f", "jxl"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "avif"),
        (b"\x00\x00\x00\x1cftypavis\x00\x00\x00\x00avismif1", "avif"),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avif", "avif"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic", None),
        (b"\x59\xa6\x6a\x95\x00\x00\x00\x07", "ras"),
        (b"qoif\x00\x00\x00\x07", "qoi"),
        (b"", None),
        (b"P", None),
        (b"P8\n", None),
        (b"P6x5 3", None),
        (b"PFx", None),
        (b"RIFF\x24\x00\x00\x00AVI LIST", None),
        (b"\xff\xd8\x00", None),
        (b"hello world", None),
    ],
)
def test_sniff_format(head, expected):
    assert sniff_format(head) == expected


def test_sniff_format_names_what_cv2_writes():
    for ext, name in ((".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".pgm", "pnm"), (".pam", "pnm"),
                      (".pfm", "pfm"), (".webp", "webp"), (".hdr", "hdr"), (".tif", "tiff"), (".gif", "gif"),
                      (".ras", "ras"), (".avif", "avif")):
        assert sniff_format(encode(ext, BGR8 if ext != ".pgm" else GRAY8)[:32]) == name


# ---------------------------------------------------------------- Header


def test_header_shape_and_size():
    gray = Header("png", 4, 5, 1, "uint16")
    color = Header("jpeg", 4, 5, 3, np.uint8)
    assert gray.dtype == np.dtype(np.uint16) and isinstance(gray.dtype, np.dtype)
    assert gray.shape == (4, 5) and gray.nbytes == 40
    assert color.shape == (4, 5, 3) and color.nbytes == 60


@pytest.mark.parametrize("field", ["height", "width", "channels"])
def test_header_rejects_non_positive_sizes(field):
    values = {"height": 4, "width": 5, "channels": 1, field: 0}
    with pytest.raises(ValueError, match=field):
        Header("png", dtype=np.uint8, **values)


def test_header_is_frozen():
    with pytest.raises(AttributeError):
        Header("png", 4, 5, 1, np.uint8).width = 6
