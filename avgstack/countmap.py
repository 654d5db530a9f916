"""The count map: a TIFF of how many frames contributed to each sample, written with the output.

It has the output's geometry and carried georeferencing (resolution, GeoTIFF
tags; no ICC profile and no nodata tag: counts are not colours), one channel
per output channel, and uint16 samples (uint32 beyond 65535 frames). Counts
are what the reducers kept: frames with nodata (or zero alpha under
``alpha='coverage'``) and frames a rejecting method left out are not counted.

The file is uncompressed with contiguous strips, laid out by tifffile before
the first band (an empty image), and each band's counts are written at their
offset as the band is finished, so it streams with the output within the
budget: its band buffers are declared like the output's (:meth:`CountMap.declare`).
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable

import numpy as np

from .buffers import Buffer
from .errors import OutputError, UsageError, WriteError
from .missing import GDAL_NODATA, count_dtype
from .windows import Band

__all__ = ["CountMap", "COUNT_BANDS", "count_band_buffers", "check_count_map"]

#: Name of the declared band buffers the counts are gathered in.
COUNT_BANDS = "count bands"
#: Rows per strip of the count map: about 256 KiB each.
_STRIP_BYTES = 256 * 1024


class CountMap:
    """Counts of a job's frames, streamed into a TIFF.

    Parameters
    ----------
    path : str
        Where the count map goes (written through a temporary file by the caller).
    shape : tuple of int
        ``(height, width, channels)``.
    frames : int
        Frames in the stack (chooses uint16 or uint32).
    metadata : callable, optional
        The output's carried metadata (``extratags``, ``resolution``, ...).
    """

    def __init__(
        self, path: str, shape: tuple[int, int, int], frames: int,
        metadata: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self.shape = shape
        self.dtype = count_dtype(frames)
        self.frames = frames
        self.metadata = metadata
        self._fd: int | None = None
        self._offset = 0

    def declare(self, rows: int, overlapped: bool) -> list[Buffer]:
        """Band buffers for the counts of ``rows`` rows (two when a band is written while the next is computed)."""
        return count_band_buffers(self.shape, self.frames, rows, overlapped)

    @property
    def frame_bytes(self) -> int:
        h, w, c = self.shape
        return h * w * c * self.dtype.itemsize

    def start(self, fh: BinaryIO) -> None:
        """Lay out the TIFF in ``fh`` (an empty image) and remember where its pixels go."""
        import tifffile

        h, w, c = self.shape
        carried = self.metadata() if self.metadata is not None else {}
        tags = [t for t in carried.get("extratags") or () if t[0] != GDAL_NODATA and t[0] in _GEO_TAGS]
        row_bytes = w * c * self.dtype.itemsize
        bigtiff = self.frame_bytes > 2**32 - 2**25
        tifffile.imwrite(
            fh, shape=(h, w, c) if c > 1 else (h, w), dtype=self.dtype, photometric="minisblack",
            planarconfig="contig" if c > 1 else None, rowsperstrip=max(1, _STRIP_BYTES // max(1, row_bytes)),
            resolution=carried.get("resolution"), resolutionunit=carried.get("resolutionunit"),
            extratags=tags, bigtiff=bigtiff, byteorder="<", software="avgstack", metadata=None,
        )
        fh.flush()
        with tifffile.TiffFile(fh.name) as tif:  # the temporary file, just laid out
            page = tif.pages[0]
            if not page.is_contiguous:  # pragma: no cover - tifffile lays out empty images contiguously
                raise WriteError(f"{self.path}: count map is not laid out contiguously")
            self._offset = int(page.dataoffsets[0])
        end = self._offset + self.frame_bytes
        if os.fstat(fh.fileno()).st_size < end:
            os.ftruncate(fh.fileno(), end)
        self._fd = fh.fileno()

    def write(self, band: Band, counts: np.ndarray) -> None:
        """Write the counts of ``band`` (``(rows, width, channels)``) at their place."""
        assert self._fd is not None, "start() first"
        _, w, c = self.shape
        data = np.ascontiguousarray(counts, self.dtype.newbyteorder("<"))
        view = memoryview(data.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        position = self._offset + band.start * w * c * self.dtype.itemsize
        done = 0
        try:
            while done < len(view):
                done += os.pwrite(self._fd, view[done:], position + done)
        except OSError as err:
            raise WriteError(f"{self.path}: write failed ({err.strerror or err})") from err


def count_band_buffers(shape: tuple[int, int, int], frames: int, rows: int, overlapped: bool) -> list[Buffer]:
    """The count map's band buffers for bands of ``rows`` rows of an output of ``shape``."""
    _, w, c = shape
    return [Buffer(COUNT_BANDS, (rows, w, c), count_dtype(frames), copies=2 if overlapped else 1)]


#: Carried tags that describe geometry, kept in the count map: orientation, GeoTIFF, GDAL metadata.
_GEO_TAGS = frozenset({274, 33550, 33922, 34264, 34735, 34736, 34737, 42112})


def check_count_map(path: str, output: str, inputs: list[str]) -> None:
    """Refuse a count map that is not a TIFF, is the output, or is an input (before processing)."""
    from .writing.atomic import check_output
    from .writing.sinks import TIFF_EXTENSIONS

    if not path.lower().endswith(TIFF_EXTENSIONS):
        raise UsageError(f"count_map (--count-map) {path}: the count map is a TIFF; use a .tif name")
    if os.path.abspath(path) == os.path.abspath(output):
        raise OutputError(f"{path}: the count map cannot be the output itself")
    check_output(path, inputs)
