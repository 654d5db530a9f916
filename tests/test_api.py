"""The public API and the command line: layouts, channel order, validation, errors and exit codes."""

from __future__ import annotations

import os
import zlib

import cv2
import numpy as np
import pytest
import tifffile
from conftest import (
    assert_same_bits,
    bgr,
    exact_int_mean,
    exact_int_mean_fast,
    random_image,
    read_tiff,
    run_cli,
    write_tiff,
)

import avgstack
from avgstack import (
    AvgstackError,
    BudgetError,
    IncompatibleInputsError,
    InputError,
    OutputError,
    ProcessingError,
    ReadError,
    UsageError,
)


def exact_int_mean_np(frames):
    """Exact mean of large integer frames, in their dtype."""
    return exact_int_mean_fast(frames).astype(frames[0].dtype)


def rgb_frames(rng, count=3, shape=(12, 10, 3), dtype="uint8"):
    return [random_image(rng, shape, dtype) for _ in range(count)]


def save_tiffs(tmp_path, frames, prefix="f", **kwargs):
    return [write_tiff(tmp_path / f"{prefix}{i}.tif", f, **kwargs) for i, f in enumerate(frames)]


def truncated_tiff(path, image, **kwargs) -> str:
    """A TIFF whose header is intact but whose pixel data is cut off after a few bytes."""
    tifffile.imwrite(path, image, **kwargs)
    with tifffile.TiffFile(path) as tif:
        first = min(tif.pages[0].dataoffsets)
    with open(path, "r+b") as fh:
        fh.truncate(first + 3)
    return str(path)


def garbage_tiff(path, image, **kwargs) -> str:
    """A deflate-compressed TIFF whose header is intact but whose strips are random bytes."""
    tifffile.imwrite(path, image, compression="zlib", **kwargs)
    with tifffile.TiffFile(path) as tif:
        segments = list(zip(tif.pages[0].dataoffsets, tif.pages[0].databytecounts))
    noise = np.random.default_rng(7)
    with open(path, "r+b") as fh:
        for offset, count in segments:
            fh.seek(offset)
            fh.write(bytes(noise.integers(0, 256, count, dtype=np.uint8)))
    return str(path)


def png_header_only(path, width, height, channels=3) -> str:
    """A PNG with a valid signature and IHDR (8-bit) and garbage instead of image data."""
    color = {1: 0, 3: 2, 4: 6}[channels]
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, color, 0, 0, 0])

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib at all") + chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


# -- layout and channel order -----------------------------------------------------


def test_average_returns_bgr_for_rgb_tiffs(tmp_path, rng):
    frames = rgb_frames(rng)
    result = avgstack.average(save_tiffs(tmp_path, frames, photometric="rgb"))
    assert_same_bits(result, bgr(exact_int_mean(frames)))


def test_average_returns_2d_for_gray(tmp_path, rng):
    frames = rgb_frames(rng, shape=(9, 7), dtype="uint16")
    result = avgstack.average(save_tiffs(tmp_path, frames))
    assert result.shape == (9, 7)
    assert_same_bits(result, exact_int_mean(frames))


def test_arrays_in_bgr_come_out_in_bgr(rng):
    frames = rgb_frames(rng, shape=(6, 5, 4))
    result = avgstack.average(frames)
    assert_same_bits(result, exact_int_mean(frames))


def test_arrays_and_paths_mix_with_arrays_in_bgr(tmp_path, rng):
    frames = rgb_frames(rng, count=4)  # in RGB order
    paths = save_tiffs(tmp_path, frames[:2], photometric="rgb")
    inputs = [paths[0], bgr(frames[2]), paths[1], bgr(frames[3])]
    assert_same_bits(avgstack.average(inputs), bgr(exact_int_mean(frames)))
    out = tmp_path / "out.tif"
    avgstack.average_to_file(inputs, out)
    assert_same_bits(read_tiff(out), exact_int_mean(frames))


@pytest.mark.parametrize("channels, dtype", [(3, "uint8"), (4, "uint8"), (4, "uint16"), (1, "uint16")])
def test_png_and_tiff_of_the_same_image_keep_channel_order(tmp_path, rng, channels, dtype):
    shape = (11, 13, channels) if channels > 1 else (11, 13)
    image = random_image(rng, shape, dtype)  # RGB(A) order
    png = str(tmp_path / "a.png")
    assert cv2.imwrite(png, bgr(image))  # OpenCV stores BGR arrays as RGB files
    tif = write_tiff(tmp_path / "b.tif", image, photometric="rgb" if channels > 1 else "minisblack")
    # the mean of the same image twice is that image, whatever the mix of formats
    assert_same_bits(avgstack.average([png, tif]), bgr(image))
    assert_same_bits(avgstack.average([tif, png, png]), bgr(image))
    out_tif = tmp_path / "out.tif"
    avgstack.average_to_file([png, tif], out_tif)
    assert_same_bits(read_tiff(out_tif), image)
    out_png = tmp_path / "out.png"
    avgstack.average_to_file([tif, png], out_png)
    assert_same_bits(cv2.imread(str(out_png), cv2.IMREAD_UNCHANGED), bgr(image))


