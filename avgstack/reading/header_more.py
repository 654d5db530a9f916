"""Header probes for binary formats other than PNG and JPEG: BMP, WebP, GIF, Sun raster, JPEG 2000."""

from __future__ import annotations

import struct

from .header_base import _U8, _U16, Header, HeaderError, _Source

__all__ = ["probe_bmp", "probe_gif", "probe_j2k", "probe_jp2", "probe_ras", "probe_webp"]


# ---------------------------------------------------------------- BMP

_BMP_MASKS = ((0x7C00, 0x3E0, 0x1F), (0xF800, 0x7E0, 0x1F))  # 555 and 565, as OpenCV accepts


def probe_bmp(src: _Source) -> Header | None:
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


# ---------------------------------------------------------------- WebP

def probe_webp(src: _Source) -> Header | None:
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


# ---------------------------------------------------------------- GIF

class _Bytes:
    """Sequential byte reads over a file in 64 KiB windows: walking a GIF's blocks costs no memory."""

    def __init__(self, src: _Source, pos: int) -> None:
        self._src, self.pos, self._base, self._window = src, pos, pos, b""

    def byte(self, what: str) -> int:
        i = self.pos - self._base
        if not 0 <= i < len(self._window):
            self._base, self._window = self.pos, self._src.read_at(self.pos, 65536)
            i = 0
            if not self._window:
                raise HeaderError(f"GIF ends inside its {what}")
        self.pos += 1
        return self._window[i]

    def skip(self, n: int) -> None:
        self.pos += n

    def sub_blocks(self, what: str) -> None:
        """Skip data sub-blocks up to their zero-length terminator."""
        while n := self.byte(what):
            self.skip(n)


def probe_gif(src: _Source) -> Header | None:
    """GIF: OpenCV returns the logical screen, BGR, or BGRA when the last graphic control block has transparency.

    OpenCV walks every block of the file to count frames before decoding the
    first, and fails on any block it does not know; this walks them the same
    way (reading the file in windows, never holding it).
    """
    head = src.read_at(0, 13)
    if len(head) < 13:
        raise HeaderError("GIF header is truncated")
    width, height, flags, background = struct.unpack_from("<HHBB", head, 6)
    if width == 0 or height == 0:
        raise HeaderError(f"GIF screen {'width' if width == 0 else 'height'} is zero")
    pos = 13
    if flags & 0x80:
        table = 1 << ((flags & 7) + 1)
        if background >= table:
            raise HeaderError("GIF background colour lies outside its colour table")
        pos += 3 * table
    cur = _Bytes(src, pos)
    channels, first = 3, None
    while (kind := cur.byte("block list")) != 0x3B:
        if kind == 0x21:
            label = cur.byte("extension")
            if label == 0xF9:
                while n := cur.byte("graphic control block"):
                    if n == 4:
                        packed = cur.byte("graphic control block")
                        if first is None and packed >> 2 & 7 > 3:
                            raise HeaderError("GIF graphic control block names an unknown disposal method")
                        channels = 4 if packed & 1 else 3
                        cur.skip(3)
                    else:
                        if first is None:
                            raise HeaderError("GIF graphic control block is not 4 bytes long")
                        cur.skip(n)
            else:
                cur.sub_blocks("extension")
        elif kind == 0x2C:
            desc = bytes(cur.byte("image descriptor") for _ in range(9))
            left, top, w, h, iflags = struct.unpack("<HHHHB", desc)
            if first is None:
                first = (w, h)
                if w == 0 or h == 0 or left + w > width or top + h > height:
                    raise HeaderError("GIF first image lies outside the logical screen or is empty")
            if iflags & 0x80:
                cur.skip(3 * (1 << ((iflags & 7) + 1)))
            cur.skip(1)  # LZW minimum code size
            cur.sub_blocks("image data")
        else:
            raise HeaderError(f"GIF has an unknown block type 0x{kind:02X}")
    if first is None:
        raise HeaderError("GIF has no image")
    # the decoder composes on a BGRA screen and keeps the first frame's LZW output
    scratch = 4 * width * height + first[0] * first[1]
    return Header("gif", height, width, channels, _U8, scratch)


# ---------------------------------------------------------------- Sun raster

