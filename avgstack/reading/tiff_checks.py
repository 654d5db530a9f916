"""Checks on a TIFF's own word, made before anything is allocated on it.

:func:`scan_ifd` reads the IFD entries of the page asked for (and of page 0,
which tifffile always parses) with a few small reads, before tifffile loads
them: the strip/tile tables and the tags tifffile loads eagerly are checked
against the file size and limits, and a page that is not there is found by
following the chain up to it only (never to its end).
:func:`payload_size` reads the width and height a compressed strip or tile
declares in its own header (JPEG, PNG, WebP, JPEG 2000), so that a payload
larger than its tile is refused before its decoder allocates for it.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import tifffile

from .header_base import Header, HeaderError, _Source
from .header_more import probe_webp

__all__ = [
    "PageMissing", "TableTooLarge", "TagTooLarge", "count_pages", "max_segment_bytes", "payload_size", "scan_ifd",
]

#: Bytes each entry of a strip/tile table costs while held: tifffile's copy of offsets and counts,
#: and avgstack's int64 copies of both.
TABLE_ENTRY_BYTES = 8 + 8 + 16
#: Largest value avgstack lets tifffile load eagerly for a tag other than the strip/tile tables.
EAGER_TAG_LIMIT = 16 * 2**20

_TABLES = (273, 279, 324, 325)
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


class PageMissing(Exception):
    """The IFD chain ends before the page asked for; ``args[0]`` is the number of pages found."""


class TableTooLarge(Exception):
    """A strip/tile table would need ``args[0]`` entries, ``args[1]`` bytes."""


class TagTooLarge(Exception):
    """A tag tifffile loads eagerly declares ``args[1]`` bytes; ``args[0]`` is its code."""


def max_segment_bytes(decoded: int) -> int:
    """Most bytes a strip or tile decoding to ``decoded`` bytes may hold on disk.

    Generous for every codec (LZW and PackBits expand incompressible data by
    at most about 1.5x and 1/128; JPEG headers and tables fit in 64 KiB), and
    the same rule sizes the decode scratch.
    """
    return 4 * decoded + 65536


#: Layout of an IFD: entry-count format and size, offset format and size, bytes per entry.
_CLASSIC = ("H", 2, "I", 4, 12)
_BIG = ("Q", 8, "Q", 8, 20)


def _header(f: Any) -> tuple[int, str, tuple[str, int, str, int, int], int] | None:
    """``(file size, byte order, IFD layout, first IFD offset)`` of an open TIFF, or None if not a TIFF
    header this understands (tifffile then refuses it)."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(16)
    order = "<" if head[:2] == b"II" else ">"
    version = struct.unpack_from(order + "H", head, 2)[0] if len(head) >= 4 else 0
    if version == 42 and len(head) >= 8:
        return size, order, _CLASSIC, struct.unpack_from(order + "I", head, 4)[0]
    if version == 43 and len(head) >= 16:
        return size, order, _BIG, struct.unpack_from(order + "Q", head, 8)[0]
    return None


def scan_ifd(path: str, page: int, table_limit: int) -> None:
    """Check page 0 and ``page`` of the TIFF at ``path`` before tifffile parses them.

    Raises
    ------
    PageMissing
        The chain has fewer than ``page + 1`` pages.
    TableTooLarge
        A strip/tile table of the checked pages would hold more than ``table_limit`` bytes.
    TagTooLarge
        A tag that tifffile loads whole declares more than :data:`EAGER_TAG_LIMIT` bytes.
    OSError
        The file cannot be read.

    Headers this does not understand are left for tifffile to refuse.
    """
    with open(path, "rb") as f:
        header = _header(f)
        if header is None:
            return
        size, order, (count_fmt, count_size, off_fmt, off_size, entry), offset = header
        for index in range(page + 1):
            if offset < 8 or offset + count_size > size:
                raise PageMissing(index)
            f.seek(offset)
            count = struct.unpack(order + count_fmt, f.read(count_size))[0]
            if count > 4096:
                return  # tifffile refuses it
            if index in (0, page):
                entries = f.read(count * entry)
                _check_entries(entries, order, off_fmt, off_size, entry, size, table_limit)
            else:
                f.seek(count * entry, os.SEEK_CUR)
            raw = f.read(off_size)
            if len(raw) < off_size:
                if index < page:
                    raise PageMissing(index + 1)
                return
            offset = struct.unpack(order + off_fmt, raw)[0]
            if offset == 0 and index < page:
                raise PageMissing(index + 1)


