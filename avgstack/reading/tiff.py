"""TIFF and BigTIFF inputs through tifffile, read band by band from stored strips or tiles.

The header (one IFD) is parsed once with :class:`tifffile.TiffFile`; after
that the file is only read through :class:`~avgstack.reading.files.FilePool`
descriptors with ``os.pread``, one strip or tile at a time, and decoded with
the page's own tifffile decoder (every compression, predictor, bit depth and
byte order tifffile supports). Uncompressed strips are read straight into the
band buffer.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any

import numpy as np
import tifffile

from ..errors import InputError, ReadError, UnsupportedInputError
from ..windows import Band
from .base import ImageInfo, Source
from .files import FilePool

__all__ = ["TiffSource", "split_page_suffix"]

log = logging.getLogger(__name__)

_PHOTOMETRIC_NAMES = {0: "miniswhite", 1: "minisblack", 2: "rgb", 5: "separated"}
_REFUSED_PHOTOMETRIC = {
    3: "palette (indexed colour): averaging colour indices is meaningless; convert to RGB first",
    4: "a transparency mask",
    8: "CIELab colour: its signed a*/b* samples cannot be averaged as stored; convert to RGB first",
    9: "ICCLab colour; convert to RGB first",
    10: "ITULab colour; convert to RGB first",
    32803: "a raw CFA (Bayer) mosaic; demosaic it first",
    32844: "LogL (SGI log-luminance); convert to float first",
    32845: "LogLuv (SGI log-luminance); convert to float first",
    34892: "linear raw (DNG); convert it first",
}
_JPEG = {6, 7, 34892, 33007}
#: Tags copied verbatim to the output: orientation, GeoTIFF and GDAL metadata.
_CARRIED_TAGS = (
    274,  # Orientation
    301, 318, 319,  # TransferFunction, WhitePoint, PrimaryChromaticities
    332, 333, 334, 336,  # InkSet, InkNames, NumberOfInks, DotRange
    33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113,  # GeoTIFF, GDAL
)
_PAGE_SUFFIX = re.compile(r"^(?P<path>.*)\[(?P<page>\d+)\]$")


def split_page_suffix(spec: str) -> tuple[str, int]:
    """Split ``'scan.tif[2]'`` into ``('scan.tif', 2)``; a plain path gets page 0.

    A path that exists as written is never split, so files whose names end in
    brackets still work.
    """
    match = _PAGE_SUFFIX.match(spec)
    if match is None or os.path.exists(spec):
        return spec, 0
    return match.group("path"), int(match.group("page"))


class TiffSource(Source):
    """A TIFF page read in bands.

    Parameters
    ----------
    path : str
        File path.
    page : int
        Page (IFD) index, 0 for the first.
    pool : FilePool
        Where descriptors for band reads come from.
    name : str, optional
        How the input is named in messages.
    """

    def __init__(self, path: str, page: int, pool: FilePool, name: str | None = None) -> None:
        self.path = path
        self.pool = pool
        name = name or (path if page == 0 else f"{path}[{page}]")
        try:
            with tifffile.TiffFile(path) as tif:
                npages = len(tif.pages)
                if page >= npages:
                    raise InputError(f"{name}: has {npages} page(s), page {page} was asked for")
                p = tif.pages[page]
                if not isinstance(p, tifffile.TiffPage):  # pragma: no cover - useframes off
                    p = p.aspage()
                self._setup(p, name)
        except InputError:
            raise
        except OSError as err:
            raise InputError(f"{name}: cannot read ({err.strerror or err})") from err
        except MemoryError as err:
            raise InputError(f"{name}: damaged TIFF (its header asks for too much memory)") from err
        except Exception as err:  # noqa: BLE001 - tifffile raises many types on damaged headers
            raise InputError(f"{name}: not a readable TIFF ({type(err).__name__}: {err})") from err

    def _setup(self, p: tifffile.TiffPage, name: str) -> None:
        if p.imagedepth > 1:
            raise UnsupportedInputError(f"{name}: volumetric TIFF (depth {p.imagedepth}) is not supported")
        photometric = int(p.photometric)
        compression = int(p.compression)
        if photometric in _REFUSED_PHOTOMETRIC:
            raise UnsupportedInputError(f"{name}: {_REFUSED_PHOTOMETRIC[photometric]}")
        if photometric == 6:  # YCbCr
            if compression not in _JPEG:
                raise UnsupportedInputError(
                    f"{name}: uncompressed or non-JPEG YCbCr TIFF is not supported; convert to RGB first"
                )
            photometric = 2  # the JPEG decoder returns RGB
        if photometric == 5 and p.samplesperpixel - len(p.extrasamples or ()) < 4:
            raise UnsupportedInputError(
                f"{name}: separated (ink) colour with fewer than 4 inks is not supported"
            )
        if photometric not in _PHOTOMETRIC_NAMES:
            raise UnsupportedInputError(f"{name}: photometric interpretation {photometric} is not supported")
        if compression in _JPEG and int(p.planarconfig) == 2 and p.samplesperpixel > 1:
            raise UnsupportedInputError(f"{name}: JPEG compression with separate planes is not supported")
        dtype = p.dtype
        if dtype is None:
            if 256 not in p.tags or 257 not in p.tags:
                raise InputError(f"{name}: damaged TIFF: image size tags are missing")
            raise UnsupportedInputError(
                f"{name}: {p.bitspersample}-bit samples of format {int(p.sampleformat)} are not supported"
            )
        dtype = np.dtype(dtype).newbyteorder("=")
        if dtype.kind == "c" or (dtype.kind in "ui" and dtype.itemsize > 4):
            raise UnsupportedInputError(f"{name}: {dtype} samples are not supported")
        try:
            decode = p.decode
        except Exception as err:  # noqa: BLE001 - tifffile raises several types here
            raise UnsupportedInputError(f"{name}: cannot decode ({err})") from err
        if getattr(decode, "__name__", "").startswith("decode_raise"):
            try:
                decode(None, 0)
            except Exception as err:  # noqa: BLE001 - tifffile raises several types here
                raise UnsupportedInputError(f"{name}: cannot decode ({err})") from err
        self._decode = decode
        self._decodeargs: dict[str, Any] = {"_fullsize": p.is_tiled}
        if compression in _JPEG:
            self._decodeargs["jpegtables"] = p.jpegtables
            self._decodeargs["jpegheader"] = p.jpegheader

        height, width = int(p.imagelength), int(p.imagewidth)
        samples = int(p.samplesperpixel)
        if height <= 0 or width <= 0 or samples <= 0:
            raise InputError(f"{name}: empty image ({width}x{height}, {samples} samples)")
        self._planes = samples if int(p.planarconfig) == 2 and samples > 1 else 1
        contig = samples // self._planes
        if p.is_tiled:
            self._seg_h, self._seg_w = int(p.tilelength), int(p.tilewidth)
        else:
            self._seg_h, self._seg_w = max(1, min(int(p.rowsperstrip or height), height)), width
        self._down = math.ceil(height / self._seg_h)
        self._across = math.ceil(width / self._seg_w)
        self._per_plane = self._down * self._across
        self._offsets = np.asarray(p.dataoffsets, np.int64)
        self._counts = np.asarray(p.databytecounts, np.int64)
        expected = self._per_plane * self._planes
        if len(self._offsets) < expected or len(self._counts) < expected:
            raise InputError(
                f"{name}: damaged TIFF: {len(self._offsets)} strips/tiles listed, {expected} needed"
            )
        self._fill = p.nodata if isinstance(p.nodata, (int, float)) and dtype.kind != "b" else 0
        used = self._counts[:expected] > 0
        file_size = int(p.parent.filehandle.size)
        if np.any(self._offsets[:expected][used] + self._counts[:expected][used] > file_size):
            raise InputError(f"{name}: truncated TIFF: pixel data extends past the end of the file")
        if p.is_tiled and self._seg_h * self._seg_w * contig * dtype.itemsize > 2**31:
            raise InputError(f"{name}: damaged TIFF: tile of {self._seg_w}x{self._seg_h} declared")
        bits = int(p.bitspersample)
        packed = bits if dtype.kind in "ui" and bits != dtype.itemsize * 8 else None
        self._direct = (
            compression == 1
            and bool(used.all())
            and not p.is_tiled
            and self._planes == 1
            and int(p.predictor) == 1
            and int(p.fillorder) == 1
            and dtype.kind != "b"
            and bits == dtype.itemsize * 8
        )
        if self._direct:
            # direct reads trust every strip to hold its rows: check them all once, here
            rows = np.minimum(self._seg_h, height - np.arange(expected) * self._seg_h)
            short = np.flatnonzero(self._counts[:expected] < rows * (width * samples * dtype.itemsize))
            if short.size:
                raise InputError(
                    f"{name}: damaged TIFF: strip {int(short[0])} holds less pixel data than its rows need"
                )
        self._swap = p.parent.byteorder != ("<" if np.little_endian else ">") and dtype.itemsize > 1
        seg_bytes = self._seg_h * self._seg_w * contig * dtype.itemsize
        max_count = int(self._counts.max()) if len(self._counts) else 0
        # a damaged header must not make us allocate gigabytes for one strip
        scratch = 0 if self._direct else seg_bytes + min(max_count, 4 * seg_bytes + 65536)

        metadata: dict[str, Any] = {"extratags": []}
        tags = p.tags
        icc = tags.valueof(34675)
        if icc is not None:
            metadata["iccprofile"] = bytes(icc)
        resolution = _resolution(tags.valueof(282), tags.valueof(283), tags.valueof(296))
        if resolution is not None:
            metadata["resolution"], metadata["resolutionunit"] = resolution
        for code in _CARRIED_TAGS:
            tag = tags.get(code)
            if tag is not None and tag.count > 0 and tag.value is not None:
                metadata["extratags"].append((code, int(tag.dtype), tag.count, tag.value, True))
        orientation = tags.valueof(274, 1)
        metadata["orientation"] = int(orientation) if isinstance(orientation, int) else 1
        metadata["compression"] = compression

        self.info = ImageInfo(
            name=name,
            height=height,
            width=width,
            samples=samples,
            dtype=dtype,
            photometric=_PHOTOMETRIC_NAMES[photometric],
            extrasamples=tuple(int(e) for e in (p.extrasamples or ())),
            bits=packed,
            format="tiff",
            streamable=True,
            # direct reads cost nothing extra when a strip straddles two bands
            segment_height=1 if self._direct else self._seg_h,
            scratch_bytes=scratch,
            metadata=metadata,
        )

    # -- reading ---------------------------------------------------------------

    def read_band(self, band: Band, out: np.ndarray) -> int:
        acquired = False
        try:
            fd = self.pool.acquire(self.path)  # fails here if the input was removed since its header was read
            acquired = True
            if self._direct:
                return self._read_direct(fd, band, out)
            return self._read_segments(fd, band, out)
        except OSError as err:
            raise ReadError(f"{self.info.name}: read failed ({err.strerror or err})") from err
        finally:
            if acquired:
                self.pool.release(self.path)

    def _pread_into(self, fd: int, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise ReadError(f"{self.info.name}: truncated file: pixel data ends early")
            done += n

    def _read_direct(self, fd: int, band: Band, out: np.ndarray) -> int:
        """Uncompressed contiguous strips: read bytes straight into ``out``."""
        row_bytes = self.info.width * self.info.samples * self.info.dtype.itemsize
        flat = memoryview(out.reshape(-1).view(np.uint8))
        first, last = band.start // self._seg_h, (band.stop - 1) // self._seg_h
        # coalesce strips that lie back to back in the file into single reads
        run_start = run_off = None
        run_len = 0
        total = 0
        for strip in range(first, last + 1):
            r0 = max(band.start, strip * self._seg_h)
            r1 = min(band.stop, (strip + 1) * self._seg_h)
            offset = int(self._offsets[strip]) + (r0 - strip * self._seg_h) * row_bytes
            nbytes = (r1 - r0) * row_bytes
            dst = (r0 - band.start) * row_bytes
            if run_off is not None and run_off + run_len == offset and run_start + run_len == dst:
                run_len += nbytes
                continue
            if run_off is not None:
                self._pread_into(fd, flat[run_start : run_start + run_len], run_off)
                total += run_len
            run_start, run_off, run_len = dst, offset, nbytes
        if run_off is not None:
            self._pread_into(fd, flat[run_start : run_start + run_len], run_off)
            total += run_len
        if self._swap:
            out.byteswap(inplace=True)
        return total

    def _read_segments(self, fd: int, band: Band, out: np.ndarray) -> int:
        """Any layout: decode each strip or tile overlapping the band."""
        info = self.info
        first, last = band.start // self._seg_h, (band.stop - 1) // self._seg_h
        total = 0
        for plane in range(self._planes):
            channels = slice(plane, plane + 1) if self._planes > 1 else slice(None)
            for row in range(first, last + 1):
                top = row * self._seg_h
                r0, r1 = max(band.start, top), min(band.stop, top + self._seg_h)
                for col in range(self._across):
                    index = plane * self._per_plane + row * self._across + col
                    left = col * self._seg_w
                    w = min(self._seg_w, info.width - left)
                    dst = out[r0 - band.start : r1 - band.start, left : left + w, channels]
                    count = int(self._counts[index])
                    if count == 0:
                        dst[...] = self._fill  # sparse file: missing segments read as NoData or 0
                        continue
                    data = os.pread(fd, count, int(self._offsets[index]))
                    if len(data) < count:
                        raise ReadError(
                            f"{info.name}: truncated file: strip/tile {index} ends early"
                        )
                    total += count
                    try:
                        segment, _, _ = self._decode(data, index, **self._decodeargs)
                    except Exception as err:  # noqa: BLE001 - codecs raise many types
                        raise ReadError(
                            f"{info.name}: corrupt data in strip/tile {index} ({err})"
                        ) from err
                    if segment is None:
                        dst[...] = self._fill
                        continue
                    segment = segment.reshape(segment.shape[-3:])
                    if segment.shape[0] < r1 - top or segment.shape[1] < w:
                        raise ReadError(f"{info.name}: corrupt data in strip/tile {index} (too short)")
                    dst[...] = segment[r0 - top : r1 - top, :w]
        return total


def _resolution(xres: Any, yres: Any, unit: Any) -> tuple[tuple, int] | None:
    """Return ``((xnum, xden), (ynum, yden)), unit`` if the tags are usable, else None (dropped)."""
    def rational(value: Any) -> tuple[int, int] | None:
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return value if value[1] > 0 and value[0] >= 0 else None
        return None

    x, y = rational(xres), rational(yres)
    if x is None or y is None:
        return None
    unit = int(unit) if isinstance(unit, int) and unit in (1, 2, 3) else 2
    return (x, y), unit
