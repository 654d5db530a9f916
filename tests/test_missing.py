"""Missing data: nodata values from tags and options, NaN as nodata, renormalized weights, min counts.

References are numpy masked arrays (``numpy.ma``) in float64, rounded half to
even for integer outputs; every method in ``avgstack.reducers.METHODS`` must
have one here (methods added later fail until they do).
"""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from fractions import Fraction

import numpy as np
import numpy.ma as ma
import pytest
import tifffile
from conftest import write_tiff

import avgstack
from avgstack.errors import IncompatibleInputsError, UsageError
from avgstack.reducers import CUBE, METHODS, ReduceSpec, reducer_class

NODATA = -9999


def gdal_tiff(path, data, nodata: str | None) -> str:
    tags = [] if nodata is None else [(42113, "s", 0, nodata, True)]
    return write_tiff(path, data, extratags=tags)


def nodata_tag(path) -> str | None:
    with tifffile.TiffFile(path) as tif:
        return tif.pages[0].tags.valueof(42113)


# -- the GIS case of the issue ----------------------------------------------------------


def test_nodata_from_the_tag_is_left_out_and_written(tmp_path):
    a = np.array([[NODATA, 10.0], [5.0, NODATA]], np.float32)
    b = np.array([[20.0, NODATA], [7.0, NODATA]], np.float32)
    paths = [gdal_tiff(tmp_path / "a.tif", a, "-9999"), gdal_tiff(tmp_path / "b.tif", b, "-9999")]
    report = avgstack.average_to_file(paths, tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.tolist() == [[20.0, 10.0], [6.0, NODATA]]
    assert nodata_tag(tmp_path / "out.tif") == "-9999"
    assert "nodata -9999" in report.notes


def test_nodata_none_averages_as_numbers_and_drops_the_tag(tmp_path):
    a = np.array([[NODATA, 10]], np.float32)
    b = np.array([[20, 30]], np.float32)
    paths = [gdal_tiff(tmp_path / "a.tif", a, "-9999"), gdal_tiff(tmp_path / "b.tif", b, "-9999")]
    avgstack.average_to_file(paths, tmp_path / "out.tif", nodata="none")
    assert tifffile.imread(tmp_path / "out.tif").tolist() == [[-4989.5, 20.0]]
    assert nodata_tag(tmp_path / "out.tif") is None


def test_nodata_option_wins_over_disagreeing_tags(tmp_path):
    a = np.array([[0, 3, 4]], np.int16)
    b = np.array([[8, -1, 6]], np.int16)
    paths = [gdal_tiff(tmp_path / "a.tif", a, "0"), gdal_tiff(tmp_path / "b.tif", b, "-1")]
    with pytest.raises(IncompatibleInputsError, match="nodata") as info:
        avgstack.average_to_file(paths, tmp_path / "out.tif")
    assert info.value.exit_code == 2
    assert not (tmp_path / "out.tif").exists()
    avgstack.average_to_file(paths, tmp_path / "out.tif", nodata=-1)
    assert tifffile.imread(tmp_path / "out.tif").tolist() == [[4, 3, 5]]
    assert nodata_tag(tmp_path / "out.tif") == "-1"


def test_untagged_input_takes_the_declared_value(tmp_path):
    a = np.array([[NODATA, 2]], np.int16)
    b = np.array([[6, NODATA]], np.int16)
    paths = [gdal_tiff(tmp_path / "a.tif", a, None), gdal_tiff(tmp_path / "b.tif", b, "-9999")]
    assert avgstack.average(paths).tolist() == [[6, 2]]


def test_nan_as_nodata_from_tag_and_option(tmp_path):
    a = np.array([[np.nan, 1.0, np.nan]], np.float32)
    b = np.array([[3.0, np.nan, np.nan]], np.float32)
    paths = [gdal_tiff(tmp_path / "a.tif", a, "nan"), gdal_tiff(tmp_path / "b.tif", b, "nan")]
    avgstack.average_to_file(paths, tmp_path / "out.tif")
    out = tifffile.imread(tmp_path / "out.tif")
    assert out[0, :2].tolist() == [3.0, 1.0] and np.isnan(out[0, 2])
    assert nodata_tag(tmp_path / "out.tif") == "nan"
    # arrays have no tag: the option does it; without it NaN propagates as IEEE arithmetic does
    got = avgstack.average([a, b], nodata="nan")
    assert got[0, :2].tolist() == [3.0, 1.0] and np.isnan(got[0, 2])
    assert np.isnan(avgstack.average([a, b])).all()


def test_all_missing_pixels_get_nodata_and_k_copies_hold(tmp_path, rng):
    frame = rng.integers(-100, 100, (20, 30, 3)).astype(np.int16)
    frame[3:7, 4:9] = NODATA
    path = write_tiff(tmp_path / "a.tif", frame, photometric="rgb", extratags=[(42113, "s", 0, "-9999", True)])
    avgstack.average_to_file([path] * 4, tmp_path / "out.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "out.tif"), frame)


def test_nodata_that_the_output_cannot_hold_is_refused(tmp_path):
    a = np.zeros((2, 2), np.uint8)
    with pytest.raises(UsageError, match="nodata"):
        avgstack.average([a, a], nodata=-9999)
    with pytest.raises(UsageError, match="min_count"):
        avgstack.average([a, a], min_count=2)
    with pytest.raises(UsageError, match="renormalize"):
        avgstack.average([a, a], nodata=0, renormalize=True)
    with pytest.raises(UsageError, match="nodata"):
        avgstack.average([a, a], nodata="lots")


def test_renormalize_keeps_the_level_of_a_weighted_mean():
    # weights summing to 1: where b is missing, a alone carries the level
    a = np.array([[10.0, 10.0, NODATA]], np.float32)
    b = np.array([[20.0, NODATA, NODATA]], np.float32)
    plain = avgstack.average([a, b], [0.25, 0.75], nodata=NODATA)
    assert plain.tolist() == [[17.5, 2.5, NODATA]]
    scaled = avgstack.average([a, b], [0.25, 0.75], nodata=NODATA, renormalize=True)
    assert scaled.tolist() == [[17.5, 10.0, NODATA]]
    # valid weights summing to zero at a sample: nodata there
    c = np.array([[1.0, 2.0, 3.0]], np.float32)
    zero = avgstack.average([a, b, c], [1.0, 1.0, -1.0], nodata=NODATA, renormalize=True)
    assert zero.tolist() == [[29.0, NODATA, 3.0]]  # -1 * 3 scaled by sum(w) / sum(valid w) = 1 / -1


def test_cli_nodata_and_disagreeing_tags(tmp_path):
    from conftest import PACKAGE_ROOT

    a = np.array([[NODATA, 4]], np.int16)
    b = np.array([[8, -1]], np.int16)
    paths = [gdal_tiff(tmp_path / "a.tif", a, "-9999"), gdal_tiff(tmp_path / "b.tif", b, "-1")]
    env = {"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "avgstack", "-o", str(tmp_path / "out.tif"), *paths]
    proc = subprocess.run(run, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("avgstack: error:") and "--nodata" in lines[0]
    proc = subprocess.run([*run, "--nodata", "-9999", "--min-count", "1"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tifffile.imread(tmp_path / "out.tif").tolist() == [[8, 2]]


# -- every method against a masked-array reference ---------------------------------------


def _masked(frames, nodata):
    stack = np.stack([f.astype(np.float64) for f in frames])
    invalid = np.isnan(stack) if np.isnan(nodata) else stack == nodata
    return ma.masked_array(np.where(invalid, 0.0, stack), mask=invalid)


def _ref_mean(m, weights, renormalize):
    return m.mean(axis=0)


def _ref_weighted(m, weights, renormalize):
    w = np.asarray(weights, np.float64)[:, None, None, None]
    total = (m * w).sum(axis=0)
    if renormalize:
        valid_w = (w * ~m.mask).sum(axis=0)
        total = ma.masked_where(valid_w == 0, total * (w.sum() / np.where(valid_w == 0, 1, valid_w)))
    return total


def _ref_percentile(m, weights, renormalize):
    # numpy's linear method over each sample's valid values (NaN stands for the masked ones)
    filled = m.filled(np.nan)
    empty = ma.getmaskarray(m).all(axis=0)
    filled[:, empty] = 0.0
    return ma.masked_where(empty, np.nanpercentile(filled, 30, axis=0))


def _ref_sigma_clip(m, weights, renormalize):
    from astropy.stats import sigma_clip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clipped = sigma_clip(m, sigma_lower=1.2, sigma_upper=1.2, maxiters=5, cenfunc="median", stdfunc="std",
                             axis=0, masked=True)
    kept = (~ma.getmaskarray(clipped)).sum(axis=0)
    return clipped.mean(axis=0), kept


def _ref_minmax(m, weights, renormalize):
    ordered = ma.sort(m, axis=0, endwith=True)  # masked values last
    valid = (~ma.getmaskarray(m)).sum(axis=0)
    index = np.arange(len(m))[:, None, None, None]
    drop = (index < 1) | (index >= valid - 1) | ma.getmaskarray(ordered)
    return ma.masked_array(ordered.data, mask=drop).mean(axis=0), np.maximum(valid - 2, 0)


#: Method -> (spec params, reference over a masked (N, rows, width, samples) float64 array). A reference
#: returns the masked result, or (masked result, frames kept per sample) for methods that reject frames.
REFERENCES = {
    "mean": ({}, _ref_mean),
    "weighted": ({}, _ref_weighted),
    "sum": ({}, lambda m, w, r: m.sum(axis=0)),
    "min": ({}, lambda m, w, r: m.min(axis=0)),
    "max": ({}, lambda m, w, r: m.max(axis=0)),
    "median": ({}, lambda m, w, r: ma.median(m, axis=0)),
    "percentile": ({"percentile": 30}, _ref_percentile),
    # ddof counts against each sample's own number of valid frames: fewer than ddof + 1 gives nodata
    "std": ({"ddof": 1}, lambda m, w, r: m.std(axis=0, ddof=1)),
    "var": ({}, lambda m, w, r: m.var(axis=0)),
    "sigma-clip": ({"sigma_low": 1.2, "sigma_high": 1.2, "max_iters": 5}, _ref_sigma_clip),
    "minmax": ({"nlow": 1, "nhigh": 1}, _ref_minmax),
}


def run_reducer(method, frames, *, weights=None, nodata, band_rows, min_count=1, renormalize=False, params=()):
    """Drive the reducer of ``method`` through the contract band by band; return (result, counts)."""
    n = len(frames)
    dtype = frames[0].dtype
    spec = ReduceSpec(
        method, n, dtype, dtype, tuple(weights) if weights is not None else None,
        params=tuple(sorted({"nodata": nodata, "min_count": min_count, "renormalize": renormalize,
                             "counts": True, **dict(params)}.items())),
    )
    cls = reducer_class(spec)
    rows, width, samples = frames[0].shape
    reducer = cls(spec, (band_rows, width, samples))
    out = np.empty(frames[0].shape, dtype)
    counts = np.empty(frames[0].shape, np.int64)
    for top in range(0, rows, band_rows):
        h = min(band_rows, rows - top)
        reducer.reset(h)
        if cls.kind == CUBE:
            cube = np.stack([f[top : top + h] for f in frames])
            reducer.reduce(cube, out[top : top + h])
        else:
            for i, f in enumerate(frames):
                reducer.add(f[top : top + h].copy(), i)  # a copy: invalid samples may be overwritten
            reducer.finish(out[top : top + h])
        counts[top : top + h] = reducer.counts()
    return out, counts


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("dtype,nodata", [("int16", NODATA), ("float32", NODATA), ("float64", np.nan)])
@pytest.mark.parametrize("min_count", [1, 3])
def test_every_method_against_masked_reference(rng, method, dtype, nodata, min_count):
    if method not in REFERENCES:
        pytest.fail(f"no masked-array reference for method {method!r}: add one to REFERENCES")
    params, reference = REFERENCES[method]
    n = 5
    frames = []
    for _ in range(n):
        f = rng.integers(-1000, 1000, (9, 7, 2)).astype(dtype)
        f[rng.random(f.shape) < 0.35] = nodata
        frames.append(f)
    for f in frames:
        f[0, 0] = nodata  # a pixel missing everywhere
    weights = rng.uniform(-1, 1, n) if method == "weighted" else None
    for renormalize in ([False, True] if method == "weighted" else [False]):
        out, counts = run_reducer(method, frames, weights=weights, nodata=nodata, band_rows=4,
                                  min_count=min_count, renormalize=renormalize, params=params)
        m = _masked(frames, nodata)
        valid = (~m.mask).sum(axis=0)
        ref = reference(m, weights, renormalize)
        if isinstance(ref, tuple):  # counts of the frames kept after rejection
            ref, valid = ref
        assert np.array_equal(counts, valid)
        expected = ref.filled(np.nan)
        short = (valid < min_count) | ma.getmaskarray(ref)
        got = out.astype(np.float64)
        if np.isnan(nodata):
            assert np.isnan(got[short]).all()
        else:
            assert (got[short] == nodata).all()
        keep = ~short
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)  # integer outputs saturate (variances of int16 do)
            assert np.array_equal(got[keep], np.clip(np.rint(expected[keep]), info.min, info.max))
        else:
            tol = 1e-6 if dtype == "float32" else 1e-12
            np.testing.assert_allclose(got[keep], expected[keep], rtol=tol, atol=tol * 1000)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_valid_nan_propagates_and_nodata_is_left_out_in_every_method(method):
    """A NaN that is not the nodata value is data: it propagates, whichever frames are missing."""
    params, _ = REFERENCES[method]
    frames = [np.array([[[1.0], [2.0], [4.0]]], np.float32) + i for i in range(6)]
    frames[1][0, 0, 0] = np.nan  # column 0: a valid NaN beside a missing frame
    frames[2][0, 0, 0] = NODATA
    frames[3][0, 1, 0] = NODATA  # column 1: a missing frame, no NaN
    weights = [1.0] * 6 if method == "weighted" else None
    out, counts = run_reducer(method, frames, weights=weights, nodata=NODATA, band_rows=1, params=params)
    assert np.isnan(out[0, 0, 0])
    assert np.isfinite(out[0, 1:, 0]).all() and (out[0, 1:, 0] != NODATA).all()
    assert counts[0, 1, 0] <= 5 and counts[0, 2, 0] <= 6


@pytest.mark.parametrize("method", ["std", "var"])
def test_std_var_with_no_more_valid_frames_than_ddof_give_nodata(method):
    frames = [np.array([[[1.0, 5.0, 2.0]]]), np.array([[[3.0, np.nan, np.nan]]]), np.array([[[6.0, np.nan, 4.0]]])]
    out, counts = run_reducer(method, frames, nodata=np.nan, band_rows=1, params={"ddof": 1})
    assert counts[0, 0].tolist() == [3, 1, 2]
    # the exact values 19/3 and 2 (std: their roots), correctly rounded (numpy's own float64 var is 1 ulp above 19/3)
    exact = [Fraction(19, 3), Fraction(2)]
    want = [math.sqrt(v) if method == "std" else float(v) for v in exact]
    assert [out[0, 0, 0], out[0, 0, 2]] == want
    spread = getattr(np, method)
    np.testing.assert_allclose(out[0, 0, [0, 2]], [spread([1.0, 3.0, 6.0], ddof=1), spread([2.0, 4.0], ddof=1)],
                               rtol=1e-15)
    assert np.isnan(out[0, 0, 1])  # one frame, ddof 1: nodata (NaN here)
    numbered = [np.where(np.isnan(f), 5.0, f).astype(np.float32) for f in frames]  # nodata 5 instead of NaN
    out, _ = run_reducer(method, numbered, nodata=5.0, band_rows=1, params={"ddof": 2})
    assert out[0, 0, 1] == 5.0 and out[0, 0, 2] == 5.0 and np.isfinite(out[0, 0, 0])
