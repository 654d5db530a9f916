"""Streamed TIFF output: bands in, encoded strips or tiles out, BigTIFF when needed.

tifffile lays out the file (tags, offsets, BigTIFF); this module feeds it one
band at a time. Strips are encoded here (predictor, then compressor) because
tifffile takes compressed strips only as bytes; tiles are handed to tifffile
as arrays and it encodes them with a bounded thread pool.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
import tifffile

from ..errors import UsageError
from ..windows import Band

__all__ = ["TiffOptions", "COMPRESSIONS", "write_tiff", "strip_rows", "needs_bigtiff", "encode_scratch"]

log = logging.getLogger(__name__)

#: Compression names accepted by ``--compression`` and their TIFF codes.
COMPRESSIONS = {
    "none": 1,
    "lzw": 5,
    "deflate": 8,
    "zstd": 50000,
    "packbits": 32773,
    "lzma": 34925,
}
#: Worst-case growth of incompressible data, for choosing BigTIFF.
_EXPANSION = {1: 1.0, 5: 1.5, 8: 1.01, 50000: 1.01, 32773: 1.01, 34925: 1.01}
#: Target size of one output strip.
STRIP_BYTES = 256 * 1024
_CLASSIC_LIMIT = 2**32 - 2**25  # leave room for tags and offset tables


@dataclass(frozen=True)
class TiffOptions:
    """How the output TIFF is laid out.

    Attributes
    ----------
    compression : str
        One of :data:`COMPRESSIONS`.
    tile : int or None
        Square tile size (a multiple of 16), or None for strips.
    bigtiff : bool or None
        Force BigTIFF on or off; None chooses from the output size.
    """

    compression: str = "none"
    tile: int | None = None
    bigtiff: bool | None = None

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise UsageError(
                f"unknown compression {self.compression!r}; choose from {', '.join(COMPRESSIONS)}"
            )
        if self.tile is not None and (self.tile <= 0 or self.tile % 16):
            raise UsageError(f"tile size must be a positive multiple of 16, got {self.tile}")

    @property
    def code(self) -> int:
        return COMPRESSIONS[self.compression]


def strip_rows(width: int, samples: int, itemsize: int) -> int:
    """Rows per output strip: about :data:`STRIP_BYTES` each."""
    return max(1, STRIP_BYTES // max(1, width * samples * itemsize))


def segment_rows(options: TiffOptions, width: int, samples: int, itemsize: int) -> int:
    """Rows every band but the last must be a multiple of."""
    return options.tile or strip_rows(width, samples, itemsize)


def needs_bigtiff(options: TiffOptions, shape: tuple[int, int, int], itemsize: int) -> bool:
    """True when the output could exceed what classic TIFF addresses (4 GiB)."""
    if options.bigtiff is not None:
        return options.bigtiff
    raw = shape[0] * shape[1] * shape[2] * itemsize
    return raw * _EXPANSION[options.code] > _CLASSIC_LIMIT


def encode_scratch(options: TiffOptions, width: int, samples: int, itemsize: int, threads: int) -> int:
    """Bytes the encoder holds beyond the output band."""
    if options.tile:
        tile_bytes = options.tile * options.tile * samples * itemsize
        return 3 * tile_bytes * max(1, threads)
    strip = strip_rows(width, samples, itemsize) * width * samples * itemsize
    return 3 * strip


def _predictor(options: TiffOptions, dtype: np.dtype, bits: int | None) -> int:
    if options.code in (1, 32773) or dtype == np.bool_ or bits:
        return 1
    return 3 if dtype.kind == "f" else 2


def _strip_encoder(options: TiffOptions, dtype: np.dtype, bits: int | None, predictor: int):
    """Return a function encoding one strip array ``(rows, width, samples)`` to bytes."""
    code = options.code
    compress = tifffile.TIFF.COMPRESSORS[code] if code != 1 else None
    predict = tifffile.TIFF.PREDICTORS[predictor] if predictor > 1 else None

    def encode(strip: np.ndarray) -> bytes:
        if dtype == np.bool_:
            data: Any = np.packbits(strip.reshape(strip.shape[0], -1), axis=-1)
        elif bits:
            import imagecodecs

            data = imagecodecs.packints_encode(
                np.ascontiguousarray(strip), bits, runlen=strip.shape[1] * strip.shape[2]
            )
        else:
            data = strip
        if predict is not None:
            data = predict(data, axis=-2)
        if compress is None:
            return data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if code == 32773 and isinstance(data, np.ndarray):
            return compress(data, axis=-2 if dtype != np.bool_ else -1)
        return compress(data)

    return encode


def write_tiff(
    fh: BinaryIO,
    bands: Iterable[tuple[Band, np.ndarray]],
    *,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    options: TiffOptions,
    photometric: str,
    extrasamples: tuple[int, ...] = (),
    bits: int | None = None,
    metadata: dict[str, Any] | None = None,
    threads: int = 1,
) -> bool:
    """Write bands of rows, top to bottom, as one TIFF page.

    Parameters
    ----------
    fh : binary file
        Open for writing, positioned at 0.
    bands : iterable of (Band, ndarray)
        Consecutive bands; every band but the last is a multiple of
        :func:`segment_rows` rows. Arrays are ``(rows, width, samples)``.
    shape, dtype
        Of the whole image.
    options : TiffOptions
        Compression and tiling.
    photometric : str
        ``'minisblack'``, ``'miniswhite'``, ``'rgb'`` or ``'separated'``.
    extrasamples : tuple of int
        ExtraSamples codes of the non-colour samples.
    bits : int, optional
        Packed bits per sample (e.g. 12) for integer samples.
    metadata : dict, optional
        ``iccprofile``, ``resolution``, ``resolutionunit``, ``extratags``.
    threads : int
        Encoder threads for tiles.

    Returns
    -------
    bool
        Whether BigTIFF was written.
    """
    height, width, samples = shape
    dtype = np.dtype(dtype)
    metadata = dict(metadata or {})
    bigtiff = needs_bigtiff(options, shape, dtype.itemsize)
    predictor = _predictor(options, dtype, bits)
    n_extra = len(extrasamples)
    colour = samples - n_extra
    if photometric == "rgb" and colour != 3 or photometric in ("minisblack", "miniswhite") and colour != 1:
        # counts that do not fit the photometric: describe all extra samples as unspecified
        photometric = "rgb" if samples >= 3 and photometric == "rgb" else "minisblack"
        colour = 3 if photometric == "rgb" else 1
        extrasamples = (0,) * (samples - colour)
    kwargs: dict[str, Any] = dict(
        shape=(height, width, samples) if samples > 1 else (height, width),
        dtype=dtype,
        photometric=photometric,
        planarconfig="contig" if samples > 1 else None,
        extrasamples=tuple(extrasamples) or None,
        bitspersample=bits,
        compression=options.code if options.code != 1 else None,
        predictor=predictor if predictor > 1 else None,
        iccprofile=metadata.get("iccprofile"),
        resolution=metadata.get("resolution"),
        resolutionunit=metadata.get("resolutionunit"),
        extratags=carried_tags(metadata.get("extratags") or (), bigtiff),
        metadata=None,
        software="avgstack",
    )
    if options.tile:
        tile = options.tile
        kwargs.update(tile=(tile, tile), maxworkers=max(1, threads))
        kwargs["buffersize"] = tile * tile * samples * dtype.itemsize * max(1, threads)
        data: Iterator[Any] = _tiles(bands, tile, width, samples)
    else:
        rps = strip_rows(width, samples, dtype.itemsize)
        kwargs.update(rowsperstrip=rps)
        data = _strips(bands, rps, _strip_encoder(options, dtype, bits, predictor))
    with tifffile.TiffWriter(fh, bigtiff=bigtiff) as writer:
        writer.write(data, **kwargs)
    return bigtiff


def carried_tags(extratags: Iterable[tuple], bigtiff: bool = False) -> list[tuple]:
    """The carried tags (``(code, dtype, count, value, writeonce)``) in a form tifffile writes.

    ASCII tags holding text that is not 7-bit ASCII (GDAL writes its metadata
    as UTF-8) are written as their UTF-8 bytes. A tag that cannot be written
    even so is dropped with one warning; it never fails the run.
    """
    kept = []
    for tag in extratags:
        try:
            tag = _bytes_if_not_ascii(tuple(tag))
            _trial_write(tag, bigtiff)
        except Exception as err:  # noqa: BLE001 - tifffile raises many types for bad tag values
            code = tag[0] if isinstance(tag, tuple) and tag else "?"
            label = tifffile.TIFF.TAGS.get(code, "") if isinstance(code, int) else ""
            log.warning(
                "TIFF tag %s%s of the first input cannot be written to the output (%s: %s); dropped",
                code, f" ({label})" if label else "", type(err).__name__, str(err)[:200],
            )
            continue
        kept.append(tag)
    return kept


def _bytes_if_not_ascii(tag: tuple) -> tuple:
    code, dtype, count, value, *rest = tag
    if int(dtype) == 2 and isinstance(value, str) and not value.isascii():
        value = value.encode("utf-8", "surrogateescape")
        count = len(value) + 1
    return (code, dtype, count, value, *rest)


def _trial_write(tag: tuple, bigtiff: bool) -> None:
    """Write the tag into a one-pixel TIFF in memory: raises what the real write would."""
    with io.BytesIO() as buffer, tifffile.TiffWriter(buffer, bigtiff=bigtiff) as writer:
        writer.write(np.zeros((1, 1), np.uint8), extratags=[tag], metadata=None)


def _strips(bands: Iterable[tuple[Band, np.ndarray]], rps: int, encode) -> Iterator[bytes]:
    for band, array in bands:
        for start in range(0, band.height, rps):
            yield encode(array[start : start + rps])


def _tiles(bands: Iterable[tuple[Band, np.ndarray]], tile: int, width: int, samples: int) -> Iterator[np.ndarray]:
    for band, array in bands:
        for top in range(0, band.height, tile):
            rows = array[top : top + tile]
            for left in range(0, width, tile):
                block = rows[:, left : left + tile]
                # a copy: tifffile may encode it on a worker after this band's buffer is reused
                yield (block if samples > 1 else block[:, :, 0]).copy()
