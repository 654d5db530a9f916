"""The fast segment decoders (avgstack.reading.codecs) are bit-exact: every codec and predictor of
the round-trip suite, decoded by every back end in use, equals tifffile's own decode of the segment.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from conftest import assert_same_bits, budget_for_bands, random_image, read_tiff, write_tiff

import avgstack
from avgstack.reading import FilePool, codecs
from avgstack.reading.tiff import TiffSource
from avgstack.windows import Band

#: (tifffile compression name, predictor) for every compressed storage of test_roundtrip.py
CODEC_CASES = [
    ("lzw", None), ("lzw", 2), ("adobe_deflate", None), ("deflate", 2), ("zlib", 2),
    ("zstd", None), ("zstd", 2), ("packbits", None), ("packbits", 2),
]
CASE_BACKENDS = [
    (name, predictor, backend)
    for name, predictor in CODEC_CASES
    for backend in codecs.PREFERRED[({"zlib": "deflate", "adobe_deflate": "deflate"}.get(name, name), predictor or 1)]
]
DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"]
#: samples, tifffile keyword arguments: gray, gray+alpha, RGB, RGBA, planar-separate RGB
LAYOUTS = [
    (1, dict(photometric="minisblack")),
    (2, dict(photometric="minisblack", planarconfig="contig", extrasamples=["unassalpha"])),
    (3, dict(photometric="rgb")),
    (4, dict(photometric="rgb", extrasamples=["unassalpha"])),
    (3, dict(photometric="rgb", planarconfig="separate")),
]
#: strips with a short last strip, one strip per image, tiles
STORAGES = [dict(rowsperstrip=5), dict(), dict(tile=(16, 32))]


def _image(rng, dtype, samples, planar):
    shape = (37, 29) + ((samples,) if samples > 1 else ())
    if np.dtype(dtype).kind == "f":  # any bit pattern, NaN payloads included: decoders move bits
        bits = random_image(rng, shape, f"uint{np.dtype(dtype).itemsize * 8}")
        image = bits.view(dtype)
    else:
        image = random_image(rng, shape, dtype)
    return np.moveaxis(image, -1, 0) if planar and samples > 1 else image


def _segments_decoded_both_ways(raw: bytes, backend: str):
    """Yield (fast result, tifffile result) for every segment of the first page of ``raw``."""
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        page = tif.pages[0]
        dtype = np.dtype(page.dtype).newbyteorder("=")
        planar = int(page.planarconfig) == 2 and page.samplesperpixel > 1
        samples = 1 if planar else int(page.samplesperpixel)
        seg_h = int(page.tilelength) if page.is_tiled else min(int(page.rowsperstrip), int(page.imagelength))
        seg_w = int(page.tilewidth) if page.is_tiled else int(page.imagewidth)
        decoder = codecs.choose(
            int(page.compression), int(page.predictor), dtype, int(page.bitspersample), int(page.fillorder),
            samples, seg_w, tif.byteorder == ">", backend=backend,
        )
        assert decoder is not None and decoder.name == backend
        per_plane = len(page.dataoffsets) // (page.samplesperpixel if planar else 1)
        for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
            data = raw[offset : offset + count]
            expected = page.decode(data, index, _fullsize=page.is_tiled)[0]
            expected = expected.reshape(expected.shape[-3:])
            top = (index % per_plane) // -(-int(page.imagewidth) // seg_w) * seg_h
            rows = seg_h if page.is_tiled else min(seg_h, int(page.imagelength) - top)
            out = np.full((rows, seg_w, samples), 0x5A, np.uint8).view(dtype) if dtype.itemsize == 1 else \
                np.zeros((rows, seg_w, samples), dtype)
            target = out if samples > 1 else out[:, :, 0]
            buf = bytearray(decoder.head + count)
            buf[decoder.head :] = data
            decoder.decode(memoryview(buf), count, target)  # raises if the fast path fails
            yield out, np.ascontiguousarray(expected[:rows].astype(dtype))


@pytest.mark.parametrize(("compression", "predictor", "backend"), CASE_BACKENDS)
def test_fast_decoder_equals_tifffile_for_every_dtype_layout_and_byte_order(rng, compression, predictor, backend):
    checked = 0
    for dtype in DTYPES:
        if predictor == 2 and np.dtype(dtype).kind == "f":
            continue  # floats take predictor 3, which tifffile decodes (see below)
        for samples, layout in LAYOUTS:
            planar = layout.get("planarconfig") == "separate"
            image = _image(rng, dtype, samples, planar)
            for storage in STORAGES:
                for byteorder in "<>":
                    bio = io.BytesIO()
                    tifffile.imwrite(bio, image, compression=compression, predictor=predictor,
                                     byteorder=byteorder, **layout, **storage)
                    for got, expected in _segments_decoded_both_ways(bio.getvalue(), backend):
                        assert_same_bits(got, expected)
                        checked += 1
    assert checked > 1000


def test_float_predictor_and_packed_bits_are_left_to_tifffile():
    f32 = np.dtype("float32")
    assert codecs.choose(5, 3, f32, 32, 1, 1, 16, False) is None  # floating-point predictor
    assert codecs.choose(5, 2, f32, 32, 1, 1, 16, False) is None  # horizontal predictor on floats
    assert codecs.choose(5, 1, np.dtype("uint16"), 12, 1, 1, 16, False) is None  # 12-bit samples
    assert codecs.choose(5, 1, np.dtype("uint8"), 8, 2, 1, 16, False) is None  # FillOrder 2
    assert codecs.choose(7, 1, np.dtype("uint8"), 8, 1, 3, 16, False) is None  # JPEG
    assert codecs.choose(34925, 1, np.dtype("uint8"), 8, 1, 3, 16, False) is None  # LZMA


def test_lzw_and_deflate_reads_use_the_fast_decoder_not_tifffile(tmp_path, rng):
    """A fast decoder that silently fell back to tifffile on every segment would still be correct but slow."""
    image = random_image(rng, (40, 33, 4), "uint8")
    for name, kwargs in [("lzw", dict(compression="lzw", predictor=2, tile=(16, 16))),
                         ("deflate", dict(compression="zlib", predictor=2, rowsperstrip=6))]:
        path = write_tiff(tmp_path / f"{name}.tif", image, photometric="rgb", extrasamples=["unassalpha"], **kwargs)
        with FilePool() as pool:
            source = TiffSource(path, 0, pool)

            def refuse(*args, **kw):
                raise AssertionError("tifffile decoder called")

            source._decode = refuse
            out = np.empty(image.shape, np.uint8)
            source.read_band(Band(0, 40), out)
        assert_same_bits(out, image)


def test_segment_the_fast_decoder_rejects_is_decoded_by_tifffile(tmp_path, rng):
    image = random_image(rng, (40, 33, 3), "uint16")
    path = write_tiff(tmp_path / "in.tif", image, photometric="rgb", compression="lzw", predictor=2, rowsperstrip=7)
    with FilePool() as pool:
        source = TiffSource(path, 0, pool)
        assert source._fast is not None

        def fail(buf, count, out):
            out[...] = 0
            raise ValueError("decoder refused")

        source._fast.decode = fail
        out = np.empty(image.shape, np.uint16)
        source.read_band(Band(0, 40), out)
    assert_same_bits(out, image)


def test_mean_of_lzw_and_deflate_read_in_bands_is_exact(tmp_path, rng):
    """Bands cutting through tiles and strips: decoded segments are copied, whole strips decoded in place."""
    frames = [random_image(rng, (700, 300, 4), "uint8") for _ in range(3)]
    rgba = dict(photometric="rgb", extrasamples=["unassalpha"])
    paths = [
        write_tiff(tmp_path / "a.tif", frames[0], compression="lzw", predictor=2, tile=(16, 32), **rgba),
        write_tiff(tmp_path / "b.tif", frames[1], compression="zlib", predictor=2, rowsperstrip=9, **rgba),
        write_tiff(tmp_path / "c.tif", frames[2], compression="lzw", rowsperstrip=4, **rgba),
    ]
    total = np.sum([f.astype(np.int64) for f in frames], axis=0)
    q, r = np.divmod(total, 3)
    mean = (q + ((2 * r > 3) | ((2 * r == 3) & (q % 2 == 1)))).astype(np.uint8)
    out = tmp_path / "out.tif"
    budget = budget_for_bands(paths, out, minimum_bands=3)
    for threads in (1, 2):
        avgstack.average_to_file(paths, out, max_memory=budget, threads=threads)
        assert_same_bits(read_tiff(out), mean)
