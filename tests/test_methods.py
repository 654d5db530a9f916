"""Every method against numpy (and astropy's sigma_clip), on random small stacks with ties.

References are computed here, independently of avgstack: numpy's own
functions on the stack converted to float64 (the stored values, exactly),
exact rationals (fractions) for means of survivors and for variances, and
``astropy.stats.sigma_clip`` for the clipping decisions.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from conftest import correctly_rounded, round_half_even
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgstack

DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]
SHAPE = (3, 5)  # rows, cols of each tiny frame

settings.register_profile("methods", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def stacks(draw, dtypes=DTYPES, min_frames=1, max_frames=12):
    """``(frames, dtype)``: N frames, gray or 4-channel, values from a small set so that ties abound."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    n = draw(st.integers(min_frames, max_frames))
    samples = draw(st.sampled_from([1, 4]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (n, *SHAPE) + ((samples,) if samples > 1 else ())
    if dtype.kind == "f":
        pool = np.concatenate([rng.standard_normal(6) * 10.0 ** rng.integers(-3, 4), [0.0, -0.0, 1.5]])
    else:
        info = np.iinfo(dtype)
        pool = rng.integers(info.min, info.max, 6, endpoint=True)
        pool = np.concatenate([pool, [info.min, info.max], pool[:2] + 1])
        pool = np.clip(pool, info.min, info.max)
    spread = draw(st.sampled_from(["ties", "wide"]))
    if spread == "ties":
        cube = rng.choice(pool, shape).astype(dtype)
    elif dtype.kind == "f":
        cube = (rng.standard_normal(shape) * 1000).astype(dtype)
    else:
        info = np.iinfo(dtype)
        cube = rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    return [cube[i] for i in range(n)], dtype


def as_out(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A float64 reference into the output type: integers rounded half to even (np.rint) and saturated."""
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def cube64(frames) -> np.ndarray:
    return np.stack(frames).astype(np.float64)


def exact_mean_of(values, dtype):
    """Exact mean of some stored values, rounded into ``dtype`` like avgstack's mean."""
    total = sum((Fraction(float(v)) for v in values), Fraction(0))
    mean = total / len(values)
    if dtype.kind in "ui":
        return round_half_even(mean)
    return correctly_rounded(mean, dtype)


def assert_equal(result, expected):
    assert result.dtype == expected.dtype, (result.dtype, expected.dtype)
    bad = ~((result == expected) | (np.isnan(result) & np.isnan(expected)) if result.dtype.kind == "f"
            else (result == expected))
    assert not bad.any(), f"{bad.sum()} differ: got {result[bad][:5]}, expected {expected[bad][:5]}"


# -- order statistics and extrema -------------------------------------------------------


@settings(settings.get_profile("methods"))
@given(stacks())
def test_min_max_median_against_numpy(stack):
    frames, dtype = stack
    cube = cube64(frames)
    assert_equal(avgstack.average(frames, method="min"), np.min(np.stack(frames), axis=0))
    assert_equal(avgstack.average(frames, method="max"), np.max(np.stack(frames), axis=0))
    assert_equal(avgstack.average(frames, method="median"), as_out(np.median(cube, axis=0), dtype))


@settings(settings.get_profile("methods"))
@given(stacks(), st.one_of(st.sampled_from([0.0, 25.0, 50.0, 100.0]), st.floats(0, 100)))
def test_percentile_against_numpy_linear(stack, p):
    frames, dtype = stack
    cube = cube64(frames)
    expected = np.percentile(cube, p, axis=0)
    # equal neighbours give their value (numpy's lerp turns -0.0 into 0.0 there)
    ordered = np.sort(cube, axis=0)
    v = (len(frames) - 1) * (p / 100)
    lo = math.floor(v)
    hi = min(lo + 1, len(frames) - 1)
    same = ordered[lo] == ordered[hi]
    expected[same] = ordered[lo][same]
    assert_equal(avgstack.average(frames, method="percentile", percentile=p), as_out(expected, dtype))


@settings(settings.get_profile("methods"))
@given(stacks(dtypes=["uint8", "uint16", "int16"]))
def test_integer_sum_is_exact_and_saturates(stack):
    frames, dtype = stack
    exact = np.stack(frames).astype(np.int64).sum(axis=0)
    info = np.iinfo(dtype)
    report_clipped = int(np.count_nonzero((exact < info.min) | (exact > info.max)))
    result = avgstack.average(frames, method="sum")
    assert_equal(result, np.clip(exact, info.min, info.max).astype(dtype))
    wide = avgstack.average(frames, method="sum", dtype="int32")
    assert_equal(wide, exact.astype(np.int32))
    assert report_clipped == 0 or not np.array_equal(result, exact)


def test_sum_counts_saturated_samples(tmp_path):
    frames = [np.full((4, 4), 200, np.uint8), np.full((4, 4), 100, np.uint8)]
    frames[1][0, 0] = 0
    report = avgstack.average_to_file(frames, tmp_path / "sum.tif", method="sum")
    assert report.clipped == 15


@settings(settings.get_profile("methods"))
@given(stacks(dtypes=["float32", "float64"]))
def test_float_sum_within_one_unit_of_exact(stack):
    frames, dtype = stack
    flat = [f.ravel() for f in frames]
    exact = np.array([correctly_rounded(sum((Fraction(float(f[i])) for f in flat), Fraction(0)), dtype)
                      for i in range(flat[0].size)], dtype).reshape(frames[0].shape)
    result = avgstack.average(frames, method="sum")
    assert result.dtype == dtype
    assert np.all(np.abs(result.astype(np.float64) - exact) <= np.spacing(np.abs(exact).astype(dtype)))


# -- moments --------------------------------------------------------------------------------


def exact_var(values, ddof) -> Fraction:
    xs = [Fraction(float(v)) for v in values]
    mean = sum(xs, Fraction(0)) / len(xs)
    return sum(((x - mean) ** 2 for x in xs), Fraction(0)) / (len(xs) - ddof)


@settings(settings.get_profile("methods"))
@given(stacks(min_frames=2), st.sampled_from(["std", "var"]), st.sampled_from([0, 1]))
def test_std_var_against_exact_reference(stack, method, ddof):
    frames, dtype = stack
    result = avgstack.average(frames, method=method, ddof=ddof)
    expected_dtype = np.float32 if dtype.kind in "ui" and dtype.itemsize <= 2 else np.float64
    assert result.dtype == expected_dtype
    cube = np.stack(frames).reshape(len(frames), -1)
    got = result.reshape(-1)
    np_ref = getattr(np, method)(cube.astype(np.float64), axis=0, ddof=ddof)
    for i in range(cube.shape[1]):
        var = exact_var(cube[:, i], ddof)
        exact = math.sqrt(var) if method == "std" else float(var)  # float64, within 1 ulp of exact
        if expected_dtype == np.float32:
            assert abs(float(got[i]) - exact) <= float(np.spacing(np.float32(exact))) * 1.0, (got[i], exact)
        else:
            assert abs(float(got[i]) - exact) <= 1e-12 * abs(exact) + 1e-300, (got[i], exact, np_ref[i])


# -- rejection --------------------------------------------------------------------------------


def astropy_survivors(cube: np.ndarray, low: float, high: float, iters: int) -> np.ndarray:
    from astropy.stats import sigma_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(cube, sigma_lower=low, sigma_upper=high, maxiters=iters, cenfunc="median",
                             stdfunc="std", axis=0, masked=True)
    return ~np.ma.getmaskarray(clipped)


@settings(settings.get_profile("methods"))
@given(stacks(max_frames=40), st.sampled_from([(3.0, 3.0, 5), (2.0, 1.5, 5), (1.5, 2.5, 1), (1.2, 1.2, 10)]))
def test_sigma_clip_against_astropy(stack, bounds):
    pytest.importorskip("astropy")
    frames, dtype = stack
    low, high, iters = bounds
    cube = cube64(frames)
    keep = astropy_survivors(cube, low, high, iters)
    result = avgstack.average(frames, method="sigma-clip", sigma_low=low, sigma_high=high, max_iters=iters)
    flat_cube = cube.reshape(len(frames), -1)
    flat_keep = keep.reshape(len(frames), -1)
    expected = np.array([exact_mean_of(flat_cube[flat_keep[:, i], i], dtype) for i in range(flat_cube.shape[1])],
                        dtype).reshape(frames[0].shape)
    assert_equal(result, expected)


def test_sigma_clip_keeps_values_exactly_on_a_bound():
    # median 5, standard deviation 5: with sigma 1 the bounds are 0 and 10, which stay
    frames = [np.full((2, 2), v, np.uint8) for v in (0, 0, 10, 10)]
    assert (avgstack.average(frames, method="sigma-clip", sigma_low=1, sigma_high=1) == 5).all()
    # just inside 1 sigma, every value is rejected: NaN in float outputs, 0 (clipped) in integers
    out = avgstack.average(frames, method="sigma-clip", sigma_low=0.99, sigma_high=0.99, dtype="float32")
    assert np.isnan(out).all()


def test_sigma_clip_rejects_an_outlier_and_iterates():
    values = [10, 11, 9, 10, 12, 10, 250, 11, 9, 10, 60]
    frames = [np.full((1, 3), v, np.uint16) for v in values]
    keep = astropy_survivors(np.array(values, np.float64), 3, 3, 5)
    expected = exact_mean_of(np.array(values)[keep], np.dtype(np.uint16))
    assert 60 not in np.array(values)[keep] and expected == 10
    assert (avgstack.average(frames, method="sigma-clip") == expected).all()
    one = astropy_survivors(np.array(values, np.float64), 3, 3, 1)
    assert (avgstack.average(frames, method="sigma-clip", max_iters=1)
            == exact_mean_of(np.array(values)[one], np.dtype(np.uint16))).all()


@settings(settings.get_profile("methods"))
@given(stacks(min_frames=3), st.sampled_from([(1, 1), (0, 2), (2, 0), (1, 0)]))
def test_minmax_against_sorted_reference(stack, drop):
    frames, dtype = stack
    nlow, nhigh = drop
    n = len(frames)
    if nlow + nhigh >= n:
        with pytest.raises(avgstack.UsageError):
            avgstack.average(frames, method="minmax", nlow=nlow, nhigh=nhigh)
        return
    ordered = np.sort(cube64(frames).reshape(n, -1), axis=0)[nlow : n - nhigh]
    expected = np.array([exact_mean_of(ordered[:, i], dtype) for i in range(ordered.shape[1])], dtype)
    result = avgstack.average(frames, method="minmax", nlow=nlow, nhigh=nhigh)
    assert_equal(result, expected.reshape(frames[0].shape))


@settings(settings.get_profile("methods"))
@given(stacks(min_frames=3, dtypes=["uint8", "int16", "float32"]), st.sampled_from(["minmax", "sigma-clip"]))
def test_weighted_rejection_normalises_weights_over_survivors(stack, method):
    frames, dtype = stack
    n = len(frames)
    weights = list(np.linspace(0.5, 2.0, n))
    cube = cube64(frames).reshape(n, -1)
    if method == "minmax":
        order = np.argsort(cube, axis=0, kind="stable")  # equal values: the earlier frame ranks lower
        ranks = np.argsort(order, axis=0)
        keep = (ranks >= 1) & (ranks < n - 1)
        params = {}
    else:
        keep = astropy_survivors(cube, 2.0, 2.0, 5)
        params = {"sigma_low": 2.0, "sigma_high": 2.0}
    w = np.asarray(weights)[:, None]
    expected = (np.where(keep, w * cube, 0).sum(0) / np.where(keep, w, 0).sum(0)).reshape(frames[0].shape)
    result = avgstack.average(frames, weights, method=method, **params)
    ref = as_out(expected, dtype)
    if dtype.kind == "f":
        np.testing.assert_allclose(result, ref, rtol=1e-6, atol=1e-6)
    else:  # float64 sums in another order: a half may round either way
        assert np.abs(result.astype(np.int64) - ref.astype(np.int64)).max() <= 1


def test_weighted_minmax_ranks_equal_values_by_frame_order():
    # all three values equal: the first frame is the lowest and the last the highest, both dropped
    frames = [np.full((1, 1), 5, np.uint8)] * 3
    out = avgstack.average(frames, [100.0, 1.0, 100.0], method="minmax", dtype="float64")
    assert out[0, 0] == 5.0
    frames = [np.array([[1.0]]), np.array([[1.0]]), np.array([[7.0]]), np.array([[1.0]])]
    # sorted by value then frame: 1 (f0), 1 (f1), 1 (f3), 7 (f2); dropping one each end keeps f1 and f3
    out = avgstack.average(frames, [1.0, 2.0, 4.0, 8.0], method="minmax")
    assert out[0, 0] == 1.0


# -- NaN propagates ----------------------------------------------------------------------------


@pytest.mark.parametrize("method, params", [
    ("min", {}), ("max", {}), ("sum", {}), ("median", {}), ("percentile", {"percentile": 30}), ("std", {}),
    ("var", {}), ("sigma-clip", {}), ("minmax", {}),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_propagates_in_every_method(rng, method, params, dtype):
    frames = [rng.standard_normal((4, 6)).astype(dtype) for _ in range(5)]
    frames[2][1, 3] = np.nan
    frames[4][0, 0] = np.nan
    out = avgstack.average(frames, method=method, **params)
    nan = np.isnan(out)
    assert nan[1, 3] and nan[0, 0] and nan.sum() == 2


# -- usage -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, words", [
    ({"method": "mode"}, "unknown method"),
    ({"method": "percentile"}, "needs percentile (--percentile"),
    ({"method": "percentile", "percentile": -1}, "from 0 to 100"),
    ({"method": "median", "percentile": 50}, "applies only to method percentile"),
    ({"method": "sigma-clip", "max_iters": 0}, "max_iters (--max-iters) must be at least 1"),
    ({"method": "sigma-clip", "sigma_low": float("nan")}, "sigma_low (--sigma-low)"),
    ({"method": "minmax", "nlow": 1.5}, "nlow (--nlow) must be a whole number"),
    ({"method": "std", "ddof": 3}, "ddof (--ddof) must be smaller than the number of inputs (3)"),
    ({"method": "minmax", "nlow": 2, "nhigh": 1}, "leaves nothing of 3 input(s)"),
    ({"method": "median", "weights": [1, 2, 3]}, "method median takes no weights"),
])
def test_bad_method_options_are_usage_errors(kwargs, words):
    frames = [np.zeros((2, 2), np.uint8)] * 3
    with pytest.raises(avgstack.UsageError, match=None) as err:
        avgstack.average(frames, **kwargs)
    assert words in str(err.value)


# -- K copies of a file give that file back, for every method and layout ------------------------

from test_roundtrip import DTYPES as ALL_DTYPES
from test_roundtrip import LAYOUTS, STORAGES, layout_kwargs, make_image, write_layout

METHOD_PARAMS = {
    "min": {}, "max": {}, "median": {}, "percentile": {"percentile": 37.5}, "sigma-clip": {}, "minmax": {},
    "std": {}, "var": {},
}


def check_copies(tmp_path, image, kwargs, method, copies=3):
    from conftest import assert_same_bits, read_tiff

    src = write_layout(tmp_path / "in.tif", image, **kwargs)
    out = tmp_path / "out.tif"
    report = avgstack.average_to_file([src] * copies, out, method=method, **METHOD_PARAMS[method])
    result = read_tiff(out)
    assert report.method.startswith(method)
    if method in ("std", "var"):
        # zeros (numpy's own float64 mean of copies is not exact, so np.std of them is not always 0),
        # in float32 for small integers and float64 otherwise; NaN for infinities, as numpy gives
        out_dtype = np.float32 if image.dtype.kind in "ui" and image.dtype.itemsize <= 2 else np.float64
        finite = np.isfinite(image) if image.dtype.kind == "f" else np.ones(image.shape, bool)
        expected = np.where(finite, 0.0, np.nan).astype(out_dtype)
        assert result.dtype == expected.dtype
        assert np.array_equal(result, expected, equal_nan=True)
        assert not np.signbit(result[~np.isnan(result)]).any()
    else:
        assert_same_bits(result, image)
    assert report.clipped == 0


@pytest.mark.parametrize("method", list(METHOD_PARAMS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_copies_round_trip_every_method_dtype_and_layout(tmp_path, rng, method, dtype, layout):
    samples = LAYOUTS[layout][0]
    image = make_image(rng, dtype, samples)
    check_copies(tmp_path, image, layout_kwargs(layout, samples, {}, dtype), method)


@pytest.mark.parametrize("storage", list(STORAGES))
@pytest.mark.parametrize("method, dtype, layout", [
    ("median", "uint8", "rgba-unassociated"), ("sigma-clip", "float32", "gray+alpha"),
    ("minmax", "uint16", "rgb"), ("percentile", "float64", "gray"), ("std", "int16", "rgba-associated"),
])
def test_copies_round_trip_every_method_and_storage(tmp_path, rng, storage, method, dtype, layout):
    samples = LAYOUTS[layout][0]
    image = make_image(rng, dtype, samples)
    check_copies(tmp_path, image, layout_kwargs(layout, samples, STORAGES[storage], dtype), method)


@pytest.mark.parametrize("count", [65, 130])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_many_frames_take_the_large_n_algorithms(rng, count, dtype):
    """Above the sorting networks' range: counting (8-bit) and numpy's selection along rows."""
    dtype = np.dtype(dtype)
    frames = [(rng.integers(0, 40, (3, 5, 4)) * (3 if dtype.kind == "f" else 1)).astype(dtype) for _ in range(count)]
    cube = cube64(frames)
    assert_equal(avgstack.average(frames, method="median"), as_out(np.median(cube, axis=0), dtype))
    assert_equal(avgstack.average(frames, method="percentile", percentile=12.5),
                 as_out(np.percentile(cube, 12.5, axis=0), dtype))
    ordered = np.sort(cube.reshape(count, -1), axis=0)[3 : count - 2]
    expected = np.array([exact_mean_of(ordered[:, i], dtype) for i in range(ordered.shape[1])], dtype)
    assert_equal(avgstack.average(frames, method="minmax", nlow=3, nhigh=2), expected.reshape(frames[0].shape))
    keep = astropy_survivors(cube, 1.5, 1.5, 5).reshape(count, -1)
    flat = cube.reshape(count, -1)
    expected = np.array([exact_mean_of(flat[keep[:, i], i], dtype) for i in range(flat.shape[1])], dtype)
    result = avgstack.average(frames, method="sigma-clip", sigma_low=1.5, sigma_high=1.5)
    assert_equal(result, expected.reshape(frames[0].shape))


def test_sigma_clip_final_bounds_bring_back_values_dropped_early():
    """astropy keeps every value within the last bounds: the 33s, dropped by the third bounds, return."""
    column = [0, 0, 1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 6, 6, 7, 7, 9, 10, 10, 11, 11, 11, 12, 12, 13, 14, 14, 14, 16,
              17, 17, 18, 19, 20, 21, 22, 23, 23, 24, 24, 24, 24, 25, 26, 26, 26, 27, 28, 28, 28, 28, 29, 30, 31, 32,
              32, 32, 33, 33, 34, 36, 36, 37, 37]
    values = np.array(column, np.float64)
    keep = astropy_survivors(values, 1.5, 1.5, 5)
    assert (values[keep] == 33).sum() == 2
    frames = [np.full((1, 2), v, np.uint8) for v in column]
    result = avgstack.average(frames, method="sigma-clip", sigma_low=1.5, sigma_high=1.5, dtype="float64")
    assert result[0, 0] == correctly_rounded(Fraction(int(values[keep].sum()), int(keep.sum())), np.float64)


@pytest.mark.parametrize("method", list(METHOD_PARAMS))
@pytest.mark.parametrize("exponents", [(997, 1020), (1020, 1024)], ids=["sum-fits", "sum-overflows"])
def test_float64_extremes_round_trip_every_method(tmp_path, rng, method, exponents):
    """Copies of float64 values up to the largest finite one: every method gives them back (std/var: 0)."""
    n = 11 * 13
    image = np.ldexp(rng.uniform(1.0, 2.0, n), rng.integers(*exponents, n))
    image[~np.isfinite(image)] = np.finfo(np.float64).max
    image = np.where(rng.random(n) < 0.5, -image, image).reshape(11, 13)
    check_copies(tmp_path, image, {"photometric": "minisblack"}, method)


# -- CIELab ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_cielab_sum_is_signed_and_std_is_refused(tmp_path, rng, dtype):
    from conftest import read_tiff, write_tiff
    from test_kinds import lab_frame, signed_lab

    frames = [lab_frame(rng, dtype) for _ in range(3)]
    frames[0][2, 2, 1:], frames[1][2, 2, 1:], frames[2][2, 2, 1:] = 3, 4, 0  # small positive a*/b*: no saturation
    paths = [write_tiff(tmp_path / f"l{i}.tif", f, photometric="cielab") for i, f in enumerate(frames)]
    avgstack.average_to_file(paths, tmp_path / "sum.tif", method="sum")
    out = signed_lab(read_tiff(tmp_path / "sum.tif"))
    bits = np.dtype(dtype).itemsize * 8
    exact = sum(signed_lab(f) for f in frames)
    exact[..., 0] = np.clip(exact[..., 0], 0, 2**bits - 1)
    exact[..., 1:] = np.clip(exact[..., 1:], -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert np.array_equal(out, exact)
    assert out[2, 2, 1:].tolist() == [7, 7]
    for method in ("std", "var"):
        with pytest.raises(avgstack.UsageError, match="CIELab"):
            avgstack.average_to_file(paths, tmp_path / f"{method}.tif", method=method)
        assert not (tmp_path / f"{method}.tif").exists()


@pytest.mark.parametrize("dtype", ["uint16", "int16", "int32", "uint32", "float32", "float64"])
def test_std_var_of_many_frames_with_an_outlier_first_and_a_large_offset(dtype):
    """The streaming sums stay accurate where a naive S2 - S1**2/n cancels: 300 frames, large offset, tiny spread."""
    rng = np.random.default_rng(7)
    dtype = np.dtype(dtype)
    n = 300
    if dtype.kind == "f":
        base = np.float64(1e6 if dtype == np.float32 else 1e12)
        cube = (base + rng.integers(-3, 4, (n, 2, 3))).astype(dtype)
        cube[0, 0, 0] = -base  # the shift (first value) far from the rest
    else:
        info = np.iinfo(dtype)
        cube = rng.integers(info.max - 5, info.max, (n, 2, 3), endpoint=True).astype(dtype)
        cube[0, 0, 0] = info.min
    frames = list(cube)
    out32 = dtype.kind in "ui" and dtype.itemsize <= 2
    for method in ("std", "var"):
        got = avgstack.average(frames, method=method, ddof=1).reshape(-1)
        flat = cube.reshape(n, -1)
        for i in range(flat.shape[1]):
            var = exact_var(flat[:, i], 1)
            exact = math.sqrt(var) if method == "std" else float(var)
            if out32:
                assert abs(float(got[i]) - exact) <= float(np.spacing(np.float32(exact))), (i, got[i], exact)
            else:
                assert abs(float(got[i]) - exact) <= 1e-12 * abs(exact), (i, got[i], exact)
