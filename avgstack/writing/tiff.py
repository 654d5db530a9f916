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
from ..options import COMPRESSIONS
from ..windows import Band

__all__ = [
    "TiffOptions", "TiffEncoding", "COMPRESSIONS", "write_tiff", "encode_band", "strip_rows", "needs_bigtiff",
    "encode_scratch", "encoded_bytes",
]

log = logging.getLogger(__name__)

#: Working memory of one encoder call on a strip or tile of about 256 KiB, by compression code, measured
#: with ru_maxrss (lzma's match finder dominates).
_ENCODER_STATE = {1: 0, 5: 2**20, 8: 2 * 2**20, 50000: 4 * 2**20, 32773: 2**20, 34925: 24 * 2**20}
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
    """Bytes the encoder holds beyond the output band.

    Tiles: a copy of each tile handed to tifffile, its predictor output and
    the encoded bytes, for every tile tifffile buffers (one per encoder thread),
    plus each encoder's working memory. Strips are encoded one at a time.
    """
    state = _ENCODER_STATE[options.code]
    if options.tile:
        tile_bytes = options.tile * options.tile * samples * itemsize
        return (3 * tile_bytes + state) * max(1, threads)
    strip = strip_rows(width, samples, itemsize) * width * samples * itemsize
    return 3 * strip + state


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


@dataclass(frozen=True)
class TiffEncoding:
    """How the samples of an output TIFF are encoded: a picklable value, so that bands can be
    encoded where they are computed (a cluster worker) into the very bytes a local run writes."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    options: TiffOptions
    photometric: str
    extrasamples: tuple[int, ...] = ()
    bits: int | None = None

    def kwargs(self, metadata: dict[str, Any] | None = None, threads: int = 1) -> dict[str, Any]:
        """Arguments of ``tifffile.TiffWriter.write`` for the whole image."""
        height, width, samples = self.shape
        dtype, options, bits = np.dtype(self.dtype), self.options, self.bits
        metadata = dict(metadata or {})
        predictor = _predictor(options, dtype, bits)
        photometric, extrasamples = self.photometric, self.extrasamples
        colour = samples - len(extrasamples)
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
            extratags=metadata.get("extratags") or (),
            metadata=None,
            software="avgstack",
        )
        if options.tile:
            tile = options.tile
            kwargs.update(tile=(tile, tile), maxworkers=max(1, threads))
            kwargs["buffersize"] = tile * tile * samples * dtype.itemsize * max(1, threads)
        else:
            kwargs.update(rowsperstrip=strip_rows(width, samples, dtype.itemsize))
        return kwargs


def encoded_bytes(options: TiffOptions, rows: int, width: int, samples: int, itemsize: int) -> int:
    """Most bytes the strips or tiles of a band of ``rows`` rows encode to (edge tiles padded)."""
    if options.tile:
        t = options.tile
        rows, width = -(-rows // t) * t, -(-width // t) * t
    return int(rows * width * samples * itemsize * _EXPANSION[options.code]) + 64


def encode_band(rows: np.ndarray, encoding: TiffEncoding) -> list[bytes]:
    """The encoded strips or tiles of one band, in file order, as :func:`write_tiff` writes them.

    ``rows`` is ``(rows, width, samples)``; every band but the last is a
    multiple of :func:`segment_rows` rows. Strips go through the strip encoder
    of :func:`write_tiff`; tiles through tifffile's own encoder, by writing the
    band as a tiled TIFF in memory with the arguments of the whole image, so
    the bytes are those a local run writes.
    """
    options, dtype = encoding.options, np.dtype(encoding.dtype)
    _, width, samples = encoding.shape
    if encoding.photometric == "cielab":
        from ..reading.lab import flip_signs

        rows = flip_signs(rows)  # back to signed a*/b*, in place: the band is this task's own
    if not options.tile:
        rps = strip_rows(width, samples, dtype.itemsize)
        encode = _strip_encoder(options, dtype, encoding.bits, _predictor(options, dtype, encoding.bits))
        return list(_strips([(Band(0, rows.shape[0]), rows)], rps, encode))
    kwargs = encoding.kwargs()
    kwargs["shape"] = (rows.shape[0], *kwargs["shape"][1:])
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, bigtiff=True) as writer:
        writer.write(_tiles([(Band(0, rows.shape[0]), rows)], options.tile, width, samples), **kwargs)
    view = buffer.getbuffer()
    with tifffile.TiffFile(io.BytesIO(view)) as tif:
        page = tif.pages.first
        spans = list(zip(page.dataoffsets, page.databytecounts, strict=True))
    chunks = [bytes(view[offset : offset + count]) for offset, count in spans]
    del view
    return chunks


def write_tiff(
    fh: BinaryIO,
    bands: Iterable[tuple[Band, np.ndarray]] | None,
    *,
    shape: tuple[int, int, int],
    dtype: np.dtype,
    options: TiffOptions,
    photometric: str,
    extrasamples: tuple[int, ...] = (),
    bits: int | None = None,
    metadata: dict[str, Any] | None = None,
    threads: int = 1,
    chunks: Iterable[bytes] | None = None,
) -> bool:
    """Write bands of rows, top to bottom, as one TIFF page.

    Parameters
    ----------
    fh : binary file
        Open for writing, positioned at 0.
    bands : iterable of (Band, ndarray), or None with ``chunks``
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
    chunks : iterable of bytes, optional
        Every strip or tile already encoded (:func:`encode_band`), in file
        order, instead of ``bands``: written as they come.

    Returns
    -------
    bool
        Whether BigTIFF was written.
    """
    dtype = np.dtype(dtype)
    encoding = TiffEncoding(shape, dtype, options, photometric, tuple(extrasamples), bits)
    bigtiff = needs_bigtiff(options, shape, dtype.itemsize)
    kwargs = encoding.kwargs(metadata, threads)
    kwargs["extratags"] = carried_tags(kwargs["extratags"], bigtiff)
    if photometric == "cielab" and bands is not None:
        bands = _lab_encoded(bands)  # back to signed a*/b* (reading/lab.py), in place: the band is written next
    data: Iterator[Any]
    if chunks is not None:
        data = iter(chunks)
    elif options.tile:
        assert bands is not None
        data = _tiles(bands, options.tile, shape[1], shape[2])
    else:
        assert bands is not None
        predictor = _predictor(options, dtype, bits)
        data = _strips(bands, kwargs["rowsperstrip"], _strip_encoder(options, dtype, bits, predictor))
    with tifffile.TiffWriter(fh, bigtiff=bigtiff) as writer:
        writer.write(data, **kwargs)
    return bigtiff


def _lab_encoded(bands: Iterable[tuple[Band, np.ndarray]]) -> Iterator[tuple[Band, np.ndarray]]:
    """CIELab bands back to their stored encoding (signed a*/b*), in place: the band is written next."""
    from ..reading.lab import flip_signs

    for band, array in bands:
        yield band, flip_signs(array)


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
    if dtype in (2, "s", "2") and isinstance(value, str) and not value.isascii():  # ASCII, by code or name
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
