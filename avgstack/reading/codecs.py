"""The fastest bit-exact decoder for each TIFF compression and predictor.

:func:`choose` maps a page's compression, predictor and sample layout to a
:class:`SegmentDecoder` that decodes one strip or tile from a caller-owned
buffer straight into a caller-owned array: no allocation per segment, the
predictor undone in place. Three back ends, all from packages avgstack already
depends on (no new dependency):

``libtiff``
    libtiff, as built into imagecodecs (``imagecodecs.tiff_decode``), fed a
    minimal one-strip TIFF header written in front of the compressed bytes.
    libtiff's LZW and horizontal predictor are about 1.6 times faster than
    imagecodecs' own, and its deflate uses libdeflate.
``imagecodecs``
    imagecodecs' codec functions called with ``out=`` (``lzw_decode``,
    ``deflate_decode``, ``zstd_decode``, ``packbits_decode``) and
    ``delta_decode(..., out=)`` for the horizontal predictor.
``tifffile``
    the page's own tifffile decoder, for everything else (JPEG, LZMA, packed
    bit depths, FillOrder 2, ...) and as the fallback whenever a fast decoder
    fails on a segment, so a segment is never refused that tifffile reads.

Which back end serves which codec was chosen by measurement (``PREFERRED``,
see the README's Performance section); ``AVGSTACK_DECODER`` is deliberately
not consulted: a library call changes no behaviour through the environment.
Tests decode every codec and predictor with every back end and compare with
tifffile.
"""

from __future__ import annotations

import struct
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "PREFERRED", "SegmentDecoder", "choose", "describe", "scratch", "versions"]

LZW, ADOBE_DEFLATE, DEFLATE, PACKBITS, ZSTD = 5, 8, 32946, 32773, 50000
#: TIFF compression code -> name
CODECS = {LZW: "lzw", ADOBE_DEFLATE: "deflate", DEFLATE: "deflate", PACKBITS: "packbits", ZSTD: "zstd"}
#: (codec, predictor) -> back ends in order of preference (measured; README "Performance")
PREFERRED: dict[tuple[str, int], tuple[str, ...]] = {
    ("lzw", 1): ("libtiff", "imagecodecs"),
    ("lzw", 2): ("libtiff", "imagecodecs"),
    ("deflate", 1): ("imagecodecs", "libtiff"),
    ("deflate", 2): ("imagecodecs", "libtiff"),
    ("zstd", 1): ("imagecodecs", "libtiff"),
    ("zstd", 2): ("imagecodecs", "libtiff"),
    ("packbits", 1): ("imagecodecs", "libtiff"),
    ("packbits", 2): ("imagecodecs",),  # libtiff applies no predictor to PackBits
}
BACKENDS = ("libtiff", "imagecodecs")
_SAMPLEFORMAT = {"u": 1, "i": 2, "f": 3}


