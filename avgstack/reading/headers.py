"""Image headers: what ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` will return, without decoding.

:func:`probe_header` reads only the header of a file (at most the first 64 KiB,
plus a few small reads further on for PNG chunk lists and JPEG marker lists that
run past it) and predicts the height, width, channel count and dtype of the
array that OpenCV 5.0 returns for it with ``IMREAD_UNCHANGED``. The rules here
reproduce OpenCV's decoders, quirks included (a 32-bit BMP without bit fields
loses its alpha, an OS/2 BMP always reads as gray, an RGB PNG with a ``tRNS``
chunk gains an alpha channel); the tests check every rule against ``cv2``.

``probe_header`` returns None when it cannot say: formats it does not parse
(TIFF, GIF, JPEG 2000, AVIF, OpenEXR, Sun raster, ...), and files that are valid
but that OpenCV does not decode (12-bit JPEG, PAM with an unknown tuple type,
...). Callers then decode the file to learn its shape, or to get OpenCV's own
refusal. It raises :class:`HeaderError` when a file claims a format it parses
but its header is truncated or invalid.

Not modelled: OpenCV's run-time size limits, which make ``cv2.imread`` raise
``cv2.error`` or return None for images larger than they allow
(``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default; ``OPENCV_IO_MAX_IMAGE_WIDTH``
and ``HEIGHT``; the 64 MiB WebP file limit ``OPENCV_IMGCODECS_WEBP_MAX_FILE_SIZE``).
The header of such a file is still reported as it is.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

import numpy as np

__all__ = ["HEAD_SIZE", "Header", "HeaderError", "check_complete", "probe_header", "sniff_format"]

#: Bytes read from the start of a file; text headers must end within them.
HEAD_SIZE = 64 * 1024

_U8 = np.dtype(np.uint8)
_U16 = np.dtype(np.uint16)
_F32 = np.dtype(np.float32)
_INT_MAX = 2**31 - 1
_SPACE = b" \t\n\v\f\r"  # C isspace()
_EOL = b"\n\r"


class HeaderError(ValueError):
    """A file claims a known image format but its header is truncated or invalid."""


@dataclass(frozen=True)
class Header:
    """Shape and element type of the array ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` returns.

    Parameters
    ----------
    format : str
        Lower-case format name, as :func:`sniff_format` gives it.
    height, width : int
        Rows and columns, positive.
    channels : int
        Channel count, 1 for the 2-D arrays OpenCV returns for one channel.
    dtype : numpy.dtype
        Element type (anything :class:`numpy.dtype` accepts; stored normalised).
    """

    format: str
    height: int
    width: int
    channels: int
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        for name in ("height", "width", "channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape: ``(height, width)`` for one channel, else ``(height, width, channels)``."""
        if self.channels == 1:
            return (self.height, self.width)
        return (self.height, self.width, self.channels)

    @property
    def nbytes(self) -> int:
        """Bytes the decoded array occupies."""
        return self.height * self.width * self.channels * self.dtype.itemsize


def sniff_format(head: bytes) -> str | None:
    """Name the image format whose magic number starts ``head``.

    Parameters
    ----------
    head : bytes
        The first bytes of a file; 32 are enough (AVIF files whose brand list
        runs past them excepted).

    Returns
    -------
    str or None
        One of ``'tiff'`` (classic and BigTIFF), ``'png'``, ``'jpeg'``, ``'bmp'``,
        ``'pnm'`` (P1-P7, PAM included), ``'pfm'``, ``'webp'``, ``'exr'``, ``'hdr'``,
        ``'gif'``, ``'jp2'``, ``'j2k'``, ``'jxl'``, ``'avif'``, ``'ras'``, ``'qoi'``;
        None if no magic number matches. The netpbm signatures need a white-space
        third byte, as OpenCV requires.
    """
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 3 and head[0:1] == b"P" and head[2] in _SPACE:
        if head[1:2] in b"1234567":
            return "pnm"
        if head[1:2] in (b"F", b"f"):
            return "pfm"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = [head[8:12]] + [head[i : i + 4] for i in range(16, min(box, len(head)) - 3, 4)]
        if b"avif" in brands or b"avis" in brands:
            return "avif"
    return None


_MAGIC = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"BM", "bmp"),
    (b"v/1\x01", "exr"),
    (b"#?RADIANCE", "hdr"),
    (b"#?RGBE", "hdr"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jp2"),
    (b"\xff\x4f\xff\x51", "j2k"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "jxl"),
    (b"\xff\x0a", "jxl"),
    (b"\x59\xa6\x6a\x95", "ras"),
    (b"qoif", "qoi"),
)


def probe_header(path: str | os.PathLike[str]) -> Header | None:
    """Predict what ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` returns, from the header alone.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    Header or None
        The array's height, width, channels and dtype; None when the format is
        not one parsed here (TIFF, GIF, JPEG 2000, AVIF, OpenEXR, ...), when the
        file is valid but OpenCV does not decode it, or when a text header runs
        past the first 64 KiB. Decode the file to learn more.

    Raises
    ------
    HeaderError
        The file claims PNG, JPEG, BMP, netpbm, PFM, WebP or Radiance HDR but its
        header is truncated or invalid. The message names no path.
    OSError
        The file cannot be opened or read.
    """
    with open(path, "rb") as f:
        source = _Source(f)
        probe = _PROBES.get(sniff_format(source.head) or "")
        if probe is None:
            return None
        try:
            return probe(source)
        except _PastHead:
            return None


def check_complete(path: str | os.PathLike[str], fmt: str) -> None:
    """Refuse PNG and JPEG files cut short or with chunks running past the end.

    OpenCV may decode such files into partial garbage without an error, or
    allocate for a bogus chunk length. PNG chunks are walked by their 8-byte
    headers up to IEND (no pixel data is read); a JPEG must hold its
    end-of-image marker in its last 64 KiB. Other formats pass.

    Raises
    ------
    HeaderError
        The file is incomplete. The message names no path.
    """
    if fmt not in ("png", "jpeg"):
        return
    with open(path, "rb") as f:
        source = _Source(f)
        if fmt == "png":
            for pos, length, kind in _png_chunk_heads(source, 8, b"IEND"):
                if pos + 12 + length > source.size:
                    raise HeaderError(f"PNG {kind!r} chunk runs past the end of the file")
                if kind == b"IEND":
                    return
        elif b"\xff\xd9" not in source.read_at(max(0, source.size - HEAD_SIZE), HEAD_SIZE):
            raise HeaderError("JPEG is truncated (no end-of-image marker)")


class _PastHead(Exception):
    """A text header continues past the bytes read: cannot tell."""


class _Source:
    """The first :data:`HEAD_SIZE` bytes of an open file, and small reads beyond them."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.head = f.read(HEAD_SIZE)
        self.size = os.fstat(f.fileno()).st_size
        self.complete = self.size <= len(self.head)

    def read_at(self, offset: int, size: int) -> bytes:
        """Return up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        if offset + size <= len(self.head) or self.complete:
            return self.head[offset : offset + size]
        self._f.seek(offset)
        return self._f.read(size)

    def cursor(self, what: str, pos: int) -> _Cursor:
        """Return a byte cursor over the head for parsing a text header."""
        return _Cursor(self.head, pos, self.complete, what)


class _Cursor:
    """Byte-at-a-time reader over the head, like OpenCV's ``RLByteStream::getByte``."""

    def __init__(self, data: bytes, pos: int, complete: bool, what: str) -> None:
        self.data, self.pos, self.complete, self.what = data, pos, complete, what

    def byte(self) -> int:
        """Return the next byte; at the end, raise HeaderError (whole file read) or _PastHead."""
        if self.pos >= len(self.data):
            if self.complete:
                raise HeaderError(f"{self.what} header is truncated")
            raise _PastHead
        self.pos += 1
        return self.data[self.pos - 1]