def test_png_and_tiff_of_different_images_average_channel_by_channel(tmp_path, rng):
    a, b, c = rgb_frames(rng, count=3, shape=(8, 9, 3))
    png = str(tmp_path / "a.png")
    cv2.imwrite(png, bgr(a))
    tifs = save_tiffs(tmp_path, [b, c], photometric="rgb")
    assert_same_bits(avgstack.average([png, *tifs]), bgr(exact_int_mean([a, b, c])))


def test_caller_arrays_are_not_modified(rng):
    frames = rgb_frames(rng, shape=(5, 6, 3))
    copies = [f.copy() for f in frames]
    avgstack.average(frames)
    avgstack.average(frames, [0.5, 0.25, 0.25], dtype="float32")
    for f, c in zip(frames, copies):
        assert_same_bits(f, c)


def test_single_input_is_returned_unchanged(rng):
    frame = random_image(rng, (4, 5, 3), "int16")
    assert_same_bits(avgstack.average([frame]), frame)


def test_non_contiguous_and_big_endian_arrays(rng):
    frames = [random_image(rng, (10, 12, 3), "uint16") for _ in range(2)]
    views = [frames[0][::2, ::3], frames[1][::2, ::3].astype(">u2")]
    assert_same_bits(avgstack.average(views), exact_int_mean([f[::2, ::3] for f in frames]))


# -- weights and dtype ---------------------------------------------------------------


def test_weights_give_a_weighted_sum(tmp_path, rng):
    frames = rgb_frames(rng, count=3, dtype="uint16")
    weights = [0.5, 0.25, -0.125]
    result = avgstack.average(save_tiffs(tmp_path, frames, photometric="rgb"), weights, dtype="float64")
    expected = sum(w * f.astype(np.float64) for w, f in zip(weights, frames))  # exact in float64 here
    assert_same_bits(result, bgr(expected))


@pytest.mark.parametrize("weights", [[1.0], [1.0, 2.0, 3.0], [1.0, float("nan")], [1.0, float("inf")], ["a", "b"]])
def test_bad_weights_are_usage_errors(rng, weights):
    frames = rgb_frames(rng, count=2)
    with pytest.raises(UsageError) as info:
        avgstack.average(frames, weights)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("dtype", ["complex64", "uint64", "bool", "int64", "rgb"])
