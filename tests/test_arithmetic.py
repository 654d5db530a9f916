"""The arithmetic: exact integer means, float means, weighted sums, saturation.

Accumulators are driven directly (pure functions on arrays) and through
``avgstack.average`` on in-memory arrays. References are computed with Python
integers and fractions, never with avgstack's own formulas.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import (
    assert_same_bits,
    correctly_rounded,
    exact_float_mean,
    exact_int_mean,
    random_image,
    varied_floats,
    weighted_reference,
    write_tiff,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import avgstack
from avgstack.arithmetic import make_accumulator

INT_TYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32"]
FLOAT_TYPES = ["float16", "float32", "float64"]


def accumulate(frames, out_dtype=None, weights=None, band_rows=None):
    """Run frames ``(rows, cols, samples)`` through an accumulator, band by band; return (result, clipped)."""
    frames = [np.asarray(f) for f in frames]
    rows = frames[0].shape[0]
    band_rows = band_rows or rows
    out_dtype = np.dtype(out_dtype or frames[0].dtype)
    acc = make_accumulator(
        (band_rows,) + frames[0].shape[1:], len(frames), frames[0].dtype, out_dtype, weights
    )
    result = np.empty(frames[0].shape, out_dtype)
    clipped = 0
    for start in range(0, rows, band_rows):
        stop = min(rows, start + band_rows)
        acc.reset(stop - start)
        for i, frame in enumerate(frames):
            acc.add(frame[start:stop], i)
        clipped += acc.finish(result[start:stop])
    return result, clipped


# -- exact integer means ----------------------------------------------------------


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7])
def test_integer_mean_is_exactly_rounded(rng, dtype, count):
    frames = [random_image(rng, (6, 5, 2), dtype) for _ in range(count)]
    result, clipped = accumulate(frames, band_rows=4)  # two bands, the second shorter
    assert_same_bits(result, exact_int_mean(frames))
    assert clipped == 0


@pytest.mark.parametrize(
    "values, expected",
    [
        # N = 2: x.5 rounds to the even neighbour
        ((0, 1), 0),
        ((1, 2), 2),
        ((2, 3), 2),
        ((3, 4), 4),
        ((254, 255), 254),
        # N = 4: quarters and halves
        ((0, 0, 0, 2), 0),  # 0.5 -> 0
        ((0, 0, 2, 4), 2),  # 1.5 -> 2
        ((0, 2, 4, 4), 2),  # 2.5 -> 2
        ((1, 1, 1, 2), 1),  # 1.25 -> 1
        ((1, 2, 2, 2), 2),  # 1.75 -> 2
        ((255, 255, 255, 254), 255),  # 254.75 -> 255
        # N = 3: thirds never tie
        ((0, 0, 1), 0),
        ((0, 1, 1), 1),
    ],
)
def test_integer_ties_round_half_to_even_uint8(values, expected):
    frames = [np.full((2, 3, 1), v, np.uint8) for v in values]
    result, _ = accumulate(frames)
    assert np.all(result == expected), result.ravel()
    assert round(Fraction(sum(values), len(values))) == expected  # the reference agrees


@pytest.mark.parametrize(
    "values",
    [
        (-1, -2),  # -1.5 -> -2
        (-1, 0),  # -0.5 -> 0
        (-3, 0),  # -1.5 -> -2
        (-5, 0),  # -2.5 -> -2
        (-128, -127),  # -127.5 -> -128
        (127, 126),  # 126.5 -> 126
        (-1, -1, -1, 1),  # -0.5 -> 0
        (-2, -2, -2, 0),  # -1.5 -> -2
        (-128, -128, -128, 127),
    ],
)
def test_integer_ties_round_half_to_even_signed(values):
    frames = [np.full((1, 2, 1), v, np.int8) for v in values]
    result, _ = accumulate(frames)
    assert np.all(result == round(Fraction(sum(values), len(values)))), result.ravel()


@pytest.mark.parametrize(
    "dtype, values",
    [
        ("uint32", (2**32 - 1, 2**32 - 2)),
        ("uint32", (2**32 - 1, 2**32 - 1, 2**32 - 1, 2**32 - 3)),
        ("int32", (-(2**31), -(2**31) + 1)),
        ("int32", (2**31 - 1, 2**31 - 2)),
        ("uint16", (65535, 65534)),
        ("int16", (-32768, -32767)),
    ],
)
def test_integer_mean_at_the_ends_of_the_range(dtype, values):
    frames = [np.full((2, 2, 1), v, dtype) for v in values]
    result, clipped = accumulate(frames)
    assert clipped == 0
    assert result.dtype == np.dtype(dtype)
    assert np.all(result.astype(np.int64) == round(Fraction(sum(values), len(values))))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    dtype=st.sampled_from(INT_TYPES),
    data=st.data(),
)
def test_integer_mean_matches_fractions_for_any_values(dtype, data):
    info = np.iinfo(dtype)
    values = data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=1, max_size=40))
    frames = [np.full((1, 1, 1), v, dtype) for v in values]
    result, _ = accumulate(frames)
    assert int(result[0, 0, 0]) == round(Fraction(sum(values), len(values)))


@pytest.mark.parametrize(
    "dtype, count",
    [("uint16", 127), ("uint16", 128), ("uint16", 129), ("uint16", 255), ("uint16", 257),
     ("int16", 255), ("int16", 256), ("int16", 257), ("uint8", 32895), ("int8", 65535)],
)
def test_integer_mean_exact_around_float_precision_limits(rng, dtype, count):
    """Counts whose largest sums sit around 2**23 and 2**24; means near the top with ties and near-ties.

    Each pixel's frames are chosen so that its exact mean is k + 1/2, or 1/count away from it.
    """
    info = np.iinfo(dtype)
    pixels = 24
    top = int(info.max)
    frames = np.full((count, 1, pixels, 1), top, np.int64)
    # lower some samples so that the sums are top*count - d for d around count/2
    offsets = [count // 2 + delta for delta in (-1, 0, 1)] + list(rng.integers(0, count, pixels - 3))
    for p, d in enumerate(offsets):
        frames[: int(d), 0, p, 0] -= 1
    if info.min < 0:
        frames[:, :, ::2] = -frames[:, :, ::2] - 1  # negative means too, down to the minimum
    frames = [f.astype(dtype) for f in frames]
    result, clipped = accumulate(frames)
    totals = sum(f.astype(np.int64) for f in frames).ravel()
    expected = np.array([round(Fraction(int(t), count)) for t in totals]).reshape(result.shape)
    assert np.array_equal(result.astype(np.int64), expected)
    assert clipped == 0


def test_many_frames_do_not_overflow_the_sum(rng):
    """300 frames of uint16 near the top: the sum exceeds 32 bits."""
    frames = [rng.integers(65000, 65535, (3, 4, 1), dtype=np.uint16, endpoint=True) for _ in range(300)]
    result, _ = accumulate(frames)
    assert_same_bits(result, exact_int_mean(frames))


# -- other output types and saturation ---------------------------------------------


@pytest.mark.parametrize(
    "in_dtype, out_dtype",
    [("uint16", "uint8"), ("int16", "uint8"), ("int32", "int16"), ("uint32", "int8"), ("float32", "uint8")],
)
def test_integer_outputs_saturate_and_count_clipped(rng, in_dtype, out_dtype):
    frames = [random_image(rng, (8, 8, 3), in_dtype) for _ in range(3)]
    if np.dtype(in_dtype).kind == "f":
        frames = [f.astype(np.float64).clip(-600, 600).astype(in_dtype) for f in frames]
        exact = [round(sum(Fraction(float(f.ravel()[i])) for f in frames) / 3) for i in range(frames[0].size)]
    else:
        total = sum(f.astype(object) for f in frames).ravel()
        exact = [round(Fraction(int(s), 3)) for s in total]
    info = np.iinfo(out_dtype)
    expected = np.array([min(max(v, int(info.min)), int(info.max)) for v in exact], out_dtype).reshape(frames[0].shape)
    outside = sum(1 for v in exact if v < info.min or v > info.max)
    assert outside > 0  # the test data does saturate
    result, clipped = accumulate(frames, out_dtype)
    assert_same_bits(result, expected)
    assert clipped == outside


@pytest.mark.parametrize("in_dtype", ["uint8", "int16", "uint32", "int32"])
@pytest.mark.parametrize("out_dtype", ["float32", "float64"])
def test_integer_inputs_to_float_outputs_are_correctly_rounded(rng, in_dtype, out_dtype):
    frames = [random_image(rng, (4, 5, 1), in_dtype) for _ in range(3)]
    result, clipped = accumulate(frames, out_dtype)
    total = sum(f.astype(object) for f in frames).ravel()
    expected = np.array([correctly_rounded(Fraction(int(s), 3), out_dtype) for s in total], out_dtype)
    assert_same_bits(result, expected.reshape(result.shape))
    assert clipped == 0


@pytest.mark.parametrize("values, expected", [((0.5, 0.5), 0), ((1.5, 1.5), 2), ((2.5, 2.5), 2), ((-0.5, -0.5), 0),
                                              ((1.0, 2.0), 2), ((300.0, 300.0), 255), ((-7.0, -9.0), 0)])
def test_float_inputs_round_half_to_even_into_integers(values, expected):
    frames = [np.full((1, 3, 1), v, np.float32) for v in values]
    result, clipped = accumulate(frames, "uint8")
    assert np.all(result == expected)
    rounded = round(Fraction(sum(Fraction(v) for v in values), len(values)))
    assert clipped == (3 if not 0 <= rounded <= 255 else 0)


# -- float means ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_mean_of_copies_of_floats_is_the_same_bits(rng, dtype, count):
    """-0.0, +-inf, subnormals and every exponent (float64 up to 2**994) survive bit for bit."""
    image = varied_floats(rng, (16, 16, 3), dtype, headroom=30 if dtype == "float64" else 0)
    result, _ = accumulate([image] * count, band_rows=5)
    assert_same_bits(result, image)


@pytest.mark.parametrize("count", [2, 3, 5])
@pytest.mark.parametrize("exponents", [(997, 1020), (1021, 1024)], ids=["sum-fits", "sum-overflows"])
def test_mean_of_copies_of_huge_float64_is_the_same_bits(rng, count, exponents):
    """From 2**997 an exact product cannot be split without overflow; from 2**1021 the sum overflows."""
    image = np.ldexp(rng.uniform(1.0, 2.0, (4, 8, 1)), rng.integers(*exponents, (4, 8, 1)))
    image[~np.isfinite(image)] = np.finfo(np.float64).max
    image[0] *= -1
    result, _ = accumulate([image] * count)
    assert_same_bits(result, image)


def test_mean_of_nan_copies_is_nan():
    image = np.array([[[np.nan], [1.0]]], np.float32)
    result, _ = accumulate([image] * 3)
    assert np.isnan(result[0, 0, 0]) and result[0, 1, 0] == 1.0


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
def test_float_mean_is_correctly_rounded_for_moderate_ranges(rng, dtype):
    frames = [(rng.standard_normal((5, 4, 2)) * 10.0 ** rng.integers(-3, 4)).astype(dtype) for _ in range(6)]
    result, _ = accumulate(frames)
    assert_same_bits(result, exact_float_mean(frames))


def _ulps_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in units in the last place between same-dtype floats of the same sign ordering."""
    bits = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    ia, ib = a.view(bits).astype(object), b.view(bits).astype(object)

    def ordered(i):  # map the sign-magnitude bit patterns onto a line
        return i if i >= 0 else -(i & ((1 << (8 * a.dtype.itemsize - 1)) - 1))

    return np.array([abs(ordered(x) - ordered(y)) for x, y in zip(ia.ravel(), ib.ravel())])


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
def test_float_mean_within_one_ulp_over_the_whole_exponent_range(rng, dtype):
    """Float means are float64-accurate: at most one unit off the exactly rounded mean.

    Values reach the largest finite number, so sums overflow float64 for float64 inputs.
    """
    frames = [varied_floats(rng, (8, 8, 1), dtype, specials=False) for _ in range(5)]
    expected = exact_float_mean(frames)
    assert np.all(np.isfinite(expected))
    result, _ = accumulate(frames)
    assert np.all(np.isfinite(result)), "finite inputs with a finite mean gave inf/nan"
    assert _ulps_apart(result, expected).max() <= 1