class SegmentDecoder:
    """Decodes the compressed bytes of one strip or tile into an array.

    The caller reads a segment's ``count`` compressed bytes into
    ``buf[head:head + count]`` of a writable memoryview ``buf`` (``head`` is :attr:`head`, room the decoder may
    use in front of the data) and calls ``decode(buf, count, out)`` with
    ``out`` a C-contiguous native-order array of the segment's stored shape,
    ``(rows, width, samples)`` or ``(rows, width)``. ``decode`` raises on any
    failure, including data that decodes to fewer samples than ``out`` holds;
    the caller then falls back to tifffile.
    """

    name = ""
    head = 0

    def decode(self, buf: memoryview, count: int, out: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class LibtiffDecoder(SegmentDecoder):
    """libtiff through ``imagecodecs.tiff_decode`` on a one-strip TIFF built in front of the data."""

    def __init__(self, compression: int, predictor: int, dtype: np.dtype, samples: int, width: int,
                 bigendian: bool) -> None:
        import imagecodecs

        if not imagecodecs.TIFF.available:  # a build without libtiff
            raise ImportError("imagecodecs has no libtiff")
        self._tiff_decode: Callable[..., Any] = imagecodecs.tiff_decode
        self.name = "libtiff"
        e = ">" if bigendian else "<"
        bits = dtype.itemsize * 8
        fmt = _SAMPLEFORMAT[dtype.kind]
        # tag, type (3 SHORT, 4 LONG), values; ImageLength/RowsPerStrip/StripByteCounts patched per segment
        tags: list[tuple[int, int, tuple[int, ...]]] = [
            (256, 4, (width,)), (257, 4, (0,)), (258, 3, (bits,) * samples), (259, 3, (compression,)),
            (262, 3, (1,)), (273, 4, (0,)), (277, 3, (samples,)), (278, 4, (0,)), (279, 4, (0,)),
            (284, 3, (1,)), (317, 3, (predictor,)), (339, 3, (fmt,) * samples),
        ]
        ifd = 8
        extra = ifd + 2 + 12 * len(tags) + 4
        entries, arrays, where = [], b"", {}
        for tag, typ, values in tags:
            code = "H" if typ == 3 else "I"
            packed = struct.pack(e + code * len(values), *values)
            if len(packed) <= 4:
                entries.append(struct.pack(e + "HHI", tag, typ, len(values)) + packed.ljust(4, b"\0"))
            else:
                entries.append(struct.pack(e + "HHII", tag, typ, len(values), extra + len(arrays)))
                arrays += packed
            where[tag] = ifd + 2 + 12 * (len(entries) - 1) + 8
        header = bytearray((b"MM\0*" if bigendian else b"II*\0") + struct.pack(e + "I", ifd))
        header += struct.pack(e + "H", len(tags)) + b"".join(entries) + b"\0\0\0\0" + arrays
        self.head = len(header)
        struct.pack_into(e + "I", header, where[273], self.head)
        self._header = bytes(header)
        self._length, self._rows, self._counts = where[257], where[278], where[279]
        self._pack = struct.Struct(e + "I").pack_into

    def decode(self, buf: memoryview, count: int, out: np.ndarray) -> None:
        head = self.head
        buf[:head] = self._header
        rows = out.shape[0]
        pack = self._pack
        pack(buf, self._length, rows)
        pack(buf, self._rows, rows)
        pack(buf, self._counts, count)
        self._tiff_decode(buf[: head + count], out=out)


class ImagecodecsDecoder(SegmentDecoder):
    """imagecodecs' codec with ``out=``, then the horizontal predictor undone in place."""

    def __init__(self, compression: int, predictor: int, swap: bool) -> None:
        import imagecodecs

        decoders: dict[str, Callable[..., Any]] = {
            "lzw": imagecodecs.lzw_decode, "deflate": imagecodecs.deflate_decode,
            "zstd": imagecodecs.zstd_decode, "packbits": imagecodecs.packbits_decode,
        }
        codec = CODECS[compression]
        if not getattr(imagecodecs, codec.upper()).available or (predictor == 2 and not imagecodecs.DELTA.available):
            raise ImportError(f"imagecodecs has no {codec}")
        self._decompress = decoders[codec]
        self._delta = imagecodecs.delta_decode if predictor == 2 else None
        self._swap = swap
        self.name = "imagecodecs"

    def decode(self, buf: memoryview, count: int, out: np.ndarray) -> None:
        target = out.reshape(-1).view(np.uint8).data
        got = self._decompress(buf[:count], out=target)
        if len(got) != len(target):
            raise ValueError(f"decoded {len(got)} bytes, {len(target)} expected")
        if self._swap:
            out.byteswap(inplace=True)
        if self._delta is not None:
            self._delta(out, axis=1 if out.ndim == 3 else -1, out=out)


def choose(compression: int, predictor: int, dtype: np.dtype, bits: int, fillorder: int, samples: int,
           width: int, bigendian: bool, backend: str | None = None) -> SegmentDecoder | None:
    """Return the fastest bit-exact decoder for segments of this kind, or None to use tifffile's.

    ``samples`` is the number of samples per pixel in one segment (1 for
    planar-separate images), ``width`` the segment width in pixels (the tile
    width, or the image width for strips). ``backend`` forces one back end
    (tests); None picks the preferred one that is available.
    """
    codec = CODECS.get(compression)
    if (
        codec is None
        or predictor not in (1, 2)
        or (predictor == 2 and dtype.kind == "f")  # tifffile undoes it in float arithmetic
        or dtype.kind not in _SAMPLEFORMAT
        or bits != dtype.itemsize * 8
        or dtype.itemsize > 8
        or fillorder != 1
        or samples < 1
        or width < 1
    ):
        return None
    native = np.little_endian != bigendian
    for name in PREFERRED[(codec, predictor)] if backend is None else (backend,):
        try:
            if name == "libtiff":
                return LibtiffDecoder(compression, predictor, dtype, samples, width, bigendian)
            if name == "imagecodecs":
                return ImagecodecsDecoder(compression, predictor, swap=not native and dtype.itemsize > 1)
        except (ImportError, AttributeError):  # an imagecodecs build without this codec
            continue
    return None


def versions() -> dict[str, str]:
    """Versions of the decoding libraries, for the benchmark report."""
    import imagecodecs
    import tifffile

    out = {"tifffile": tifffile.__version__, "imagecodecs": imagecodecs.__version__}
    for line in imagecodecs.version().split(", "):
        name, _, ver = line.partition("-")
        if name in ("libtiff", "libdeflate", "zlib_ng", "zstd"):
            out[name] = ver
    return out


_scratch_lock = threading.Lock()
_scratch: weakref.WeakKeyDictionary[Any, threading.local] = weakref.WeakKeyDictionary()


def scratch(owner: Any, nbytes: int) -> bytearray:
    """This thread's decode scratch of at least ``nbytes``, shared by every reader of ``owner``.

    ``owner`` is the run's file pool: the planner counts one scratch per
    thread (the largest any input needs), and the buffers go away with the
    pool, so nothing stays allocated after a run.
    """
    with _scratch_lock:
        local = _scratch.get(owner)
        if local is None:
            local = _scratch[owner] = threading.local()
    buf: bytearray | None = getattr(local, "buf", None)
    if buf is None or len(buf) < nbytes:
        local.buf = None  # drop the old buffer before allocating its successor
        buf = local.buf = bytearray(nbytes)
    return buf


def describe() -> str:
    """One line naming the decoder used for each codec and the libraries' versions (for reports)."""
    v = versions()
    libs = {
        "libtiff": f"libtiff {v.get('libtiff', '?')} via imagecodecs.tiff_decode",
        "imagecodecs": "imagecodecs {fn}",
    }
    calls = {"lzw": "lzw_decode", "deflate": f"deflate_decode (libdeflate {v.get('libdeflate', '?')})",
             "zstd": f"zstd_decode (zstd {v.get('zstd', '?')})", "packbits": "packbits_decode"}
    parts = []
    for codec in ("lzw", "deflate", "zstd", "packbits"):
        backend = PREFERRED[(codec, 2 if codec != "packbits" else 1)][0]
        parts.append(f"{codec}: " + libs[backend].format(fn=calls[codec]))
    return "; ".join(parts) + f"; others: tifffile {v['tifffile']}; imagecodecs {v['imagecodecs']}"