def test_bad_dtype_is_a_usage_error(rng, dtype):
    with pytest.raises(UsageError):
        avgstack.average(rgb_frames(rng, count=2), dtype=dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64"])
def test_every_output_dtype_is_accepted(rng, dtype):
    frames = [np.full((3, 4), v, np.uint8) for v in (10, 13)]
    result = avgstack.average(frames, dtype=dtype)
    assert result.dtype == np.dtype(dtype)
    assert float(result[0, 0]) == (11.5 if np.dtype(dtype).kind == "f" else 12)


@pytest.mark.parametrize(
    "kwargs", [dict(threads=0), dict(threads=-1), dict(max_memory="lots"), dict(max_memory=0)]
)
def test_bad_options_are_usage_errors(rng, kwargs):
    with pytest.raises(UsageError):
        avgstack.average(rgb_frames(rng, count=2), **kwargs)


def test_no_inputs_is_a_usage_error():
    with pytest.raises(UsageError):
        avgstack.average([])


# -- input errors, found from headers -----------------------------------------------------


def test_missing_file_is_an_input_error_naming_it(tmp_path, rng):
    good = save_tiffs(tmp_path, rgb_frames(rng, count=1))[0]
    missing = str(tmp_path / "nope.tif")
    with pytest.raises(InputError) as info:
        avgstack.average([good, missing])
    assert "nope.tif" in str(info.value) and info.value.exit_code == 2


@pytest.mark.parametrize("content", [b"", b"this is not an image at all, just some text\n" * 3])
def test_empty_or_unknown_files_are_input_errors(tmp_path, rng, content):
    good = save_tiffs(tmp_path, rgb_frames(rng, count=1))[0]
    bad = tmp_path / "bad.tif"
    bad.write_bytes(content)
    with pytest.raises(InputError) as info:
        avgstack.average([good, str(bad)])
    assert "bad.tif" in str(info.value)


def test_directory_is_an_input_error(tmp_path, rng):
    good = save_tiffs(tmp_path, rgb_frames(rng, count=1))[0]
    with pytest.raises(InputError):
        avgstack.average([good, str(tmp_path)])


ODD_INPUTS = [
    ((12, 11, 3), "uint8", dict(photometric="rgb")),  # width
    ((13, 10, 3), "uint8", dict(photometric="rgb")),  # height
    ((12, 10, 4), "uint8", dict(photometric="rgb")),  # channels
    ((12, 10), "uint8", dict()),  # gray
    ((12, 10, 3), "uint16", dict(photometric="rgb")),  # dtype
    ((12, 10, 3), "int8", dict(photometric="rgb")),  # signedness
    ((12, 10, 3), "float32", dict(photometric="rgb")),
]


@pytest.mark.parametrize("odd_shape, odd_dtype, kwargs", ODD_INPUTS)
def test_incompatible_inputs_are_found_from_headers_before_pixels(tmp_path, rng, odd_shape, odd_dtype, kwargs):
    """The odd file's pixels are garbage, and a compatible one's too: the mismatch is still reported first."""
    frames = rgb_frames(rng, count=2)
    good = save_tiffs(tmp_path, frames, photometric="rgb")
    damaged_ok = garbage_tiff(tmp_path / "damaged_but_compatible.tif", frames[0], photometric="rgb")
    odd = garbage_tiff(tmp_path / "odd.tif", random_image(rng, odd_shape, odd_dtype), **kwargs)
    for inputs in ([good[0], damaged_ok, odd, good[1]], [good[0], odd], [damaged_ok, odd]):
        with pytest.raises(IncompatibleInputsError) as info:
            avgstack.average(inputs)
        assert "odd.tif" in str(info.value)
        assert info.value.exit_code == 2
    with pytest.raises(IncompatibleInputsError) as info:
        avgstack.average_to_file([good[0], damaged_ok, odd], tmp_path / "out.tif")
    assert "odd.tif" in str(info.value)
    assert not (tmp_path / "out.tif").exists()


@pytest.mark.parametrize("odd_shape, odd_dtype, kwargs", ODD_INPUTS[:3])
def test_truncated_mismatching_input_is_an_input_error_not_a_read_error(tmp_path, rng, odd_shape, odd_dtype, kwargs):
    """Truncation may be noticed from the header too; either way it is found before any pixel is read."""
    good = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    odd = truncated_tiff(tmp_path / "odd.tif", random_image(rng, odd_shape, odd_dtype), **kwargs)
    with pytest.raises(InputError) as info:
        avgstack.average([*good, odd])
    assert "odd.tif" in str(info.value)
    assert info.value.exit_code == 2


def test_incompatible_png_is_found_from_its_header(tmp_path, rng):
    good = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    odd = png_header_only(tmp_path / "odd.png", width=11, height=12)
    with pytest.raises(IncompatibleInputsError) as info:
        avgstack.average([*good, odd])
    assert "odd.png" in str(info.value)


def test_alpha_kinds_must_agree(tmp_path, rng):
    a, b = rgb_frames(rng, count=2, shape=(6, 6, 4))
    first = write_tiff(tmp_path / "assoc.tif", a, photometric="rgb", extrasamples=["assocalpha"])
    second = write_tiff(tmp_path / "unassoc.tif", b, photometric="rgb", extrasamples=["unassalpha"])
    with pytest.raises(IncompatibleInputsError) as info:
        avgstack.average([first, second])
    assert "unassoc.tif" in str(info.value)


def test_garbage_pixel_data_is_a_read_error_during_processing(tmp_path, rng):
    frames = rgb_frames(rng, count=2)
    good = save_tiffs(tmp_path, frames, photometric="rgb")
    bad = garbage_tiff(tmp_path / "bad.tif", frames[0], photometric="rgb")
    with pytest.raises(ReadError) as info:
        avgstack.average([good[0], bad, good[1]])
    assert isinstance(info.value, ProcessingError) and info.value.exit_code == 1
    assert "bad.tif" in str(info.value)


def test_truncated_pixel_data_is_an_error_naming_the_file(tmp_path, rng):
    """Found from the header (InputError, exit 2) or while reading (ReadError, exit 1): never a crash."""
    frames = rgb_frames(rng, count=2)
    good = save_tiffs(tmp_path, frames, photometric="rgb")
    bad = truncated_tiff(tmp_path / "bad.tif", frames[0], photometric="rgb")
    with pytest.raises((InputError, ReadError)) as info:
        avgstack.average([good[0], bad, good[1]])
    assert "bad.tif" in str(info.value)


def test_failed_run_leaves_the_previous_output_untouched(tmp_path, rng):
    frames = rgb_frames(rng, count=2)
    good = save_tiffs(tmp_path, frames, photometric="rgb")
    bad = garbage_tiff(tmp_path / "bad.tif", frames[0], photometric="rgb")
    out = tmp_path / "out.tif"
    out.write_bytes(b"previous result")
    with pytest.raises(ReadError):
        avgstack.average_to_file([good[0], bad], out)
    assert out.read_bytes() == b"previous result"
    assert sorted(os.listdir(tmp_path)) == sorted(["bad.tif", "f0.tif", "f1.tif", "out.tif"])


# -- output errors ------------------------------------------------------------------------


def test_output_must_not_be_an_input(tmp_path, rng):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    before = open(paths[1], "rb").read()
    with pytest.raises(OutputError):
        avgstack.average_to_file(paths, paths[1])
    assert open(paths[1], "rb").read() == before


def test_output_folder_must_exist(tmp_path, rng):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    with pytest.raises(OutputError):
        avgstack.average_to_file(paths, tmp_path / "missing" / "out.tif")


@pytest.mark.parametrize("out", ["out.tif", "out.png"])
def test_average_to_file_accepts_arrays_only(tmp_path, rng, out):
    """Regression: average_to_file passed array inputs to os.fspath (TypeError)."""
    frames = rgb_frames(rng, count=3)  # BGR arrays
    avgstack.average_to_file(frames, tmp_path / out)
    written = read_tiff(tmp_path / out) if out.endswith(".tif") else bgr(cv2.imread(str(tmp_path / out)))
    assert_same_bits(written, bgr(exact_int_mean(frames)))


@pytest.mark.parametrize(
    "out, kwargs",
    [("out.png", dict(compression="lzw")), ("out.png", dict(tile=16)), ("out.tif", dict(tile=17)),
     ("out.tif", dict(tile=0)), ("out.tif", dict(compression="jpeg2000-please"))],
)
def test_bad_output_options_are_usage_errors(tmp_path, rng, out, kwargs):
    with pytest.raises(UsageError):
        avgstack.average_to_file(rgb_frames(rng, count=2), tmp_path / out, **kwargs)
    assert not (tmp_path / out).exists()


# -- memory budget ----------------------------------------------------------------------------


def test_average_needs_the_whole_result_within_the_budget(tmp_path, rng):
    frames = [random_image(rng, (600, 1000, 4), "uint8") for _ in range(2)]  # 2.4 MB result
    paths = save_tiffs(tmp_path, frames, photometric="rgb")
    with pytest.raises(BudgetError) as info:
        avgstack.average(paths, max_memory="2MiB")
    assert info.value.exit_code == 2
    # streaming to a file does not hold the result
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory="5MiB")
    assert report.planned_memory <= 5 * 2**20 and report.bands > 1
    assert_same_bits(read_tiff(tmp_path / "out.tif"), exact_int_mean_np(frames))


