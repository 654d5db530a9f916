"""Image headers: what ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` will return, without decoding.

:func:`probe_header` reads only the header of a file (at most the first 64 KiB,
plus a few small reads further on for PNG chunk lists and JPEG marker lists that
run past it) and predicts the height, width, channel count and dtype of the
array that OpenCV 5.0 returns for it with ``IMREAD_UNCHANGED``. The rules here
reproduce OpenCV's decoders, quirks included (a 32-bit BMP without bit fields
loses its alpha, an OS/2 BMP always reads as gray, an RGB PNG with a ``tRNS``
chunk gains an alpha channel); the tests check every rule against ``cv2``.

Formats parsed: PNG and JPEG (here), BMP, WebP, GIF, Sun raster and JPEG 2000
(:mod:`.header_more`), netpbm, PFM and Radiance HDR (:mod:`.header_text`).

``probe_header`` returns None when it cannot say: formats it does not parse
(TIFF, AVIF, OpenEXR, JPEG XL, QOI), and files that are valid but that OpenCV
does not decode (12-bit JPEG, PAM with an unknown tuple type, ...). Callers
refuse such files rather than decode them to learn their size. It raises
:class:`HeaderError` when a file claims a format it parses but its header is
truncated or invalid.

Not modelled: OpenCV's run-time size limits, which make ``cv2.imread`` raise
``cv2.error`` or return None for images larger than they allow
(``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default; ``OPENCV_IO_MAX_IMAGE_WIDTH``
and ``HEIGHT``; the 64 MiB WebP file limit ``OPENCV_IMGCODECS_WEBP_MAX_FILE_SIZE``).
The header of such a file is still reported as it is.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator

from .header_base import _INT_MAX, _SPACE, _U8, _U16, HEAD_SIZE, Header, HeaderError, _crc, _PastHead, _Source
from .header_more import probe_bmp, probe_gif, probe_j2k, probe_jp2, probe_ras, probe_webp
from .header_text import probe_hdr, probe_pfm, probe_pnm

__all__ = ["HEAD_SIZE", "Header", "HeaderError", "check_complete", "probe_header", "sniff_format"]


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
                valid = bool(palette) and 0 < length <= palette
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


_PROBES: dict[str, Callable[[_Source], Header | None]] = {
    "png": _probe_png,
    "jpeg": _probe_jpeg,
    "bmp": probe_bmp,
    "pnm": probe_pnm,
    "pfm": probe_pfm,
    "webp": probe_webp,
    "hdr": probe_hdr,
    "gif": probe_gif,
    "ras": probe_ras,
    "jp2": probe_jp2,
    "j2k": probe_j2k,
}
