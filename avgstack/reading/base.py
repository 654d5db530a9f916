"""What every reader adapter provides: header facts and band reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..windows import Band

__all__ = ["ImageInfo", "Source", "ALPHA_KINDS"]

#: TIFF ExtraSamples codes, by name.
ALPHA_KINDS = {0: "unspecified", 1: "associated alpha", 2: "unassociated alpha"}


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of one input, known before any pixel is decoded.

    Samples are always described in stored order (RGB for colour), never in
    OpenCV's BGR order; only the OpenCV and array adapters convert.

    Attributes
    ----------
    name : str
        How the input is named in messages (its path, or ``array #i``).
    height, width, samples : int
        Image shape; ``samples`` is 1 for gray.
    dtype : numpy.dtype
        Sample type as decoded (bool for bilevel, uint16 for 12-bit, ...).
    photometric : str
        ``'minisblack'``, ``'miniswhite'``, ``'rgb'`` or ``'separated'``.
    extrasamples : tuple of int
        TIFF ExtraSamples codes of the samples beyond the colour ones.
    bits : int or None
        Stored bits per sample when not the full width of ``dtype``.
    format : str
        ``'tiff'``, ``'png'``, ``'array'``, ...
    streamable : bool
        True when bands of rows can be read without decoding the whole frame.
    segment_height : int
        Rows per strip or tile row: bands aligned to it decode nothing twice.
    scratch_bytes : int
        Bytes of decode scratch one band read needs beyond the band itself.
    metadata : dict
        Small facts comparisons use (``orientation``; ``compression`` for TIFF).
        What a TIFF writer carries over comes from :meth:`Source.carried_metadata`.
    """

    name: str
    height: int
    width: int
    samples: int
    dtype: np.dtype
    photometric: str = "minisblack"
    extrasamples: tuple[int, ...] = ()
    bits: int | None = None
    format: str = "tiff"
    streamable: bool = True
    segment_height: int = 1
    scratch_bytes: int = 0
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, samples)``."""
        return (self.height, self.width, self.samples)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one decoded frame."""
        return self.height * self.width * self.samples * self.dtype.itemsize

    def describe(self) -> str:
        """Short text such as ``6000x4000 RGBA uint8``."""
        kind = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}.get(self.samples, f"{self.samples}-sample")
        if self.photometric == "separated":
            kind = "CMYK" if self.samples == 4 else f"{self.samples}-ink"
        bits = f" ({self.bits}-bit)" if self.bits else ""
        return f"{self.width}x{self.height} {kind} {self.dtype}{bits}"


class Source(ABC):
    """One input, opened for reading bands of rows.

    Subclasses set :attr:`info` in their constructor from headers alone.
    """

    info: ImageInfo

    @abstractmethod
    def read_band(self, band: Band, out: np.ndarray) -> int:
        """Decode rows ``band`` into ``out`` (shape ``(band.height, width, samples)``).

        Returns
        -------
        int
            Bytes read from storage.
        """

    def carried_metadata(self) -> dict[str, Any]:
        """What an output TIFF should carry from this input (ICC profile, resolution, tags).

        Loaded on demand, so that only the input describing the output pays for
        it; sources without such metadata return ``info.metadata``.
        """
        return dict(self.info.metadata)

    def close(self) -> None:
        """Release what the source holds (file handles are pooled elsewhere)."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