def _crc(data: bytes) -> bytes:
    """Return the big-endian CRC-32 that PNG stores after a chunk."""
    return struct.pack(">I", zlib.crc32(data))


# ---------------------------------------------------------------- PNG

_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}
_PNG_MAX_SIDE = 1_000_000  # libpng's default user limit


def _probe_png(src: _Source) -> Header | None:
    ihdr = src.read_at(8, 25)
    if len(ihdr) < 25:
        raise HeaderError("PNG IHDR chunk is truncated")
    if ihdr[:8] != b"\x00\x00\x00\x0dIHDR":
        raise HeaderError("PNG does not start with a 13-byte IHDR chunk")
    if _crc(ihdr[4:21]) != ihdr[21:25]:
        raise HeaderError("PNG IHDR chunk fails its CRC check")
    width, height, depth, color, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr[8:21])
    if width == 0 or height == 0:
        raise HeaderError(f"PNG {'width' if width == 0 else 'height'} is zero")
    if width > _INT_MAX or height > _INT_MAX:
        raise HeaderError("PNG width or height exceeds 2**31 - 1")
    if depth not in _PNG_DEPTHS.get(color, ()):
        raise HeaderError(f"PNG colour type {color} with bit depth {depth} is invalid")
    if compression or filtering or interlace > 1:
        raise HeaderError("PNG IHDR names an unknown compression, filter or interlace method")
    transparent = _png_chunks(src, width, height, depth, color)
    if max(width, height) > _PNG_MAX_SIDE:
        return None
    channels = 4 if transparent and color in (2, 3) else _PNG_CHANNELS[color]
    return Header("png", height, width, channels, _U16 if depth == 16 else _U8)