def test_tiny_budget_is_a_budget_error_naming_the_option(tmp_path, rng):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    with pytest.raises(BudgetError) as info:
        avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory=1000)
    assert "memory" in str(info.value)
    assert not (tmp_path / "out.tif").exists()


def test_average_with_several_bands_and_a_short_last_band(rng):
    """Arrays of 1001 rows under a budget that forces several bands; 1001 is prime to every band height."""
    frames = [random_image(rng, (1001, 300, 3), "uint8") for _ in range(3)]
    result = avgstack.average(frames, max_memory="6MiB", threads=1)
    assert_same_bits(result, bgr(exact_int_mean_np([bgr(f) for f in frames])))


def test_tiled_output_of_a_wide_image_fits_the_default_budget(tmp_path, rng):
    """A 2100-pixel-wide RGBA image tiled at 256: 256-row bands need about 12 MiB, far below the default budget.

    Regression: the cache-friendly cap on band height (below 256 rows for wide
    images) made the planner round bands down to 0 rows and raise BudgetError.
    """
    frames = [random_image(rng, (300, 2100, 4), "uint8") for _ in range(2)]
    paths = save_tiffs(tmp_path, frames, photometric="rgb", extrasamples=["unassalpha"])
    out = tmp_path / "out.tif"
    avgstack.average_to_file(paths, out, tile=256)
    assert_same_bits(read_tiff(out), exact_int_mean_np(frames))


# -- progress and report -----------------------------------------------------------------------


