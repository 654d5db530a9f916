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
from typing import Any

import numpy as np
import tifffile

from ..errors import BudgetError, InputError, ReadError, UnsupportedInputError
from ..missing import GDAL_NODATA, parse_tag
from ..windows import Band
from . import codecs, lab
from .base import ImageInfo, Source
from .files import FilePool
from .header_base import HeaderError
from .palette import Palette
from .palette import describe as describe_palette
from .palette import scratch_bytes as palette_scratch
from .tiff_checks import max_segment_bytes, payload_size
from .tiff_meta import CARRIED_TAG_LIMIT, DEFAULT_TABLE_LIMIT, carried, open_page, split_page_suffix

__all__ = ["TiffSource", "split_page_suffix", "CARRIED_TAG_LIMIT"]

log = logging.getLogger(__name__)

_PHOTOMETRIC_NAMES = {0: "miniswhite", 1: "minisblack", 2: "rgb", 5: "separated", 8: lab.PHOTOMETRIC}
_PALETTE = 3
_REFUSED_PHOTOMETRIC = {
    4: "a transparency mask",
    9: "ICCLab colour; convert to RGB first",
    10: "ITULab colour; convert to RGB first",
    32803: "a raw CFA (Bayer) mosaic; demosaic it first",
    32844: "LogL (SGI log-luminance); convert to float first",
    32845: "LogLuv (SGI log-luminance); convert to float first",
    34892: "linear raw (DNG); convert it first",
}
_JPEG = {6, 7, 34892, 33007}
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
    budget : int, optional
        Memory budget in bytes: the strip/tile tables this source holds for
        its lifetime may use at most half of it (:data:`DEFAULT_TABLE_LIMIT`
        without a budget); larger tables are refused before they are read.

    Only the page used is parsed (the IFD chain is followed up to it, never to
    its end). ``info.metadata`` holds only what comparisons need (orientation,
    compression); what the output carries comes from :meth:`carried_metadata`.
    """

    def __init__(
        self, path: str, page: int, pool: FilePool, name: str | None = None, budget: int | None = None
    ) -> None:
        self.path = path
        self.pool = pool
        self.page = page
        name = name or (path if page == 0 else f"{path}[{page}]")
        limit = budget // 2 if budget else DEFAULT_TABLE_LIMIT
        try:
            p = open_page(path, page, name, limit)
            with p.parent:
                self._setup(p, name)
        except (InputError, BudgetError):
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
        palette = None
        if photometric == _PALETTE:
            if p.samplesperpixel != 1:
                raise UnsupportedInputError(f"{name}: palette image with {p.samplesperpixel} samples per pixel")
            palette = Palette(p.colormap, int(p.bitspersample), np.dtype(p.dtype or np.uint8), name)
            photometric = 2
        if photometric == 8 and (p.dtype is None or np.dtype(p.dtype) not in (np.uint8, np.uint16)):
            raise UnsupportedInputError(f"{name}: CIELab with {p.bitspersample}-bit samples is not supported")
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
        if dtype.kind == "c" or (dtype.kind in "ui" and dtype.itemsize > 8):
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
        self._offsets, self._counts = self._offsets[:expected], self._counts[:expected]
        self._fill = p.nodata if isinstance(p.nodata, (int, float)) and dtype.kind != "b" else 0
        used = self._counts > 0
        file_size = int(p.parent.filehandle.size)
        for start in range(0, expected, 2**20):  # bounded temporaries
            part = slice(start, start + 2**20)
            if np.any((self._offsets[part] + self._counts[part] > file_size) & used[part]):
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
        self._dtype, self._samples = dtype, samples  # as stored (indices for palette images)
        self._palette = palette
        self._lab = photometric == 8 and samples >= 3
        self._swap = p.parent.byteorder != ("<" if np.little_endian else ">") and dtype.itemsize > 1
        seg_bytes = self._seg_h * self._seg_w * contig * dtype.itemsize
        max_count = int(self._counts.max()) if len(self._counts) else 0
        del used
        # one rule for what a segment may hold on disk and for the scratch that reads it
        limit = max_segment_bytes(seg_bytes)
        if max_count > limit:
            big = int(np.argmax(self._counts))
            raise InputError(
                f"{name}: damaged TIFF: strip/tile {big} declares {max_count} bytes, more than the "
                f"{limit} a {seg_bytes}-byte strip/tile could need"
            )
        self._compression = compression
        # the fastest bit-exact decoder for this codec (codecs.py); None: tifffile's own
        self._fast = None if self._direct else codecs.choose(
            compression, int(p.predictor), dtype, bits, int(p.fillorder), contig, self._seg_w,
            p.parent.byteorder == ">",
        )
        self._max_read = max_count
        self._seg_shape: tuple[int, int, int] = (self._seg_h, self._seg_w, contig)
        self._tiled = bool(p.is_tiled)
        self._seg_bytes = seg_bytes
        head = self._fast.head if self._fast is not None else 0
        scratch = 0 if self._direct else _align(seg_bytes) + head + self._max_read

        orientation = p.tags.valueof(274, 1)
        metadata: dict[str, Any] = {
            "orientation": int(orientation) if isinstance(orientation, int) else 1,
            "compression": compression,
        }
        nodata = parse_tag(p.tags.valueof(GDAL_NODATA)) if GDAL_NODATA in p.tags else None
        if nodata is not None:
            metadata["nodata"] = nodata
        if palette is not None:
            scratch += palette_scratch(width, dtype)
            metadata["palette"] = describe_palette(palette.bits, palette.dtype)
            dtype, samples, packed = palette.dtype, 3, None

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

    def carried_metadata(self) -> dict[str, Any]:
        """Re-read what an output TIFF should carry from this page (ICC profile, resolution, tags).

        Tags larger than :data:`CARRIED_TAG_LIMIT` are not read at all and are
        reported in one warning. Only the input that describes the output needs
        this; nothing is kept on the source.

        Raises
        ------
        InputError
            The file can no longer be read as it was.
        """
        try:
            p = open_page(self.path, self.page, self.info.name, DEFAULT_TABLE_LIMIT)
            with p.parent:
                metadata = carried(p, self.info.name)
        except (InputError, BudgetError):
            raise
        except Exception as err:  # tifffile raises many types on damaged headers
            raise InputError(f"{self.info.name}: cannot read its metadata ({type(err).__name__}: {err})") from err
        metadata["orientation"] = self.info.metadata.get("orientation", 1)
        metadata["compression"] = self._compression
        return metadata

    def _check_payload(self, data: bytes, index: int) -> None:
        """Refuse a JPEG/PNG/WebP/JPEG 2000 payload whose own header declares more than its strip or tile."""
        try:
            size = payload_size(data, self._compression)
        except HeaderError as err:
            raise ReadError(f"{self.info.name}: corrupt data in strip/tile {index} ({err})") from err
        if size is not None and (size[0] > self._seg_h or size[1] > self._seg_w):
            raise ReadError(
                f"{self.info.name}: corrupt data in strip/tile {index}: its payload declares "
                f"{size[1]}x{size[0]} pixels, the strip/tile holds {self._seg_w}x{self._seg_h}"
            )

    # -- reading ---------------------------------------------------------------

    def read_band(self, band: Band, out: np.ndarray) -> int:
        if self._palette is not None:
            return self._palette.read(out, lambda indices: self._read_stored(band, indices))
        got = self._read_stored(band, out)
        if self._lab:
            lab.flip_signs(out)
        return got

    def _read_stored(self, band: Band, out: np.ndarray) -> int:
        """Read the stored samples of ``band`` into ``out``."""
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
        row_bytes = self.info.width * self._samples * self._dtype.itemsize
        flat = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        first, last = band.start // self._seg_h, (band.stop - 1) // self._seg_h
        # coalesce strips that lie back to back in the file into single reads
        run_start: int | None = None
        run_off: int | None = None
        run_len = 0
        total = 0
        for strip in range(first, last + 1):
            r0 = max(band.start, strip * self._seg_h)
            r1 = min(band.stop, (strip + 1) * self._seg_h)
            offset = int(self._offsets[strip]) + (r0 - strip * self._seg_h) * row_bytes
            nbytes = (r1 - r0) * row_bytes
            dst = (r0 - band.start) * row_bytes
            if run_off is not None and run_start is not None and run_off + run_len == offset \
                    and run_start + run_len == dst:
                run_len += nbytes
                continue
            if run_off is not None and run_start is not None:
                self._pread_into(fd, flat[run_start : run_start + run_len], run_off)
                total += run_len
            run_start, run_off, run_len = dst, offset, nbytes
        if run_off is not None and run_start is not None:
            self._pread_into(fd, flat[run_start : run_start + run_len], run_off)
            total += run_len
        if self._swap:
            out.byteswap(inplace=True)
        return total

    def _read_segments(self, fd: int, band: Band, out: np.ndarray) -> int:
        """Any layout: decode each strip or tile overlapping the band.

        With a fast decoder (codecs.py) each segment is read into this thread's
        scratch and decoded straight into ``out`` when it covers whole rows of
        it (full strips), else into the scratch's segment array and copied; no
        allocation per segment. A segment the fast decoder rejects is decoded
        again by tifffile, which decides whether it is corrupt.
        """
        info = self.info
        fast = self._fast
        seg_h, seg_w, across = self._seg_h, self._seg_w, self._across
        first, last = band.start // seg_h, (band.stop - 1) // seg_h
        if fast is not None:
            head = fast.head
            buf = codecs.scratch(self.pool, _align(self._seg_bytes) + head + self._max_read)
            segment: np.ndarray = np.frombuffer(buf, self._dtype, self._seg_bytes // self._dtype.itemsize)
            segment = segment.reshape(self._seg_shape)
            data = memoryview(buf)[_align(self._seg_bytes) :]
            # full-width strips of a contiguous band decode straight into it
            into_out = across == 1 and self._planes == 1 and out.flags.c_contiguous
            flat_seg = segment if self._seg_shape[2] > 1 else segment[:, :, 0]
        total = 0
        for plane in range(self._planes):
            channels = slice(plane, plane + 1) if self._planes > 1 else slice(None)
            for row in range(first, last + 1):
                top = row * seg_h
                r0, r1 = max(band.start, top), min(band.stop, top + seg_h)
                # rows stored in this segment: tiles are stored whole, the last strip is short
                stored = seg_h if self._tiled else min(seg_h, info.height - top)
                for col in range(across):
                    index = plane * self._per_plane + row * across + col
                    left = col * seg_w
                    w = min(seg_w, info.width - left)
                    dst = out[r0 - band.start : r1 - band.start, left : left + w, channels]
                    count = int(self._counts[index])
                    if count == 0:
                        dst[...] = self._fill  # sparse file: missing segments read as NoData or 0
                        continue
                    offset = int(self._offsets[index])
                    total += count
                    if fast is None or count > self._max_read:
                        self._decode_slow(os.pread(fd, count, offset), index, dst, r0 - top, r1 - top, w)
                        continue
                    self._pread_into(fd, data[head : head + count], offset)
                    whole = into_out and r0 == top and r1 == top + stored
                    if whole:
                        target = out[r0 - band.start : r1 - band.start]
                        if target.shape[2] == 1:
                            target = target[:, :, 0]
                    else:
                        target = flat_seg[:stored]
                    try:
                        fast.decode(data, count, target)
                    except Exception:  # noqa: BLE001 - let tifffile judge the segment
                        self._decode_slow(bytes(data[head : head + count]), index, dst, r0 - top, r1 - top, w)
                        continue
                    if not whole:
                        dst[...] = segment[r0 - top : r1 - top, :w]
        return total

    def _decode_slow(self, data: bytes, index: int, dst: np.ndarray, y0: int, y1: int, w: int) -> None:
        """Decode one segment with tifffile's own decoder and copy rows ``y0:y1``, columns ``:w`` into ``dst``."""
        name = self.info.name
        if len(data) < int(self._counts[index]):
            raise ReadError(f"{name}: truncated file: strip/tile {index} ends early")
        self._check_payload(data, index)
        try:
            segment: Any = self._decode(data, index, **self._decodeargs)[0]
        except Exception as err:  # noqa: BLE001 - codecs raise many types
            raise ReadError(f"{name}: corrupt data in strip/tile {index} ({err})") from err
        if segment is None:
            dst[...] = self._fill
            return
        segment = segment.reshape(segment.shape[-3:])
        if segment.shape[0] < y1 or segment.shape[1] < w:
            raise ReadError(f"{name}: corrupt data in strip/tile {index} (too short)")
        dst[...] = segment[y0:y1, :w]


def _align(n: int) -> int:
    """``n`` rounded up to a multiple of 64 (keeps the compressed data after the segment cache-aligned)."""
    return (n + 63) & ~63