def _png_chunk_heads(src: _Source, pos: int, before: bytes) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(offset, length, type)`` of each chunk from ``pos``; a missing header names ``before``."""
    while True:
        head = src.read_at(pos, 8)
        if len(head) < 8:
            raise HeaderError(f"PNG ends before its {before.decode()} chunk")
        length, kind = struct.unpack(">I4s", head)
        if length > _INT_MAX or not kind.isalpha():
            raise HeaderError("PNG has a chunk with an invalid length or type")
        yield pos, length, kind
        pos += 12 + length


def _png_chunks(src: _Source, width: int, height: int, depth: int, color: int) -> bool:
    """Walk the chunks before the first IDAT as libpng does; return whether a valid tRNS is there."""
    palette, transparent, frame = 0, False, None
    for pos, length, kind in _png_chunk_heads(src, 33, b"first IDAT"):
        if kind == b"IDAT":
            break
        body = b""
        if kind in (b"PLTE", b"tRNS", b"acTL", b"fcTL") and length <= 768:
            body = src.read_at(pos + 8, length + 4)
            if len(body) < length + 4:
                raise HeaderError(f"PNG {kind.decode()} chunk is truncated")
        crc_ok = body[-4:] == _crc(kind + body[:-4])
        if kind == b"PLTE":
            if palette:
                raise HeaderError("PNG has two PLTE chunks")
            valid = 0 < length <= 768 and length % 3 == 0
            if color == 3 and not (valid and crc_ok):
                raise HeaderError("PNG PLTE chunk is invalid")
            palette = min(length // 3, 1 << depth) if color == 3 else 1
        elif kind == b"tRNS":
            if color == 3:
                valid = palette and 0 < length <= palette
            else:
                valid = length == {0: 2, 2: 6}.get(color)
            transparent = transparent or bool(valid and crc_ok)
        elif kind == b"acTL":
            if length != 8 or struct.unpack(">I", body[:4])[0] == 0:
                raise HeaderError("PNG acTL chunk is invalid")
        elif kind == b"fcTL":
            if length != 26 or body[24] > 2 or body[25] > 1:
                raise HeaderError("PNG fcTL chunk is invalid")
            frame = struct.unpack(">4I", body[4:20])
        elif not kind[0] & 0x20:
            raise HeaderError(f"PNG has a misplaced or unknown critical chunk {kind.decode()}")
    if color == 3 and not palette:
        raise HeaderError("PNG palette image has no PLTE chunk before its pixels")
    if frame is not None:
        fw, fh, fx, fy = frame
        if fx + fw > width or fy + fh > height:
            raise HeaderError("PNG fcTL frame lies outside the image")
    return transparent


# ---------------------------------------------------------------- JPEG

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_UNSUPPORTED = frozenset({0xC5, 0xC6, 0xC7, 0xC8, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_KNOWN = frozenset(range(0xC0, 0xDE)) | frozenset(range(0xE0, 0xF0)) | {0xFE}
_JPEG_MAX_SIDE = 65500  # libjpeg's JPEG_MAX_DIMENSION


def _probe_jpeg(src: _Source) -> Header | None:
    pos, frame = 2, None
    while True:
        marker, pos = _jpeg_marker(src, pos)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD8, 0xD9) or marker not in _JPEG_KNOWN:
            raise HeaderError(f"JPEG has an unexpected marker 0xFF{marker:02X} before its first scan")
        size = src.read_at(pos, 2)
        if len(size) < 2:
            raise HeaderError("JPEG ends before its first scan")
        length = int.from_bytes(size, "big")
        if length < 2:
            raise HeaderError("JPEG has a segment shorter than its length field")
        if marker == 0xDA:
            if frame is None:
                raise HeaderError("JPEG scan starts before any frame header")
            body = src.read_at(pos + 2, length - 2)
            if len(body) < length - 2:
                raise HeaderError("JPEG scan header is truncated")
            count = body[0] if body else 0
            if not 1 <= count <= 4 or length != 6 + 2 * count:
                raise HeaderError("JPEG scan header is invalid")
            if not set(body[1 : 1 + 2 * count : 2]) <= frame[1]:
                raise HeaderError("JPEG scan names a component the frame lacks")
            return frame[0]
        if marker in _JPEG_UNSUPPORTED:
            return None  # hierarchical or lossless arithmetic JPEG: libjpeg refuses it
        if marker in _JPEG_SOF:
            if frame is not None:
                raise HeaderError("JPEG has two frame headers")
            body = src.read_at(pos + 2, length - 2)
            if len(body) < length - 2:
                raise HeaderError("JPEG frame header is truncated")
            frame = _jpeg_frame(marker, body)
            if frame[0] is None:
                return None
        pos += length


def _jpeg_marker(src: _Source, pos: int) -> tuple[int, int]:
    """Return the next marker and the position after it, skipping junk and fill bytes like libjpeg."""
    after_ff, size = False, 2  # a well-formed file has the marker right here
    while True:
        window = src.read_at(pos, size)
        if not window:
            raise HeaderError("JPEG ends before its first scan")
        for i, b in enumerate(window):
            if not after_ff:
                after_ff = b == 0xFF
            elif b == 0x00:
                after_ff = False
            elif b != 0xFF:
                return b, pos + i + 1
        pos, size = pos + len(window), 4096


def _jpeg_frame(marker: int, body: bytes) -> tuple[Header | None, set[int]]:
    """Parse a SOFn segment body into (header or None if OpenCV cannot decode it, component ids)."""
    if len(body) < 6:
        raise HeaderError("JPEG frame header is truncated")
    precision, height, width, count = struct.unpack(">BHHB", body[:6])
    if width == 0 or count == 0:
        raise HeaderError(f"JPEG {'width' if width == 0 else 'component count'} is zero")
    if len(body) != 6 + 3 * count:
        raise HeaderError("JPEG frame header length does not match its component count")
    components = body[6:]
    if any(not (1 <= s >> 4 <= 4 and 1 <= s & 15 <= 4) for s in components[1::3]):
        raise HeaderError("JPEG frame header has an invalid sampling factor")
    ids = set(components[0::3])
    lossless = marker in (0xC3, 0xCB)
    if not (2 <= precision <= 16 if lossless else precision in (8, 12)):
        raise HeaderError(f"JPEG precision {precision} is invalid")
    channels = {1: 1, 3: 3, 4: 3}.get(count)  # CMYK/YCCK come back as BGR
    if height == 0 or precision > 8 or channels is None or max(height, width) > _JPEG_MAX_SIDE:
        return None, ids  # DNL height, 12/16-bit, 2 or 5+ components: OpenCV fails
    return Header("jpeg", height, width, channels, _U8), ids


# ---------------------------------------------------------------- BMP

_BMP_MASKS = ((0x7C00, 0x3E0, 0x1F), (0xF800, 0x7E0, 0x1F))  # 555 and 565, as OpenCV accepts


def _probe_bmp(src: _Source) -> Header | None:
    head = src.head
    if len(head) < 18:
        raise HeaderError("BMP header is truncated")
    size = struct.unpack_from("<i", head, 14)[0]
    if size < 12:
        raise HeaderError(f"BMP info header size {size} is invalid")
    if size == 12:  # OS/2 core header: OpenCV reads every such file as gray
        if len(head) < 26:
            raise HeaderError("BMP header is truncated")
        width, height, _, bpp = struct.unpack_from("<4H", head, 18)
        if width == 0 or height == 0:
            raise HeaderError(f"BMP {'width' if width == 0 else 'height'} is zero")
        if bpp not in (1, 4, 8, 24, 32):
            return None
        if bpp <= 8 and len(src.read_at(26, 3 << bpp)) < 3 << bpp:
            raise HeaderError("BMP palette is truncated")
        return Header("bmp", height, width, 1, _U8)
    if size < 36:
        return None  # short OS/2 2.x headers: OpenCV refuses them
    if len(head) < 50:
        raise HeaderError("BMP header is truncated")
    width, height, _, bpp, compression = struct.unpack_from("<iiHHi", head, 18)
    colours = struct.unpack_from("<i", head, 46)[0]
    if width <= 0:
        raise HeaderError(f"BMP width {width} is not positive")
    if height == 0:
        raise HeaderError("BMP height is zero")
    supported = (
        (bpp in (1, 4, 8, 24, 32) and compression == 0)
        or (bpp in (16, 32) and compression == 3)
        or (bpp, compression) in ((16, 0), (8, 1), (4, 2))
    )
    if not supported:
        return None  # JPEG/PNG payloads, alpha bit fields, 2 or 64 bits: OpenCV refuses them
    if bpp <= 8:
        if not 0 <= colours <= 256:
            raise HeaderError(f"BMP colour count {colours} is invalid")
        palette = src.read_at(14 + size, 4 * (colours or 1 << bpp))
        if len(palette) < 4 * (colours or 1 << bpp):
            raise HeaderError("BMP palette is truncated")
        entries = palette.ljust(4 << bpp, b"\x00")[: 4 << bpp]
        gray = all(entries[i] == entries[i + 1] == entries[i + 2] for i in range(0, len(entries), 4))
        return Header("bmp", abs(height), width, 1 if gray else 3, _U8)
    if bpp == 16 and compression == 3:
        masks = src.read_at(14 + size, 12)  # OpenCV reads them after the info header, whatever its size
        if len(masks) < 12:
            raise HeaderError("BMP bit fields are truncated")
        if struct.unpack("<3I", masks) not in _BMP_MASKS:
            return None
    channels = 4 if bpp == 32 and compression == 3 else 3
    return Header("bmp", abs(height), width, channels, _U8)


# ---------------------------------------------------------------- netpbm

def _probe_pnm(src: _Source) -> Header | None:
    kind = src.head[1:2]
    if kind == b"7":
        return _probe_pam(src)
    cur = src.cursor("PNM", 2)
    width, height = _pnm_number(cur), _pnm_number(cur)
    maxval = 1 if kind in b"14" else _pnm_number(cur)
    if width == 0 or height == 0:
        raise HeaderError(f"PNM {'width' if width == 0 else 'height'} is zero")
    if not 0 < maxval <= 65535:
        raise HeaderError(f"PNM maximum value {maxval} is outside 1..65535")
    channels = 3 if kind in b"36" else 1
    return Header("pnm", height, width, channels, _U16 if maxval > 255 else _U8)


def _pnm_number(cur: _Cursor) -> int:
    """Read a decimal number as OpenCV's ``ReadNumber`` does: spaces and comments before, one byte after."""
    c = cur.byte()
    while not 0x30 <= c <= 0x39:
        if c == 0x23:  # '#': comment to the end of the line
            while cur.byte() not in _EOL:
                pass
            c = cur.byte()
        elif c in _SPACE:
            c = cur.byte()
        else:
            raise HeaderError(f"PNM header has an unexpected byte 0x{c:02X}")
    value = 0
    while 0x30 <= c <= 0x39:
        value = value * 10 + c - 0x30
        if value > _INT_MAX:
            raise HeaderError("PNM header number is too large")
        c = cur.byte()
    return value


