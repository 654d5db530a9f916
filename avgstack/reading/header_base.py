"""Shared pieces of the header probes: the Header record, its error, and bounded file access.

Everything here reads at most what a probe asks for; see :mod:`.headers`.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

__all__ = ["HEAD_SIZE", "Header", "HeaderError"]

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
    scratch : int
        Bytes the decoder allocates besides the returned array (GIF's BGRA
        screen, OpenJPEG's 32-bit planes, ...); not compared.
    """

    format: str
    height: int
    width: int
    channels: int
    dtype: np.dtype
    scratch: int = field(default=0, compare=False)

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


class _PastHead(Exception):
    """A text header continues past the bytes read: cannot tell."""


class _Source:
    """The first :data:`HEAD_SIZE` bytes of an open file, and small reads beyond them."""

    def __init__(self, f: BinaryIO | None, data: bytes = b"") -> None:
        self._f = f
        if f is None:  # a payload already in memory (a TIFF tile, say)
            self.head, self.size = data, len(data)
        else:
            self.head = f.read(HEAD_SIZE)
            self.size = os.fstat(f.fileno()).st_size
        self.complete = self.size <= len(self.head)

    def read_at(self, offset: int, size: int) -> bytes:
        """Return up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        if offset + size <= len(self.head) or self.complete or self._f is None:
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
