"""Round trips: the mean of K copies of a file is that file, for every TIFF layout.

Inputs are written with tifffile in many layouts; the output is read back with
tifffile and compared bit for bit with the array that was written (values,
dtype, channel count and order), and the output's tags are checked against
the first input's.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from conftest import (
    assert_same_bits,
    bgr,
    budget_for_bands,
    exact_int_mean,
    exact_int_mean_fast,
    random_image,
    read_tiff,
    varied_floats,
    write_tiff,
)

import avgstack

DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"]

#: name -> (samples, tifffile keyword arguments)
LAYOUTS = {
    "gray": (1, dict(photometric="minisblack")),
    "gray+alpha": (2, dict(photometric="minisblack", planarconfig="contig", extrasamples=["unassalpha"])),
    "rgb": (3, dict(photometric="rgb")),
    "rgba-unassociated": (4, dict(photometric="rgb", extrasamples=["unassalpha"])),
    "rgba-associated": (4, dict(photometric="rgb", extrasamples=["assocalpha"])),
}

#: name -> tifffile keyword arguments for the storage of the pixels
STORAGES = {
    "strips-default": {},
    "strips-rps1": dict(rowsperstrip=1),
    "strips-rps7": dict(rowsperstrip=7),
    "strips-rps-odd-large": dict(rowsperstrip=13),
    "tiles-16": dict(tile=(16, 16)),
    "tiles-32x16": dict(tile=(32, 16)),
    "lzw": dict(compression="lzw"),
    "lzw-predictor": dict(compression="lzw", predictor=True),
    "deflate": dict(compression="deflate"),
    "deflate-predictor-rps5": dict(compression="zlib", predictor=True, rowsperstrip=5),
    "zstd": dict(compression="zstd"),
    "zstd-tiles": dict(compression="zstd", tile=(16, 16), predictor=True),
    "packbits": dict(compression="packbits", rowsperstrip=3),
    "lzma": dict(compression="lzma"),
    "planar-separate": dict(planarconfig="separate"),
    "planar-separate-rps3-deflate": dict(planarconfig="separate", rowsperstrip=3, compression="zlib"),
    "planar-separate-tiles": dict(planarconfig="separate", tile=(16, 16)),
    "big-endian": dict(byteorder=">"),
    "big-endian-tiles-lzw": dict(byteorder=">", tile=(16, 16), compression="lzw", predictor=True),
    "big-endian-rps1": dict(byteorder=">", rowsperstrip=1),
    "bigtiff": dict(bigtiff=True),
    "bigtiff-tiles-zstd": dict(bigtiff=True, tile=(16, 16), compression="zstd"),
}

HEIGHT, WIDTH = 37, 29  # neither a multiple of 16 nor of the strip heights


def make_image(rng, dtype, samples, shape=(HEIGHT, WIDTH)):
    """Random integers over the whole range, or floats over (nearly) every exponent with -0.0, inf, subnormals.

    Float64 magnitudes stay below 2**994 so that sums of a few copies stay finite
    and far from overflow; larger values are tested on their own
    (test_float64_extremes_round_trip).
    """
    shape = tuple(shape) + ((samples,) if samples > 1 else ())
    if np.dtype(dtype).kind == "f":
        return varied_floats(rng, shape, dtype, headroom=30 if np.dtype(dtype) == np.float64 else 0)
    return random_image(rng, shape, dtype)


def write_layout(path, image, **kwargs) -> str:
    """Write ``image`` ``(rows, cols[, samples])``; planar-separate files take ``(samples, rows, cols)``."""
    if kwargs.get("planarconfig") == "separate" and image.ndim == 3:
        image = np.moveaxis(image, -1, 0)
    return write_tiff(path, image, **kwargs)


def layout_kwargs(layout: str, samples: int, storage: dict, dtype) -> dict:
    kwargs = dict(LAYOUTS[layout][1])
    kwargs.update(storage)
    if samples == 1:
        kwargs.pop("planarconfig", None)
    if kwargs.get("predictor") is True:
        kwargs["predictor"] = 3 if np.dtype(dtype).kind == "f" else 2
    return kwargs


def tags_of(path):
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        return dict(
            photometric=int(page.photometric),
            extrasamples=tuple(int(e) for e in page.extrasamples or ()),
            samples=int(page.samplesperpixel),
            dtype=np.dtype(page.dtype).newbyteorder("="),
            compression=int(page.compression),
            is_tiled=bool(page.is_tiled),
            tile=(int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None,
            resolution=(page.tags.valueof(282), page.tags.valueof(283), page.tags.valueof(296)),
            icc=page.tags.valueof(34675),
            bigtiff=tif.is_bigtiff,
        )


def check_copies_round_trip(tmp_path, image, kwargs, copies=3, **options):
    """Average ``copies`` copies of ``image`` stored with ``kwargs``; the output must equal it bit for bit."""
    src = write_layout(tmp_path / "in.tif", image, **kwargs)
    out = tmp_path / "out.tif"
    report = avgstack.average_to_file([src] * copies, out, **options)
    result = read_tiff(out)
    assert_same_bits(result, image)
    written, read = tags_of(out), tags_of(src)
    assert written["photometric"] == read["photometric"]
    assert written["extrasamples"] == read["extrasamples"]
    assert written["samples"] == read["samples"]
    assert report.frames == copies and report.clipped == 0
    assert report.shape == (image.shape[0], image.shape[1], image.shape[2] if image.ndim == 3 else 1)
    assert report.dtype == image.dtype.name
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    return out


# -- every sample type in every channel layout ------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_copies_round_trip_every_dtype_and_channel_layout(tmp_path, rng, dtype, layout):
    samples = LAYOUTS[layout][0]
    image = make_image(rng, dtype, samples)
    check_copies_round_trip(tmp_path, image, layout_kwargs(layout, samples, {}, dtype))


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize(
    "dtype, layout",
    [("uint8", "rgba-unassociated"), ("uint16", "rgb"), ("int16", "gray"), ("float32", "gray+alpha"),
     ("float64", "rgba-associated"), ("int32", "rgb"), ("float16", "gray")],
)
def test_copies_round_trip_every_storage(tmp_path, rng, storage, dtype, layout):
    samples = LAYOUTS[layout][0]
    image = make_image(rng, dtype, samples)
    check_copies_round_trip(tmp_path, image, layout_kwargs(layout, samples, STORAGES[storage], dtype))


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_planar_separate_16_and_32_bit_with_alpha(tmp_path, rng, dtype):
    image = make_image(rng, dtype, 4)
    kwargs = dict(photometric="rgb", extrasamples=["unassalpha"], planarconfig="separate", rowsperstrip=4)
    check_copies_round_trip(tmp_path, image, kwargs, copies=2)


@pytest.mark.parametrize("storage", ["strips-default", "tiles-16"])
@pytest.mark.parametrize("exponents", [(997, 1020), (1020, 1024)], ids=["sum-fits", "sum-overflows"])
def test_float64_extremes_round_trip(tmp_path, rng, storage, exponents):
    """Copies of float64 values of magnitude 2**997 and up (up to the largest finite one) come back bit for bit.

    Above 2**997 the sums of three copies still fit float64 but splitting them for an
    exact product overflows; at 2**1022 the sums themselves overflow.
    """
    n = HEIGHT * WIDTH
    mant = rng.uniform(1.0, 2.0, n)
    exp = rng.integers(*exponents, n)
    image = np.ldexp(mant, exp)
    image[~np.isfinite(image)] = np.finfo(np.float64).max
    image = np.where(rng.random(n) < 0.5, -image, image).reshape(HEIGHT, WIDTH)
    check_copies_round_trip(tmp_path, image, layout_kwargs("gray", 1, STORAGES[storage], "float64"))


def test_single_input_round_trips(tmp_path, rng):
    image = make_image(rng, "uint16", 3)
    check_copies_round_trip(tmp_path, image, dict(photometric="rgb"), copies=1)


def test_average_of_copies_returns_the_file_in_opencv_layout(tmp_path, rng):
    image = make_image(rng, "uint16", 4)
    src = write_tiff(tmp_path / "in.tif", image, photometric="rgb", extrasamples=["unassalpha"], tile=(16, 16))
    result = avgstack.average([src, src])
    assert_same_bits(result, bgr(image))


# -- the mean of distinct frames stored in different layouts ----------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint32"])
def test_mean_of_frames_in_mixed_layouts_is_exact(tmp_path, rng, dtype):
    frames = [make_image(rng, dtype, 3) for _ in range(5)]
    storages = ["strips-rps7", "tiles-16", "lzw-predictor", "planar-separate-rps3-deflate", "big-endian-tiles-lzw"]
    paths = [
        write_layout(tmp_path / f"f{i}.tif", f, **layout_kwargs("rgb", 3, STORAGES[s], dtype))
        for i, (f, s) in enumerate(zip(frames, storages))
    ]
    out = tmp_path / "out.tif"
    avgstack.average_to_file(paths, out)
    assert_same_bits(read_tiff(out), exact_int_mean(frames))
    assert_same_bits(avgstack.average(paths), bgr(exact_int_mean(frames)))


# -- multi-page files -----------------------------------------------------------------------


def test_page_suffix_selects_a_page(tmp_path, rng):
    page0 = make_image(rng, "uint8", 3, (20, 30))
    page1 = make_image(rng, "uint8", 3, (11, 13))
    page1b = make_image(rng, "uint8", 3, (11, 13))
    path = tmp_path / "multi.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(page0, photometric="rgb")
        tif.write(page1, photometric="rgb", compression="lzw")
    other = write_tiff(tmp_path / "other.tif", page1b, photometric="rgb")
    out = tmp_path / "out.tif"
    avgstack.average_to_file([f"{path}[1]", f"{path}[1]"], out)
    assert_same_bits(read_tiff(out), page1)
    avgstack.average_to_file([f"{path}[1]", other], out)
    assert_same_bits(read_tiff(out), exact_int_mean([page1, page1b]))
    avgstack.average_to_file([f"{path}[0]", str(path)], out)
    assert_same_bits(read_tiff(out), page0)


def test_page_out_of_range_is_an_input_error(tmp_path, rng):
    path = write_tiff(tmp_path / "one.tif", make_image(rng, "uint8", 1, (4, 4)))
    with pytest.raises(avgstack.InputError) as info:
        avgstack.average([path, f"{path}[3]"])
    assert "[3]" in str(info.value) or "page 3" in str(info.value)


# -- JPEG (lossy): compare with the decoded input -------------------------------------------


@pytest.mark.parametrize(
    "samples, kwargs",
    [(3, dict(photometric="rgb", compression="jpeg")),
     (3, dict(photometric="rgb", compression="jpeg", tile=(16, 16))),
     (1, dict(photometric="minisblack", compression="jpeg", rowsperstrip=8))],
)
def test_jpeg_tiff_copies_equal_the_decoded_input(tmp_path, rng, samples, kwargs):
    image = make_image(rng, "uint8", samples, (40, 33))
    src = write_tiff(tmp_path / "in.tif", image, **kwargs)
    decoded = read_tiff(src)
    out = tmp_path / "out.tif"
    avgstack.average_to_file([src] * 3, out)
    assert_same_bits(read_tiff(out), decoded)
    assert tags_of(out)["samples"] == samples


# -- output options ---------------------------------------------------------------------------


OUTPUT_COMPRESSION_CODES = {"none": 1, "lzw": 5, "deflate": 8, "zstd": 50000, "packbits": 32773, "lzma": 34925}


@pytest.mark.parametrize("compression", list(OUTPUT_COMPRESSION_CODES))
@pytest.mark.parametrize("tile", [None, 16, 32])
@pytest.mark.parametrize(
    "dtype, layout", [("uint8", "rgba-unassociated"), ("uint16", "gray"), ("float32", "rgb"), ("int16", "gray+alpha"),
                      ("float16", "gray")]
)
def test_output_compression_and_tiles(tmp_path, rng, compression, tile, dtype, layout):
    samples = LAYOUTS[layout][0]
    frames = [make_image(rng, dtype, samples) for _ in range(2)]
    if np.dtype(dtype).kind == "f":
        frames = [frames[0], frames[0]]  # copies: the mean is the frame, bit for bit
        expected = frames[0]
    else:
        expected = exact_int_mean(frames)
    kwargs = layout_kwargs(layout, samples, {}, dtype)
    paths = [write_tiff(tmp_path / f"f{i}.tif", f, **kwargs) for i, f in enumerate(frames)]
    out = tmp_path / "out.tif"
    avgstack.average_to_file(paths, out, compression=compression, tile=tile)
    assert_same_bits(read_tiff(out), expected)
    tags = tags_of(out)
    assert tags["compression"] == OUTPUT_COMPRESSION_CODES[compression]
    assert tags["is_tiled"] == (tile is not None)
    if tile:
        assert tags["tile"] == (tile, tile)
    assert tags["extrasamples"] == tags_of(paths[0])["extrasamples"]


def test_output_carries_photometric_extrasamples_resolution_and_icc_from_first_input(tmp_path, rng):
    icc = bytes(rng.integers(0, 256, 300, dtype=np.uint8))
    a = make_image(rng, "uint16", 4)
    b = make_image(rng, "uint16", 4)
    first = write_tiff(
        tmp_path / "a.tif", a, photometric="rgb", extrasamples=["assocalpha"], resolution=(300, 150),
        resolutionunit="CENTIMETER", iccprofile=icc,
    )
    second = write_tiff(tmp_path / "b.tif", b, photometric="rgb", extrasamples=["assocalpha"])
    out = tmp_path / "out.tif"
    avgstack.average_to_file([first, second], out, compression="zstd", tile=16)
    tags = tags_of(out)
    assert tags["photometric"] == 2
    assert tags["extrasamples"] == (1,)
    assert tags["icc"] == icc
    xres, yres, unit = tags["resolution"]
    assert xres[0] / xres[1] == 300 and yres[0] / yres[1] == 150 and int(unit) == 3
    assert_same_bits(read_tiff(out), exact_int_mean([a, b]))


def test_gray_alpha_output_keeps_its_alpha_tag(tmp_path, rng):
    image = make_image(rng, "uint8", 2)
    out = check_copies_round_trip(tmp_path, image, layout_kwargs("gray+alpha", 2, {}, "uint8"))
    assert tags_of(out)["extrasamples"] == (2,)


def test_output_dtype_option_is_written(tmp_path, rng):
    frames = [make_image(rng, "uint8", 3) for _ in range(3)]
    paths = [write_tiff(tmp_path / f"f{i}.tif", f, photometric="rgb") for i, f in enumerate(frames)]
    out = tmp_path / "out.tif"
    avgstack.average_to_file(paths, out, dtype="float64")
    expected = sum(f.astype(np.float64) for f in frames) / 3  # sums are exact; one rounding
    assert_same_bits(read_tiff(out), expected)


def test_output_png_round_trip_keeps_bgr_order(tmp_path, rng):
    import cv2

    image = make_image(rng, "uint16", 4)
    src = write_tiff(tmp_path / "in.tif", image, photometric="rgb", extrasamples=["unassalpha"])
    out = tmp_path / "out.png"
    avgstack.average_to_file([src, src], out)
    assert_same_bits(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), bgr(image))


@pytest.mark.parametrize("ext", ["png", "jpg"])
@pytest.mark.parametrize("dtype", ["float32", "int16", "int32"])
def test_opencv_output_never_silently_changes_the_sample_type(tmp_path, rng, ext, dtype):
    """A result the format cannot hold is refused before processing, never written as different samples.

    Regression: OpenCV 5 "falls back to CV_8U" for float32/int16 PNG and JPEG, so
    the output held saturated 8-bit samples while the call reported success.
    """
    image = make_image(rng, dtype, 3, (6, 7))
    if np.dtype(dtype).kind == "f":
        image = np.nan_to_num(image, posinf=1.0, neginf=-1.0).clip(-1e4, 1e4).astype(dtype)
    src = write_tiff(tmp_path / "in.tif", image, photometric="rgb")
    out = tmp_path / f"out.{ext}"
    try:
        avgstack.average_to_file([src, src], out)
    except avgstack.AvgstackError as err:
        assert isinstance(err, (avgstack.OutputError, avgstack.UsageError)), type(err)
        assert not out.exists()
        return
    import cv2

    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.dtype(dtype), f"asked for {dtype}, {ext} file holds {written.dtype}"


# -- many bands: the stack is larger than the budget ----------------------------------------


@pytest.mark.parametrize(
    "storage",
    ["strips-default", "strips-rps1", "strips-rps7", "tiles-16", "lzw-predictor", "planar-separate-rps3-deflate",
     "big-endian", "big-endian-tiles-lzw"],
)
@pytest.mark.parametrize("tile", [None, 32])
def test_many_bands_give_the_same_exact_mean(tmp_path, rng, storage, tile):
    """Bands of rows that are not a multiple of the image height, the strips or the tiles."""
    dtype = "uint16"
    frames = [make_image(rng, dtype, 3, (301, 700)) for _ in range(3)]
    kwargs = layout_kwargs("rgb", 3, STORAGES[storage], dtype)
    paths = [write_layout(tmp_path / f"f{i}.tif", f, **kwargs) for i, f in enumerate(frames)]
    out = tmp_path / "out.tif"
    report = avgstack.average_to_file(paths, out, max_memory="6MiB", tile=tile, threads=2)
    assert report.bands > 1, "the budget should force several bands"
    assert report.planned_memory <= 6 * 2**20
    assert_same_bits(read_tiff(out), exact_int_mean_fast(frames).astype(dtype))


@pytest.mark.parametrize("compression", ["zstd", "lzw"])
@pytest.mark.parametrize("threads", [2, 4])
@pytest.mark.parametrize("width", [90, 200])
def test_compressed_tiles_written_by_several_threads_across_bands(tmp_path, rng, compression, threads, width):
    """Tiles per band not a multiple of the encoder threads: every tile must hold its own band's pixels.

    Regression: tiles were handed to the parallel encoder as views of the reused band
    buffer, and those still waiting when the next band was computed were encoded
    with the next band's pixels.
    """
    frames = [make_image(rng, "uint16", 3, (300, width)) for _ in range(2)]
    paths = [write_tiff(tmp_path / f"f{i}.tif", f, photometric="rgb") for i, f in enumerate(frames)]
    out = tmp_path / "out.tif"
    options = dict(tile=32, compression=compression, threads=threads)
    report = avgstack.average_to_file(paths, out, max_memory=budget_for_bands(paths, out, **options), **options)
    assert report.bands > 1
    assert_same_bits(read_tiff(out), exact_int_mean_fast(frames).astype(np.uint16))