_PAM_FIELDS = (b"ENDHDR", b"HEIGHT", b"WIDTH", b"DEPTH", b"MAXVAL", b"TUPLTYPE")
_PAM_TUPLES = {b"": None, b"BLACKANDWHITE": 1, b"GRAYSCALE": 1, b"GRAYSCALE_ALPHA": 2, b"RGB": 3, b"RGB_ALPHA": 4}


def _probe_pam(src: _Source) -> Header | None:
    cur = src.cursor("PAM", 2)
    if cur.byte() not in _EOL:
        raise HeaderError("PAM signature P7 is not followed by a line break")
    fields: dict[bytes, int] = {}
    tuple_depth: int | None = None
    while True:
        name, value = _pam_line(cur)
        if name == b"ENDHDR":
            break
        if name == b"TUPLTYPE":
            if value not in _PAM_TUPLES:
                return None  # a tuple type OpenCV does not know
            tuple_depth = _PAM_TUPLES[value]
        elif name:
            if name in fields:
                raise HeaderError(f"PAM header repeats {name.decode()}")
            match = re.fullmatch(rb"(-?)(\d*)", value)
            if not match or (match[1] and not match[2]) or int(match[2] or 0) >= _INT_MAX:
                raise HeaderError(f"PAM {name.decode()} is not an integer")
            fields[name] = int(value or 0)
    missing = [n.decode() for n in (b"WIDTH", b"HEIGHT", b"DEPTH", b"MAXVAL") if n not in fields]
    if missing:
        raise HeaderError(f"PAM header lacks {', '.join(missing)}")
    width, height, depth, maxval = fields[b"WIDTH"], fields[b"HEIGHT"], fields[b"DEPTH"], fields[b"MAXVAL"]
    if width <= 0 or height <= 0:
        raise HeaderError(f"PAM {'width' if width <= 0 else 'height'} is not positive")
    if not 0 <= maxval <= 65535:
        raise HeaderError(f"PAM maximum value {maxval} is outside 0..65535")
    if tuple_depth is None and maxval < 256 and depth in (1, 3):
        tuple_depth = depth  # OpenCV infers GRAYSCALE or RGB
    if tuple_depth != depth or (maxval == 1 and depth not in (1, 3)):
        return None  # OpenCV refuses depths it cannot match to a tuple type
    return Header("pnm", height, width, depth, _U16 if maxval > 255 else _U8)


