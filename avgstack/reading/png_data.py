"""Check a PNG's compressed pixel data before libpng sees it.

libpng reports damaged pixel data (``IDAT: CRC error``, ``incorrect data
check``, ``bad adaptive filter value``, ``Not enough image data``) by writing
to file descriptor 2 itself, and a library must not redirect that descriptor.
:func:`verify_png_data` finds the same damage first, so that avgstack can say it
in its own single line: it walks the IDAT chunks, checks their CRCs, inflates
the stream in bounded pieces (the output is looked at and dropped) and checks
every row's filter byte. Memory stays within a few hundred KiB whatever the
image size; the cost is one extra inflate of the file.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .header_base import HeaderError

__all__ = ["verify_png_data"]

_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PIECE = 256 * 1024


def _row_runs(width: int, height: int, bits: int, interlace: int) -> list[tuple[int, int, int]]:
    """Return ``(start, row_bytes, rows)`` of each pass in the inflated stream (row bytes include the filter byte)."""
    if interlace:
        passes = [
            (-(-(width - x0) // dx), -(-(height - y0) // dy)) for x0, y0, dx, dy in _ADAM7
        ]
    else:
        passes = [(width, height)]
    runs, start = [], 0
    for w, h in passes:
        if w > 0 and h > 0:
            row = 1 + (w * bits + 7) // 8
            runs.append((start, row, h))
            start += row * h
    return runs


def _check_filters(piece: bytes, offset: int, runs: list[tuple[int, int, int]]) -> None:
    """Raise if a row of ``runs`` starting inside ``piece`` (at stream ``offset``) has a filter byte above 4."""
    end = offset + len(piece)
    data = np.frombuffer(piece, np.uint8)
    for start, row, rows in runs:
        stop = start + row * rows
        if stop <= offset or start >= end:
            continue
        first = max(0, -(-(offset - start) // row))
        last = min(rows, -(-(end - start) // row))
        if first < last:
            at = start + np.arange(first, last, dtype=np.int64) * row - offset
            if np.any(data[at] > 4):
                raise HeaderError("PNG pixel data is corrupt (bad adaptive filter value)")


def verify_png_data(path: str) -> None:
    """Raise :class:`HeaderError` if the PNG's first image cannot be decoded cleanly.

    The message names no path.
    """
    with open(path, "rb", buffering=0) as f:
        head = f.read(33)
        if len(head) < 33:
            raise HeaderError("PNG header is truncated")
        width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
        runs = _row_runs(width, height, depth * _CHANNELS.get(color, 1), interlace)
        needed = runs[-1][0] + runs[-1][1] * runs[-1][2] if runs else 0
        inflate = zlib.decompressobj()
        produced, pos, seen_idat = 0, 33, False
        while True:  # every IDAT: libpng warns on stderr about data beyond the image, too
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                raise HeaderError("PNG pixel data is truncated")
            length, kind = struct.unpack(">I4s", chunk)
            if kind == b"IEND" or (seen_idat and kind != b"IDAT") or (inflate.eof and produced >= needed):
                break
            if kind == b"IDAT":
                seen_idat = True
                crc = zlib.crc32(kind)
                left = length
                while left:
                    data = f.read(min(left, _PIECE))
                    if not data:
                        raise HeaderError("PNG pixel data is truncated")
                    left -= len(data)
                    crc = zlib.crc32(data, crc)
                    produced = _inflate(inflate, data, produced, runs)
                    if produced > needed:
                        raise HeaderError("PNG pixel data is corrupt (more image data than its header says)")
                stored = f.read(4)
                if len(stored) < 4 or struct.unpack(">I", stored)[0] != crc:
                    raise HeaderError("PNG pixel data is corrupt (IDAT CRC error)")
            pos += 12 + length
        if produced < needed:
            raise HeaderError("PNG pixel data is truncated (not enough image data)")


def _inflate(inflate: zlib._Decompress, data: bytes, produced: int, runs: list[tuple[int, int, int]]) -> int:
    """Feed ``data`` to ``inflate`` in bounded pieces, checking filter bytes; return the new output count."""
    if inflate.eof:
        return produced
    while data:
        try:
            piece = inflate.decompress(data, _PIECE)
        except zlib.error as err:
            raise HeaderError(f"PNG pixel data is corrupt ({err})") from err
        _check_filters(piece, produced, runs)
        produced += len(piece)
        data = inflate.unconsumed_tail
        if inflate.eof:
            break
    return produced