def probe_ras(src: _Source) -> Header | None:
    """Sun raster: 1/8-bit become gray unless the colour map has colour, 24/32-bit become BGR."""
    head = src.read_at(0, 32)
    if len(head) < 32:
        raise HeaderError("Sun raster header is truncated")
    width, height, bpp, _, kind, maptype, maplength = struct.unpack_from(">iiiiiii", head, 4)
    if width <= 0 or height <= 0:
        raise HeaderError(f"Sun raster {'width' if width <= 0 else 'height'} is not positive")
    palette_size = 3 << bpp if 0 < bpp <= 8 else 0
    if (
        bpp not in (1, 8, 24, 32)
        or kind not in (0, 1)  # OpenCV's check lets only old and standard encodings through
        or not ((maptype == 0 and maplength == 0) or (maptype == 1 and 0 < maplength <= palette_size))
    ):
        return None
    if maplength == 0:
        return Header("ras", height, width, 3 if bpp > 8 else 1, _U8)
    table = src.read_at(32, maplength)
    if len(table) < maplength:
        raise HeaderError("Sun raster colour map is truncated")
    n = maplength // 3
    entries = [(table[i], table[n + i], table[2 * n + i]) for i in range(n)]
    entries += [(0, 0, 0)] * ((1 << bpp) - n)
    colour = any(r != g or g != b for r, g, b in entries)
    return Header("ras", height, width, 3 if colour else 1, _U8)


# ---------------------------------------------------------------- JPEG 2000

_JP2_SPACES = {16: "srgb", 17: "gray", 18: "sycc"}


def probe_jp2(src: _Source) -> Header | None:
    """JPEG 2000 in a JP2 box structure: the colour space from ``colr``, the rest from the codestream."""
    pos, space, codestream = 0, "unknown", None
    while codestream is None:
        box = src.read_at(pos, 16)
        if len(box) < 8:
            raise HeaderError("JP2 ends before its codestream box")
        length, kind = struct.unpack_from(">I4s", box)
        header = 8
        if length == 1:
            if len(box) < 16:
                raise HeaderError("JP2 box header is truncated")
            length, header = struct.unpack_from(">Q", box, 8)[0], 16
        elif length == 0:
            length = src.size - pos
        if length < header:
            raise HeaderError("JP2 box is shorter than its header")
        if kind == b"jp2h":
            space = _jp2_colour(src, pos + header, pos + length) or space
        elif kind == b"jp2c":
            codestream = pos + header
        pos += length
    return _codestream(src, codestream, "jp2", space)


def _jp2_colour(src: _Source, pos: int, end: int) -> str | None:
    """Return the enumerated colour space of the first ``colr`` box inside ``jp2h``."""
    while pos + 8 <= end:
        length, kind = struct.unpack(">I4s", src.read_at(pos, 8).ljust(8, b"\0"))
        if kind == b"colr":
            body = src.read_at(pos + 8, 7)
            if len(body) == 7 and body[0] == 1:
                return _JP2_SPACES.get(int.from_bytes(body[3:7], "big"), "other")
            return None
        if length < 8:
            return None
        pos += length
    return None


def probe_j2k(src: _Source) -> Header | None:
    """A raw JPEG 2000 codestream."""
    return _codestream(src, 0, "j2k", "unknown")


def _codestream(src: _Source, pos: int, fmt: str, space: str) -> Header | None:
    """Read the SIZ segment after SOC; return what OpenCV's OpenJPEG decoder gives for it."""
    siz = src.read_at(pos, 4 + 38)
    if len(siz) < 42 or siz[:4] != b"\xff\x4f\xff\x51":
        raise HeaderError(f"{fmt.upper()} codestream does not start with SOC and SIZ")
    length = int.from_bytes(siz[4:6], "big")
    x1, y1, x0, y0 = struct.unpack_from(">IIII", siz, 8)
    count = int.from_bytes(siz[40:42], "big")
    if not 1 <= count <= 16384 or length != 38 + 3 * count:
        raise HeaderError(f"{fmt.upper()} SIZ segment is invalid")
    if x1 <= x0 or y1 <= y0:
        raise HeaderError(f"{fmt.upper()} image is empty")
    comps = src.read_at(pos + 42, 3 * count)
    if len(comps) < 3 * count:
        raise HeaderError(f"{fmt.upper()} SIZ segment is truncated")
    width, height = x1 - x0, y1 - y0
    precs = [(comps[3 * i] & 0x7F) + 1 for i in range(count)]
    signed = any(comps[3 * i] & 0x80 for i in range(count))
    subsampled = any(comps[3 * i + 1] != 1 or comps[3 * i + 2] != 1 for i in range(count))
    prec = max(precs)
    if count not in (1, 3, 4) or signed or subsampled or not 8 <= prec <= 16 or x0 or y0:
        return None  # OpenCV refuses these, or cannot convert them
    if space == "other" or (space in ("gray", "sycc") and count == 4):
        return None
    # OpenJPEG holds every sample as a 32-bit integer while decoding
    return Header(fmt, height, width, count, _U8 if prec == 8 else _U16, 4 * width * height * count)