def _pam_line(cur: _Cursor) -> tuple[bytes, bytes]:
    """Read one header line as OpenCV's ``ReadPAMHeaderLine``; comments give an empty name."""
    c = cur.byte()
    while c in _SPACE:
        c = cur.byte()
    if c == 0x23:
        while cur.byte() not in _EOL:
            pass
        return b"", b""
    name = bytearray()
    while c not in _SPACE and len(name) < 8:
        name.append(c)
        c = cur.byte()
    if c not in _SPACE or bytes(name) not in _PAM_FIELDS:
        raise HeaderError(f"PAM header has an unknown field {bytes(name)[:8].decode('latin-1')!r}")
    if c in _EOL:
        return bytes(name), b""
    c = cur.byte()
    while c in _SPACE:
        c = cur.byte()
    value = bytearray()
    while c not in _EOL:
        if len(value) == 255:
            raise HeaderError("PAM header line is too long")
        value.append(c)
        c = cur.byte()
    return bytes(name), bytes(value).rstrip(_SPACE)


def _probe_pfm(src: _Source) -> Header | None:
    if src.head[2:3] != b"\n":
        raise HeaderError("PFM signature is not followed by a newline")
    cur = src.cursor("PFM", 3)
    width, height = _atoi(_pfm_token(cur)), _atoi(_pfm_token(cur))
    scale = _FLOAT.match(_pfm_token(cur))  # like atof: a leading number, else 0
    if width <= 0 or height <= 0:
        raise HeaderError(f"PFM {'width' if width <= 0 else 'height'} is not positive")
    if not (scale and abs(float(scale[0])) > 0):
        raise HeaderError("PFM scale is zero or missing")
    return Header("pfm", height, width, 3 if src.head[1:2] == b"F" else 1, _F32)