def test_float_mean_compensates_cancellation():
    """1e16 + 1 - 1e16: a plain float64 sum gives 0, the exact mean is 1/3."""
    frames = [np.full((1, 1, 1), v, np.float64) for v in (1e16, 1.0, -1e16)]
    result, _ = accumulate(frames)
    assert result[0, 0, 0] == correctly_rounded(Fraction(1, 3), np.float64)


@pytest.mark.parametrize("dtype", FLOAT_TYPES)
def test_mean_of_largest_finite_values_does_not_overflow(dtype):
    big = np.finfo(dtype).max
    frames = [np.full((1, 2, 1), big, dtype), np.full((1, 2, 1), big, dtype), np.full((1, 2, 1), big / 2, dtype)]
    result, _ = accumulate(frames)
    expected = correctly_rounded((2 * Fraction(float(big)) + Fraction(float(big / 2))) / 3, dtype)
    assert result[0, 0, 0] == expected and np.isfinite(result[0, 0, 0])


def test_float_mean_of_opposite_infinities_is_nan():
    frames = [np.full((1, 1, 1), np.inf, np.float32), np.full((1, 1, 1), -np.inf, np.float32)]
    result, _ = accumulate(frames)
    assert np.isnan(result[0, 0, 0])


# -- weighted sums ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32", "uint32"])
def test_weighted_integer_output_within_one_unit(rng, dtype):
    frames = [random_image(rng, (6, 5, 3), dtype) for _ in range(4)]
    weights = [0.4, -0.25, 0.6, 0.2125]
    result, clipped = accumulate(frames, weights=weights, band_rows=4)
    info = np.iinfo(dtype)
    reference = weighted_reference(frames, weights).reshape(result.shape)
    inside = (reference >= info.min) & (reference <= info.max)
    diff = np.abs(result.astype(np.float64) - reference)
    assert diff[inside].max() <= 1.0
    # saturated where the reference is out of range
    assert np.all(result[reference < info.min] == info.min)
    assert np.all(result[reference > info.max] == info.max)
    # samples clearly outside the range after rounding are counted; those within 1e-6 of the edge may go either way
    surely = np.count_nonzero(reference < info.min - 0.5 - 1e-6) + np.count_nonzero(reference > info.max + 0.5 + 1e-6)
    maybe = np.count_nonzero(reference < info.min - 0.5 + 1e-6) + np.count_nonzero(reference > info.max + 0.5 - 1e-6)
    assert surely <= clipped <= maybe