def _check_entries(data: bytes, order: str, off_fmt: str, off_size: int, entry: int, size: int, limit: int) -> None:
    eager = tifffile.TIFF.TAG_LOAD
    for pos in range(0, len(data) - entry + 1, entry):
        code, dtype = struct.unpack_from(order + "HH", data, pos)
        count = struct.unpack_from(order + off_fmt, data, pos + 4)[0]
        nbytes = count * _TYPE_SIZES.get(dtype, 1)
        if code in _TABLES:
            if count * TABLE_ENTRY_BYTES // 2 > limit:
                raise TableTooLarge(count, count * TABLE_ENTRY_BYTES // 2)
        elif code in eager and nbytes > max(EAGER_TAG_LIMIT, off_size):
            value = struct.unpack_from(order + off_fmt, data, pos + 4 + off_size)[0]
            if value + nbytes <= size:  # tifffile skips values that run past the end
                raise TagTooLarge(code, nbytes)


# ---------------------------------------------------------------- codec payloads

_JPEG_CODECS = {6, 7, 33007, 34892}
_J2K_CODECS = {33003, 33004, 33005, 34712}
_WEBP_CODECS = {34927, 50001}
_PNG_CODECS = {34933}


def payload_size(data: bytes, compression: int) -> tuple[int, int] | None:
    """Return ``(height, width)`` declared by a strip or tile payload's own header, if its codec has one here.

    Raises
    ------
    HeaderError
        The payload's header is damaged.
    """
    if compression in _JPEG_CODECS:
        return _jpeg_size(data)
    if compression in _PNG_CODECS:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise HeaderError("PNG payload has no IHDR chunk")
        width, height = struct.unpack_from(">II", data, 16)
        return height, width
    if compression in _WEBP_CODECS:
        header: Header | None = probe_webp(_Source(None, data[:32]))
        return None if header is None else (header.height, header.width)
    if compression in _J2K_CODECS:
        return _j2k_size(data)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2 if data[:2] == b"\xff\xd8" else 0
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1
            continue
        marker = data[pos + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD8:
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD9, 0xDA):
            return None  # tables-only stream, or a scan before any frame: the decoder refuses it
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                raise HeaderError("JPEG payload frame header is truncated")
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return height, width
        pos += 2 + length
    return None


def _j2k_size(data: bytes) -> tuple[int, int] | None:
    pos = data.find(b"\xff\x4f\xff\x51")
    if pos < 0 or pos + 24 > len(data):
        return None
    x1, y1, x0, y0 = struct.unpack_from(">IIII", data, pos + 8)
    return max(0, y1 - y0), max(0, x1 - x0)


# ---------------------------------------------------------------- page counts

#: Bytes of the smallest IFD a page can have (classic TIFF: entry count, no entries, next offset).
MIN_IFD_BYTES = 6


def count_pages(path: str) -> int:
    """Number of pages (IFDs) in the main chain of the TIFF at ``path``, from small reads only.

    The chain is followed offset by offset, each IFD checked to lie inside the
    file; a chain that loops back on itself counts its distinct pages, as
    tifffile does (Brent's cycle detection: nothing is held per page, so
    nothing is allocated on the file's word).

    Raises
    ------
    OSError
        The file cannot be read.
    """
    with open(path, "rb") as f:
        header = _header(f)
        if header is None:
            return 0
        size, order, (count_fmt, count_size, off_fmt, off_size, entry), first = header

        def valid(offset: int) -> bool:
            if offset < 8 or offset + count_size > size:
                return False
            f.seek(offset)
            count = struct.unpack(order + count_fmt, f.read(count_size))[0]
            return count <= 4096 and offset + count_size + count * entry + off_size <= size

        def following(offset: int) -> int | None:
            """The next page's offset, or None where the chain ends (or leaves the file)."""
            f.seek(offset)
            count = struct.unpack(order + count_fmt, f.read(count_size))[0]
            f.seek(offset + count_size + count * entry)
            nxt = struct.unpack(order + off_fmt, f.read(off_size))[0]
            return nxt if valid(nxt) else None

        if not valid(first):
            return 0
        # Brent: the chain x0, x1, ... of offsets inside the file ends or cycles within
        # size // MIN_IFD_BYTES distinct pages; find its length, or its cycle's length and start
        power = lam = 1
        tortoise, hare, steps = first, following(first), 1
        while hare is not None and hare != tortoise:
            if power == lam:
                tortoise, power, lam = hare, power * 2, 0
            hare = following(hare)
            lam += 1
            steps += 1
        if hare is None:
            return steps
        a: Any = first  # inside the cycle: following() never returns None
        b: Any = first
        for _ in range(lam):
            b = following(b)
        mu = 0
        while a != b:
            a, b = following(a), following(b)
            mu += 1
        return mu + lam