_FLOAT = re.compile(rb"[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|nan)", re.IGNORECASE)


def _atoi(token: bytes) -> int:
    """Return the leading integer of ``token`` as C ``atoi`` does, 0 if there is none."""
    match = re.match(rb"[+-]?\d+", token)
    return int(match[0]) if match else 0


def _pfm_token(cur: _Cursor) -> bytes:
    """Read bytes up to one white-space byte, as OpenCV's PFM ``read_number`` does."""
    token = bytearray()
    while len(token) < 2048:
        c = cur.byte()
        if c >= 0x80:
            raise HeaderError("PFM header has a non-ASCII byte")
        if c in _SPACE:
            break
        token.append(c)
    return bytes(token).split(b"\x00")[0]


# ---------------------------------------------------------------- WebP

def _probe_webp(src: _Source) -> Header | None:
    head = src.head[:32]  # OpenCV hands libwebp exactly the first 32 bytes
    if len(head) < 32:
        raise HeaderError("WebP file is shorter than 32 bytes")
    riff_size = struct.unpack_from("<I", head, 4)[0]
    if riff_size < 12 or riff_size > 0xFFFFFFF6:
        raise HeaderError("WebP RIFF size is invalid")
    kind, size = head[12:16], struct.unpack_from("<I", head, 16)[0]
    if kind == b"VP8X":
        if size != 10:
            raise HeaderError("WebP VP8X chunk size is not 10")
        flags = head[20]
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
        if width * height >= 2**32:
            raise HeaderError("WebP canvas is too large")
        alpha = bool(flags & 0x10)
    elif kind in (b"VP8 ", b"VP8L"):
        if size > riff_size - 12:
            raise HeaderError(f"WebP {kind.decode().strip()} chunk is larger than the file claims")
        data = head[20:30]
        if kind == b"VP8L":
            bits = int.from_bytes(data[1:5], "little")
            if data[0] != 0x2F or bits >> 29:
                raise HeaderError("WebP VP8L signature or version is invalid")
            width, height, alpha = 1 + (bits & 0x3FFF), 1 + (bits >> 14 & 0x3FFF), bool(bits >> 28 & 1)
        else:
            tag = int.from_bytes(data[:3], "little")
            width = int.from_bytes(data[6:8], "little") & 0x3FFF
            height = int.from_bytes(data[8:10], "little") & 0x3FFF
            if data[3:6] != b"\x9d\x01\x2a" or tag & 1 or tag >> 1 & 7 > 3 or not tag >> 4 & 1:
                raise HeaderError("WebP VP8 frame header is invalid")
            if tag >> 5 >= size or width == 0 or height == 0:
                raise HeaderError("WebP VP8 frame size is invalid")
            alpha = False
    else:
        raise HeaderError(f"WebP starts with an unexpected chunk {kind.decode('latin-1')!r}")
    return Header("webp", height, width, 4 if alpha else 3, _U8)