def test_weighted_negative_sums_clip_and_count():
    frames = [np.full((2, 2, 1), 100, np.uint8), np.full((2, 2, 1), 200, np.uint8)]
    result, clipped = accumulate(frames, weights=[1.0, -1.0])
    assert np.all(result == 0) and clipped == 4
    result, clipped = accumulate(frames, weights=[1.0, 1.0])
    assert np.all(result == 255) and clipped == 4
    result, clipped = accumulate(frames, "int16", weights=[1.0, -1.0])
    assert np.all(result == -100) and clipped == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weighted_float_output_is_float64_accurate(rng, dtype):
    frames = [random_image(rng, (5, 5, 2), "float64") for _ in range(5)]
    weights = [0.01, -0.002, 3.5, -1e-3, 7.0]
    result, clipped = accumulate(frames, dtype, weights=weights)
    reference = weighted_reference(frames, weights).reshape(result.shape)
    scale = sum(abs(w) * np.abs(f.astype(np.float64)) for w, f in zip(weights, frames))
    tolerance = 8 * np.finfo(np.float64).eps * scale + np.finfo(dtype).eps * np.abs(reference)
    assert np.all(np.abs(result.astype(np.float64) - reference) <= tolerance)
    assert clipped == 0


def test_weights_of_one_over_n_approximate_the_mean(rng):
    frames = [random_image(rng, (8, 8, 1), "uint16") for _ in range(3)]
    exact, _ = accumulate(frames)
    weighted, _ = accumulate(frames, weights=[1 / 3] * 3)
    assert np.abs(exact.astype(int) - weighted.astype(int)).max() <= 1