def test_progress_reports_every_band_of_every_input(tmp_path, rng):
    frames = [random_image(rng, (400, 900, 3), "uint8") for _ in range(3)]
    paths = save_tiffs(tmp_path, frames, photometric="rgb")
    events = []
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", max_memory="5MiB", progress=events.append)
    assert report.bands > 1
    assert [e.done for e in events] == list(range(1, 3 * report.bands + 1))
    assert all(e.total == 3 * report.bands and e.bands == report.bands for e in events)
    assert [e.band for e in events] == sorted(e.band for e in events)
    assert events[-1].bytes_read == report.bytes_read >= sum(f.nbytes for f in frames)


def test_report_describes_the_job(tmp_path, rng):
    frames = rgb_frames(rng, count=3, shape=(20, 30, 4), dtype="uint16")
    paths = save_tiffs(tmp_path, frames, photometric="rgb", extrasamples=["unassalpha"])
    out = tmp_path / "out.tif"
    report = avgstack.average_to_file(paths, out, dtype="float32", compression="deflate")
    assert report.output == str(out)
    assert report.shape == (20, 30, 4)
    assert report.dtype == "float32"
    assert report.frames == 3
    assert report.bytes_written == os.path.getsize(out)
    assert report.bigtiff is False and report.clipped == 0
    assert report.peak_memory > 0 and report.seconds >= 0
    assert isinstance(report.summary(), str) and str(out) in report.summary()


def test_every_error_is_an_avgstack_error():
    for cls in (UsageError, InputError, IncompatibleInputsError, OutputError, BudgetError, ProcessingError,
                ReadError, avgstack.WriteError, avgstack.UnsupportedInputError):
        assert issubclass(cls, AvgstackError)
    assert {UsageError.exit_code, InputError.exit_code, OutputError.exit_code, BudgetError.exit_code} == {2}
    assert ProcessingError.exit_code == ReadError.exit_code == avgstack.WriteError.exit_code == 1


# -- command line -----------------------------------------------------------------------------


def test_cli_writes_the_mean_and_exits_0(tmp_path, rng):
    frames = rgb_frames(rng, count=3)
    paths = save_tiffs(tmp_path, frames, photometric="rgb")
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, *paths, "--compression", "lzw", "--tile", "16", "--threads", "2"])
    assert proc.returncode == 0, proc.stderr
    assert_same_bits(read_tiff(out), exact_int_mean(frames))


@pytest.mark.parametrize("form", ["after", "equals"])
def test_cli_weights_both_forms(tmp_path, rng, form):
    frames = rgb_frames(rng, count=3, dtype="uint16")
    paths = save_tiffs(tmp_path, frames, photometric="rgb")
    out = tmp_path / "out.tif"
    if form == "after":
        args = ["-o", out, *paths, "--weights", "1", "-0.5", "0.25", "--dtype", "float64"]
    else:
        args = ["--weights=1,-0.5,0.25", "-o", out, "--dtype", "float64", *paths]
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr
    expected = frames[0] - 0.5 * frames[1].astype(np.float64) + 0.25 * frames[2]
    assert_same_bits(read_tiff(out), expected)


def test_cli_incompatible_inputs_exit_2_naming_the_file(tmp_path, rng):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    odd = truncated_tiff(tmp_path / "odd.tif", random_image(rng, (5, 5, 3), "uint8"), photometric="rgb")
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, *paths, odd])
    assert proc.returncode == 2
    assert "odd.tif" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_corrupt_pixels_exit_1(tmp_path, rng):
    frames = rgb_frames(rng, count=2)
    paths = save_tiffs(tmp_path, frames, photometric="rgb")
    bad = garbage_tiff(tmp_path / "bad.tif", frames[0], photometric="rgb")
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, *paths, bad])
    assert proc.returncode == 1
    assert "bad.tif" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "extra",
    [["--max-memory", "lots"], ["--max-memory", "inf"], ["--max-memory", "1e400"], ["--dtype", "uint64"],
     ["--tile", "17"], ["--compression", "gif"], ["--weights", "1", "2", "3"]],
)
def test_cli_usage_errors_exit_2_without_traceback(tmp_path, rng, extra):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=2), photometric="rgb")
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, *paths, *extra])
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip()
    assert not out.exists()


def test_cli_missing_input_exit_2(tmp_path, rng):
    paths = save_tiffs(tmp_path, rgb_frames(rng, count=1), photometric="rgb")
    proc = run_cli(["-o", tmp_path / "out.tif", paths[0], tmp_path / "ghost.tif"])
    assert proc.returncode == 2 and "ghost.tif" in proc.stderr