# ---------------------------------------------------------------- Radiance HDR

def _probe_hdr(src: _Source) -> Header | None:
    cur = src.cursor("Radiance HDR", 0)
    _hdr_line(cur)  # '#?RADIANCE' or '#?RGBE' and anything after it
    rgbe = False
    while (line := _hdr_line(cur))[:1] != b"\n":
        rgbe = rgbe or line == b"FORMAT=32-bit_rle_rgbe\n"
    if not rgbe:
        return None  # XYZE data or no FORMAT line: OpenCV refuses them
    resolution = re.match(rb"-Y\s*([+-]?\d+)\s*\+X\s*([+-]?\d+)", _hdr_line(cur))
    if not resolution:
        return None  # rows or columns not stored top-down, left to right: OpenCV refuses them
    height, width = int(resolution[1]), int(resolution[2])
    if width <= 0 or height <= 0:
        raise HeaderError(f"Radiance HDR {'width' if width <= 0 else 'height'} is not positive")
    return Header("hdr", height, width, 3, _F32)


def _hdr_line(cur: _Cursor) -> bytes:
    """Read a line as ``fgets`` with OpenCV's 128-byte buffer does (long lines come in pieces)."""
    line = bytearray([cur.byte()])
    while line[-1] != 0x0A and len(line) < 127:
        if cur.pos >= len(cur.data) and cur.complete:
            break  # fgets returns what it has at the end of the file
        line.append(cur.byte())
    return bytes(line)


_PROBES: dict[str, Callable[[_Source], Header | None]] = {
    "png": _probe_png,
    "jpeg": _probe_jpeg,
    "bmp": _probe_bmp,
    "pnm": _probe_pnm,
    "pfm": _probe_pfm,
    "webp": _probe_webp,
    "hdr": _probe_hdr,
}