# -- through the public API on arrays ---------------------------------------------------


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_average_of_arrays_is_the_exact_mean(rng, dtype):
    frames = [random_image(rng, (7, 9, 3), dtype) for _ in range(4)]
    result = avgstack.average(frames)
    assert_same_bits(result, exact_int_mean(frames))


def test_average_of_arrays_with_ties_n2_and_n4():
    a = np.array([[0, 1, 2, 3]], np.uint16)
    b = np.array([[1, 2, 3, 4]], np.uint16)
    assert avgstack.average([a, b]).tolist() == [[0, 2, 2, 4]]
    c = np.array([[0, 0, 0, 0]], np.uint16)
    d = np.array([[2, 6, 10, 14]], np.uint16)  # sums 2, 6, 10, 14 over 4 -> .5 ties
    assert avgstack.average([c, c, c, d]).tolist() == [[0, 2, 2, 4]]


def test_average_saturates_with_dtype(rng):
    frames = [random_image(rng, (4, 4), "int16") for _ in range(2)]
    result = avgstack.average(frames, dtype="uint8")
    assert_same_bits(result, exact_int_mean(frames, "uint8"))


def test_average_weighted_float32_output(rng):
    frames = [random_image(rng, (4, 6, 4), "uint8") for _ in range(3)]
    weights = [1.0, -0.5, 0.25]
    result = avgstack.average(frames, weights, dtype="float32")
    reference = weighted_reference(frames, weights).reshape(result.shape)
    assert result.dtype == np.float32
    assert np.allclose(result, reference, rtol=1e-6, atol=1e-4)


def test_clipped_samples_are_reported(tmp_path, rng):
    frames = [random_image(rng, (10, 10), "uint16") for _ in range(2)]
    paths = [write_tiff(tmp_path / f"f{i}.tif", f) for i, f in enumerate(frames)]
    exact = exact_int_mean(frames, "int32").astype(np.int64)
    report = avgstack.average_to_file(paths, tmp_path / "out.tif", dtype="uint8")
    assert report.clipped == int(np.count_nonzero(exact > 255))
    assert report.clipped > 0
    report = avgstack.average_to_file(paths, tmp_path / "out2.tif")
    assert report.clipped == 0


def test_weighted_clipped_samples_are_reported(tmp_path):
    a = write_tiff(tmp_path / "a.tif", np.full((3, 3), 200, np.uint8))
    report = avgstack.average_to_file([a, a], tmp_path / "out.tif", [1.0, 1.0])
    assert report.clipped == 9
    assert report.frames == 2 and report.shape == (3, 3, 1)
