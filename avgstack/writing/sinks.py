"""Sinks: where finished bands go, each declaring the buffers it needs.

* :class:`TiffSink` streams bands into a TIFF, strip by strip or tile by tile.
* :class:`OpenCVSink` gathers the whole result and encodes it with OpenCV.
* :class:`ArraySink` gathers the whole result for :func:`avgstack.average`.

:func:`choose_sink` is the one place that picks a sink for an output.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from ..buffers import Buffer, find, opaque
from ..errors import OutputError, UsageError
from ..windows import Band

__all__ = ["Sink", "TiffSink", "OpenCVSink", "ArraySink", "Written", "choose_sink", "TIFF_EXTENSIONS"]

TIFF_EXTENSIONS = (".tif", ".tiff", ".btf", ".tf8")

#: Name of the whole-result buffer of the sinks that need one.
RESULT = "result"
#: Name of the output band buffers of streaming sinks.
OUTPUT_BANDS = "output bands"


@dataclass(frozen=True)
class Written:
    """What a sink wrote: bytes and whether the file is BigTIFF."""

    nbytes: int = 0
    bigtiff: bool = False


@dataclass(frozen=True)
class Layout:
    """What a sink knows of the result it receives."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    photometric: str = "minisblack"
    extrasamples: tuple[int, ...] = ()
    bits: int | None = None
    #: Called once, when the output is written, for what a TIFF carries over (ICC profile, tags, ...).
    metadata: Callable[[], dict[str, Any]] | None = None

    @property
    def frame_bytes(self) -> int:
        h, w, s = self.shape
        return h * w * s * np.dtype(self.dtype).itemsize


class Sink(ABC):
    """Receives the result band by band."""

    #: Every band but the last must be a multiple of this many rows.
    align: int = 1
    #: True when the sink needs the whole result in one array (``result``).
    whole: bool = False
    #: Output format, for plans: ``'tiff'``, ``'png'``, ``'array'``...
    format: str = "array"

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    @abstractmethod
    def declare(self, rows: int, threads: int, overlapped: bool) -> list[Buffer]:
        """Buffers for bands of ``rows`` rows: output bands (``overlapped``: one written while the next is
        computed), the whole result, encoder scratch for ``threads`` encoder threads."""

    def result(self, plan: Any) -> np.ndarray | None:
        """The whole-result array bands are computed into, for sinks that need one (else None)."""
        return None

    def write(self, fh: Any, bands: Iterable[tuple[Band, np.ndarray]], plan: Any, threads: int) -> Written:
        """Consume every band, in order, and write the output to ``fh``."""
        for _ in bands:
            pass
        return Written()


class TiffSink(Sink):
    """A TIFF written as bands arrive (BigTIFF when it could pass 4 GiB)."""

    format = "tiff"

    def __init__(self, layout: Layout, compression: str = "none", tile: int | None = None) -> None:
        from .tiff import TiffOptions, segment_rows

        super().__init__(layout)
        self.options = TiffOptions(compression=compression, tile=tile)
        h, w, s = layout.shape
        self.align = segment_rows(self.options, w, s, np.dtype(layout.dtype).itemsize)

    def declare(self, rows: int, threads: int, overlapped: bool) -> list[Buffer]:
        from .tiff import encode_scratch

        h, w, s = self.layout.shape
        dtype = np.dtype(self.layout.dtype)
        return [
            Buffer(OUTPUT_BANDS, (rows, w, s), dtype, copies=2 if overlapped else 1),
            opaque("encoder", encode_scratch(self.options, w, s, dtype.itemsize, threads)),
        ]

    @property
    def bigtiff(self) -> bool:
        from .tiff import needs_bigtiff

        return needs_bigtiff(self.options, self.layout.shape, np.dtype(self.layout.dtype).itemsize)

    def encoding(self) -> Any:
        """How strips or tiles are encoded (a picklable :class:`~.tiff.TiffEncoding`)."""
        from .tiff import TiffEncoding

        lay = self.layout
        return TiffEncoding(lay.shape, np.dtype(lay.dtype), self.options, lay.photometric, lay.extrasamples, lay.bits)

    def write(self, fh: Any, bands: Iterable[tuple[Band, np.ndarray]], plan: Any, threads: int) -> Written:
        from .tiff import write_tiff

        lay = self.layout
        bigtiff = write_tiff(
            fh, bands, shape=lay.shape, dtype=lay.dtype, options=self.options, photometric=lay.photometric,
            extrasamples=lay.extrasamples, bits=lay.bits, metadata=self._metadata(),
            threads=threads,
        )
        return Written(fh.tell(), bigtiff)

    def _metadata(self) -> dict[str, Any] | None:
        """What the output carries from the inputs, loaded now (once per output)."""
        return self.layout.metadata() if self.layout.metadata is not None else None

    def write_encoded(self, fh: Any, chunks: Iterable[bytes]) -> Written:
        """Write strips or tiles encoded elsewhere (:func:`~.tiff.encode_band`), in file order."""
        from .tiff import write_tiff

        lay = self.layout
        bigtiff = write_tiff(
            fh, None, shape=lay.shape, dtype=lay.dtype, options=self.options, photometric=lay.photometric,
            extrasamples=lay.extrasamples, bits=lay.bits, metadata=self._metadata(), chunks=chunks,
        )
        return Written(fh.tell(), bigtiff)


class _WholeSink(Sink):
    whole = True

    def _result(self) -> Buffer:
        return Buffer(RESULT, self.layout.shape, self.layout.dtype)

    def result(self, plan: Any) -> np.ndarray:
        """Allocate the whole-result array from the plan's declaration (bands are computed into it)."""
        self.array = find(plan.buffers, RESULT).allocate()
        return self.array


class ArraySink(_WholeSink):
    """The whole result as one array, returned to the caller."""

    def declare(self, rows: int, threads: int, overlapped: bool) -> list[Buffer]:
        return [self._result()]


class OpenCVSink(_WholeSink):
    """The whole result encoded by OpenCV (PNG, JPEG, WebP, ...)."""

    def __init__(self, layout: Layout, path: str, ext: str) -> None:
        super().__init__(layout)
        self.path = path
        self.ext = ext
        self.format = ext.lstrip(".")

    def declare(self, rows: int, threads: int, overlapped: bool) -> list[Buffer]:
        from .opencv import encode_bytes

        nbytes = encode_bytes(self.layout.frame_bytes, self.ext, self.layout.shape[2])
        return [self._result(), opaque("encoder", nbytes)]

    def write(self, fh: Any, bands: Iterable[tuple[Band, np.ndarray]], plan: Any, threads: int) -> Written:
        from .opencv import write_opencv

        for _ in bands:  # computed into self.array
            pass
        written = write_opencv(fh, self.array, self.ext, self.path)
        del self.array
        return Written(written)


def choose_sink(
    out: str | None,
    layout: Layout,
    *,
    compression: str = "none",
    tile: int | None = None,
) -> Sink:
    """The sink for output path ``out`` (None: an in-memory array).

    Raises
    ------
    OutputError, UsageError
        An extension nobody can write, or a result the format cannot hold.
    """
    if out is None:
        return ArraySink(layout)
    if out.lower().endswith(TIFF_EXTENSIONS):
        return TiffSink(layout, compression, tile)
    if compression not in (None, "none") or tile:
        raise UsageError("compression and tile (--compression, --tile) apply to TIFF output only")
    from ..reading.layout import OPENCV_PHOTOMETRICS
    from . import opencv as opencv_writer  # imports OpenCV only when needed

    ext = opencv_writer.check_writable(out)
    if layout.photometric not in OPENCV_PHOTOMETRICS:
        raise OutputError(f"{out}: {layout.photometric} images can only be written as TIFF; use a .tif output")
    opencv_writer.check_encodable(out, ext, np.dtype(layout.dtype), layout.shape[2], shape=layout.shape[:2])
    return OpenCVSink(layout, os.fspath(out), ext)
