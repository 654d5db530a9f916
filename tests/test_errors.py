"""Bad input and faults: one clear error line, a documented exit code, nothing lost.

Issue "Bad input and faults: clear errors, nothing lost". For every case:

- ``python -m avgstack`` prints exactly one line on stderr, ``avgstack: error: ...``,
  naming the file and the problem, and no traceback (unless ``--debug``);
- it exits 2 when the problem is found before processing, 1 during;
- it does not hang (every subprocess has a timeout);
- the previous output and every input are left byte for byte as they were, with
  their modification times, and no temporary file stays behind;
- through the API, the error is an :class:`avgstack.AvgstackError` of the
  specific subclass.

The tests run as root in CI. Root ignores file modes, so the permission tests
run the command line with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped from
its capability bounding set (:func:`faultfiles.drop_file_permission_override`);
they are skipped only where that is impossible.

Tests named ``test_issue_*`` pin bugs found while writing these tests and the
fuzzer (``test_fuzz.py``). Each failed on the code it was written against
(before commit 1b56ce1, "Fix bugs found by the test suites"); each docstring
gives the observed and expected behaviour and where the fix belongs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from faultfiles import (
    ERROR_PREFIX,
    Snapshot,
    check_cli_failure,
    chmod_restored,
    cli_env,
    corrupt_segment,
    deadline,
    fix_png_crcs,
    huge_declared_tiff,
    image,
    limit_file_size,
    patch_tags,
    permission_preexec,
    permissions_can_be_enforced,
    png_chunks,
    run_cli,
    run_cli_peak_rss,
    segment_spans,
    set_tag_entry,
    set_tag_value,
    tag_spots,
    temp_files,
    write_png,
    write_tiff,
)

import avgstack
from avgstack import (
    AvgstackError,
    IncompatibleInputsError,
    InputError,
    OutputError,
    ReadError,
    UsageError,
)

PREVIOUS = b"previous output: must survive every failure\n"
SHAPE = (24, 40, 3)


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(4242)


@pytest.fixture
def pair(tmp_path, rng):
    """Two valid RGB uint8 TIFFs, their pixels, and an output path holding a previous output."""
    a, b = image(rng, SHAPE), image(rng, SHAPE)
    pa = write_tiff(tmp_path / "a.tif", a)
    pb = write_tiff(tmp_path / "b.tif", b)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    return pa, pb, str(out), a, b


def mean_u8(*frames: np.ndarray) -> np.ndarray:
    """Exact mean of integer frames rounded half to even (np.rint rounds half to even)."""
    total = sum(f.astype(np.int64) for f in frames)
    return np.rint(total / len(frames)).astype(frames[0].dtype)


def expect_cli_failure(args, code, *names, inputs=(), out=None, contains=(), preexec_fn=None, timeout=60):
    """Run the CLI; check exit code, the one error line, untouched files and no temporary file."""
    watched = [*inputs] + ([out] if out else [])
    snapshot = Snapshot(watched)
    proc = run_cli(args, timeout=timeout, preexec_fn=preexec_fn)
    line = check_cli_failure(proc, code, *names, contains=contains)
    snapshot.assert_unchanged()
    if out:
        assert temp_files(os.path.dirname(os.path.abspath(out))) == []
    return line


def expect_api_error(call, cls, *names, files=()):
    """Call the API; check it raises ``cls`` (an AvgstackError) naming ``names``, files untouched."""
    snapshot = Snapshot(files)
    with pytest.raises(AvgstackError) as info:
        call()
    assert isinstance(info.value, cls), f"{type(info.value).__name__}: {info.value}"
    for name in names:
        assert name in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    snapshot.assert_unchanged()
    return info.value


_API_SNIPPET = """
import json, sys, avgstack
args = json.loads(sys.argv[1])
try:
    if args["out"]:
        avgstack.average_to_file(args["inputs"], args["out"])
    else:
        avgstack.average(args["inputs"])
    print(json.dumps({"ok": True}))
except avgstack.AvgstackError as err:
    print(json.dumps({"ok": False, "type": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__],
                      "exit_code": err.exit_code, "message": str(err)}))
"""


def run_api_subprocess(inputs, out=None, preexec_fn=None) -> dict:
    """Call the API in a child process (for faults that need process limits or privileges)."""
    proc = subprocess.run(
        [sys.executable, "-c", _API_SNIPPET, json.dumps({"inputs": [str(i) for i in inputs],
                                                          "out": str(out) if out else None})],
        capture_output=True, text=True, env=cli_env(), timeout=60, preexec_fn=preexec_fn, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


needs_permissions = pytest.mark.skipif(
    permissions_can_be_enforced() is not None, reason=str(permissions_can_be_enforced())
)


# -- inputs that are not images ---------------------------------------------------------------


def test_missing_input_exit_2(pair, tmp_path):
    pa, _, out, _, _ = pair
    missing = str(tmp_path / "nope.tif")
    expect_cli_failure(["-o", out, pa, missing], 2, missing, inputs=[pa], out=out, contains=["no such file"])
    expect_api_error(lambda: avgstack.average_to_file([pa, missing], out), InputError, missing, files=[pa, out])


def test_directory_input_exit_2(pair, tmp_path):
    pa, _, out, _, _ = pair
    folder = tmp_path / "frames.tif"
    folder.mkdir()
    expect_cli_failure(["-o", out, pa, folder], 2, str(folder), inputs=[pa], out=out, contains=["directory"])
    expect_api_error(lambda: avgstack.average([pa, str(folder)]), InputError, str(folder))


@needs_permissions
def test_unreadable_input_exit_2(pair, tmp_path):
    """chmod 000; as root the CLI runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    pa, pb, out, _, _ = pair
    with chmod_restored(pb, 0):
        expect_cli_failure(["-o", out, pa, pb], 2, pb, inputs=[pa], out=out,
                           contains=["permission denied"], preexec_fn=permission_preexec())
        result = run_api_subprocess([pa, pb], out, preexec_fn=permission_preexec())
    assert result["type"] == "InputError" and result["exit_code"] == 2 and pb in result["message"], result


def test_zero_byte_input_exit_2(pair, tmp_path):
    pa, _, out, _, _ = pair
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    expect_cli_failure(["-o", out, pa, empty], 2, str(empty), inputs=[pa, empty], out=out, contains=["empty"])
    expect_api_error(lambda: avgstack.average([str(empty)]), InputError, str(empty))


@pytest.mark.parametrize("size", [1, 3, 31, 5000])
def test_random_bytes_named_tif_exit_2(pair, tmp_path, size):
    pa, _, out, _, _ = pair
    junk = tmp_path / "junk.tif"
    data = np.random.default_rng(size).bytes(size)
    assert not data.startswith((b"II", b"MM"))
    junk.write_bytes(data)
    expect_cli_failure(["-o", out, pa, junk], 2, str(junk), inputs=[pa, junk], out=out)
    expect_api_error(lambda: avgstack.average([pa, str(junk)]), InputError, str(junk))


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/urandom"])
def test_special_files_are_refused_without_hanging(pair, tmp_path, kind):
    """A named pipe with no writer would block a plain open(); devices never end."""
    pa, _, out, _, _ = pair
    if kind == "fifo":
        special = str(tmp_path / "pipe.tif")
        os.mkfifo(special)
    else:
        special = kind
        if not os.path.exists(special):
            pytest.skip(f"no {kind}")
    expect_cli_failure(["-o", out, pa, special], 2, special, inputs=[pa], out=out, timeout=20)
    with deadline(20):
        expect_api_error(lambda: avgstack.average([pa, special]), InputError, special)


def test_lying_extensions_work_formats_are_sniffed(tmp_path, rng):
    """PNG bytes named .tif and TIFF bytes named .png are read by what they are."""
    a, b = image(rng, SHAPE), image(rng, SHAPE)
    png_as_tif = write_png(tmp_path / "really_png.tif", a)
    tif_as_png = write_tiff(tmp_path / "really_tiff.png", b)
    assert Path(png_as_tif).read_bytes()[:4] == b"\x89PNG"
    assert Path(tif_as_png).read_bytes()[:2] in (b"II", b"MM")
    for out in ("out.tif", "out.png"):
        target = tmp_path / out
        proc = run_cli(["-o", target, png_as_tif, tif_as_png])
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        got = tifffile.imread(target) if out.endswith(".tif") else cv2.imread(str(target), cv2.IMREAD_UNCHANGED)[..., ::-1]
        np.testing.assert_array_equal(got, mean_u8(a, b))
    got = avgstack.average([png_as_tif, tif_as_png])
    np.testing.assert_array_equal(got[..., ::-1], mean_u8(a, b))


# -- damaged TIFFs ------------------------------------------------------------------------------

LAYOUTS = {
    "striped": dict(rowsperstrip=5),
    "tiled_lzw": dict(tile=(16, 16), compression="lzw"),
    "planar": dict(planarconfig="separate", rowsperstrip=8),
    "bigtiff": dict(bigtiff=True, rowsperstrip=4),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("where", [0.5, 0.99])
def test_truncated_inside_pixel_data_exit_2(pair, tmp_path, rng, layout, where):
    pa, _, out, _, _ = pair
    full = write_tiff(tmp_path / "full.tif", image(rng, SHAPE), **LAYOUTS[layout])
    spans = segment_spans(full)
    first, end = spans[0][0], max(o + n for o, n in spans)
    cut = first + int((end - first) * where)
    assert first < cut < end
    bad = tmp_path / "cut.tif"
    bad.write_bytes(Path(full).read_bytes()[:cut])
    expect_cli_failure(["-o", out, pa, bad], 2, str(bad), inputs=[pa, bad], out=out, contains=["truncated"])
    expect_api_error(lambda: avgstack.average([pa, str(bad)]), InputError, str(bad))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("cut", [4, 9, 30, "values"])
def test_truncated_inside_header_exit_2(pair, tmp_path, rng, layout, cut):
    pa, _, out, _, _ = pair
    full = write_tiff(tmp_path / "full.tif", image(rng, SHAPE), **LAYOUTS[layout])
    if cut == "values":  # inside the tag values stored out of line (offset arrays, resolution)
        spots = tag_spots(full)
        cut = max(s.value for s in spots.values()) + 2
    assert cut < segment_spans(full)[0][0]
    bad = tmp_path / "hdr.tif"
    bad.write_bytes(Path(full).read_bytes()[:cut])
    expect_cli_failure(["-o", out, pa, bad], 2, str(bad), inputs=[pa, bad], out=out)
    expect_api_error(lambda: avgstack.average([pa, str(bad)]), InputError, str(bad))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(tile=(16, 16), compression="lzw"),
        dict(tile=(16, 16), compression="zlib"),
        dict(tile=(16, 16), compression="zlib", predictor=True),
        dict(rowsperstrip=4, compression="lzw"),
        dict(rowsperstrip=4, compression="zlib"),
        dict(tile=(16, 16), compression="zstd", bigtiff=True),
    ],
    ids=["tiled-lzw", "tiled-deflate", "tiled-deflate-predictor", "striped-lzw", "striped-deflate", "bigtiff-zstd"],
)
@pytest.mark.parametrize("fill", [0xAB, 0x00])
def test_corrupt_compressed_segment_exit_1(pair, tmp_path, rng, kwargs, fill):
    pa, _, out, _, _ = pair
    good = write_tiff(tmp_path / "good.tif", image(rng, SHAPE), **kwargs)
    bad = corrupt_segment(good, tmp_path / "bad.tif", 3, fill)
    line = expect_cli_failure(["-o", out, pa, bad], 1, str(bad), inputs=[pa, bad], out=out, contains=["corrupt"])
    assert "strip/tile 3" in line
    expect_api_error(lambda: avgstack.average_to_file([pa, bad], out), ReadError, str(bad), files=[pa, bad, out])


HUGE_KINDS = ["strip", "deflate", "tile", "bigtile"]


@pytest.mark.parametrize("kind", HUGE_KINDS + ["strips"])
def test_huge_declared_size_fails_fast_without_allocating(tmp_path, kind):
    """200000x200000 declared over a few bytes: exit 2 in < 5 s with a small peak RSS."""
    if kind == "strips":  # one strip per row declared, only one listed
        seed = tmp_path / "seed.tif"
        tifffile.imwrite(seed, np.zeros((1, 1), np.uint8))
        huge = patch_tags(seed, tmp_path / "huge_strips.tif", {256: 200_000, 257: 200_000})
        seed.unlink()
    else:
        huge = huge_declared_tiff(tmp_path, kind=kind)
    assert os.path.getsize(huge) < 1000
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    snapshot = Snapshot([huge, out])
    start = time.perf_counter()
    proc, peak = run_cli_peak_rss(["-o", out, huge, huge], tmp_path / "peak.txt", timeout=60)
    seconds = time.perf_counter() - start
    assert seconds < 5, f"took {seconds:.1f} s"
    assert peak < 300 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    check_cli_failure(proc, 2, huge)
    snapshot.assert_unchanged()
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("kind", HUGE_KINDS)
def test_huge_declared_size_api(tmp_path, kind):
    huge = huge_declared_tiff(tmp_path, kind=kind)
    start = time.perf_counter()
    err = expect_api_error(lambda: avgstack.average([huge]), AvgstackError, huge, files=[huge])
    assert err.exit_code == 2
    assert time.perf_counter() - start < 5


# -- inputs that disagree ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "odd_shape, odd_dtype, has, expected",
    [
        ((12, 40, 3), "uint8", "40x12", "40x24"),
        ((24, 41, 3), "uint8", "41x24", "40x24"),
        ((24, 40), "uint8", "1 channel", "3"),
        ((24, 40, 4), "uint8", "4 channel", "3"),
        ((24, 40, 3), "uint16", "uint16", "uint8"),
        ((24, 40, 3), "float32", "float32", "uint8"),
    ],
    ids=["height", "width", "gray", "rgba", "uint16", "float32"],
)
def test_inputs_that_disagree_exit_2_naming_the_first_odd_file(pair, tmp_path, rng, odd_shape, odd_dtype, has, expected):
    pa, pb, out, _, _ = pair
    odd1 = write_tiff(tmp_path / "odd1.tif", image(rng, odd_shape, odd_dtype))
    odd2 = write_tiff(tmp_path / "odd2.tif", image(rng, odd_shape, odd_dtype))
    line = expect_cli_failure(["-o", out, pa, pb, odd1, odd2], 2, odd1, inputs=[pa, pb, odd1, odd2], out=out,
                              contains=[has, expected])
    assert odd2 not in line
    assert line.index(odd1) < line.index("expected") or "expected" not in line
    err = expect_api_error(lambda: avgstack.average([pa, pb, odd1, odd2]), IncompatibleInputsError, odd1)
    assert odd2 not in str(err)


def test_png_that_disagrees_is_named(pair, tmp_path, rng):
    pa, _, out, _, _ = pair
    png = write_png(tmp_path / "small.png", image(rng, (10, 40, 3)))
    expect_cli_failure(["-o", out, pa, png], 2, png, inputs=[pa, png], out=out, contains=["40x10", "40x24"])


# -- weights ------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [["1"], ["1", "2", "3"], ["1,2,3,4"]])
def test_weight_count_must_match_inputs(pair, weights):
    pa, pb, out, a, _ = pair
    expect_cli_failure(["-o", out, pa, pb, "--weights", *weights], 2, inputs=[pa, pb], out=out,
                       contains=["weight", "2 input"])
    values = [float(v) for w in weights for v in w.split(",")]
    expect_api_error(lambda: avgstack.average([pa, pb], values), UsageError, "weight")


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
def test_non_finite_weights_exit_2(pair, bad):
    pa, pb, out, _, _ = pair
    expect_cli_failure(["-o", out, pa, pb, f"--weights=1,{bad}"], 2, inputs=[pa, pb], out=out,
                       contains=["weight"])
    if not bad.startswith("-"):  # a separate '-inf' is taken for an option: test_issue_minus_inf_weight_...
        expect_cli_failure(["-o", out, pa, pb, "--weights", "1", bad], 2, inputs=[pa, pb], out=out,
                           contains=["weight"])
    expect_api_error(lambda: avgstack.average([pa, pb], [float(bad), 1.0]), UsageError, "finite")


def test_all_zero_weights_give_zeros(pair):
    """Currently allowed: a weighted sum with all weights zero is all zeros."""
    pa, pb, out, a, _ = pair
    proc = run_cli(["-o", out, pa, pb, "--weights", "0", "0"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    result = tifffile.imread(out)
    assert result.dtype == np.uint8 and result.shape == SHAPE
    assert not result.any()
    api = avgstack.average([pa, pb], [0.0, 0.0])
    assert api.dtype == np.uint8 and api.shape == SHAPE and not api.any()
    api = avgstack.average([pa, pb], [0.0, -0.0], dtype="float32")
    assert not api.any()


# -- NaN and infinities in float inputs ----------------------------------------------------------

_FLOAT_A = [np.inf, np.inf, np.nan, 1.0, -np.inf, np.nan, np.inf, -np.inf]
_FLOAT_B = [1.0, -np.inf, 2.0, np.nan, -np.inf, np.nan, np.inf, 1.0]
_FLOAT_MEAN = [np.inf, np.nan, np.nan, np.nan, -np.inf, np.nan, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_nan_and_inf_propagate_per_ieee(tmp_path, dtype):
    a = np.array([_FLOAT_A], dtype)
    b = np.array([_FLOAT_B], dtype)
    expected = np.array([_FLOAT_MEAN], dtype)
    result = avgstack.average([a, b])
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, expected)  # NaN compares equal to NaN here
    pa = write_tiff(tmp_path / "a.tif", a)
    pb = write_tiff(tmp_path / "b.tif", b)
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, pa, pb])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no numpy RuntimeWarning either
    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_issue_signaling_nan_prints_numpy_warning(tmp_path):
    """Bug: a signalling NaN in a float input makes numpy print a RuntimeWarning on stderr.

    float32 samples with bits 0x7f800001 (found by the fuzzer: a float TIFF whose
    floating-point predictor tag was changed). Observed: exit 0 with two extra lines,
    ``avgstack/arithmetic.py:297: RuntimeWarning: invalid value encountered in cast`` and
    the source line; ``avgstack.average`` emits the RuntimeWarning (an exception under
    ``-W error``). Expected: silence, NaN out (IEEE quiets it). Fix: ``np.errstate(invalid=
    "ignore")`` around the float accumulator's casts in arithmetic.py.
    """
    snan = np.array([[0x7F800001, 0x7FC00000, 0x3F800000, 0xFF800001]], np.uint32).view(np.float32)
    one = np.array([[0x3F800000, 0x3F800000, 0x7F800001, 0x3F800000]], np.uint32).view(np.float32)
    pa = write_tiff(tmp_path / "snan.tif", snan)
    pb = write_tiff(tmp_path / "one.tif", one)
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, pa, pb])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    result = tifffile.imread(out)
    assert np.isnan(result[0, :3]).all() and np.isnan(result[0, 3])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = avgstack.average([snan, one])
    assert np.isnan(result).all()


def test_nan_and_inf_in_weighted_sums_follow_ieee():
    a = np.array([[np.inf, np.inf, np.nan, 1.0]], np.float32)
    b = np.array([[1.0, -np.inf, 2.0, 3.0]], np.float32)
    result = avgstack.average([a, b], [0.5, 0.5], dtype="float32")
    np.testing.assert_array_equal(result, np.array([[np.inf, np.nan, np.nan, 2.0]], np.float32))
    result = avgstack.average([a, b], [0.0, 1.0], dtype="float32")  # 0 * inf is NaN
    np.testing.assert_array_equal(result, np.array([[np.nan, np.nan, np.nan, 3.0]], np.float32))


# -- output problems ----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_output_folder_missing_exit_2(pair, tmp_path, ext):
    pa, pb, _, _, _ = pair
    out = tmp_path / "no" / "such" / f"avg{ext}"
    expect_cli_failure(["-o", out, pa, pb], 2, str(out), inputs=[pa, pb], contains=["does not exist"])
    assert not out.parent.exists()
    expect_api_error(lambda: avgstack.average_to_file([pa, pb], out), OutputError, str(out), files=[pa, pb])


@needs_permissions
@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_output_folder_read_only_exit_2(pair, tmp_path, ext):
    """chmod 555; as root the CLI runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH."""
    pa, pb, _, _, _ = pair
    folder = tmp_path / "ro"
    folder.mkdir()
    out = folder / f"avg{ext}"
    out.write_bytes(PREVIOUS)
    with chmod_restored(folder, 0o555):
        expect_cli_failure(["-o", out, pa, pb], 2, str(out), inputs=[pa, pb], out=out, contains=["not writable"],
                           preexec_fn=permission_preexec())
        result = run_api_subprocess([pa, pb], out, preexec_fn=permission_preexec())
    assert result["type"] == "OutputError" and result["exit_code"] == 2, result
    assert os.listdir(folder) == [out.name]


@pytest.mark.parametrize("how", ["same path", "symlink as output", "hard link as output", "symlink as input",
                                 "relative path", "page suffix"])
def test_output_equal_to_an_input_exit_2_input_untouched(pair, tmp_path, how, monkeypatch):
    pa, pb, _, _, _ = pair
    inputs = [pa, pb]
    if how == "same path":
        out = pb
    elif how == "symlink as output":
        out = str(tmp_path / "link.tif")
        os.symlink(pb, out)
    elif how == "hard link as output":
        out = str(tmp_path / "hard.tif")
        os.link(pb, out)
    elif how == "symlink as input":
        link = str(tmp_path / "in_link.tif")
        os.symlink(pb, link)
        inputs, out = [pa, link], pb
    elif how == "relative path":
        monkeypatch.chdir(tmp_path)
        inputs, out = [pa, "b.tif"], str(tmp_path / "." / "b.tif")
    else:
        inputs, out = [pa, f"{pb}[0]"], pb
    before = Snapshot([pa, pb])
    expect_cli_failure(["-o", out, *inputs], 2, out, inputs=[pa, pb], contains=["same file"])
    expect_api_error(lambda: avgstack.average_to_file(inputs, out), OutputError, out, files=[pa, pb])
    before.assert_unchanged()
    assert temp_files(tmp_path) == []


# -- the disk filling up ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """Two 1600x1600 RGBA uint8 TIFFs: a 10 MB output."""
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    return [write_tiff(folder / f"big{i}.tif", image(rng, (1600, 1600, 4)), extrasamples=["unassalpha"])
            for i in range(2)]


@pytest.mark.parametrize(
    "ext, options",
    [(".tif", []), (".tif", ["-c", "lzw", "--tile", "256"]), (".tif", ["-c", "deflate"]), (".png", [])],
    ids=["tif-strips", "tif-lzw-tiles", "tif-deflate", "png"],
)
def test_disk_full_exit_1_temp_removed_previous_output_intact(big_pair, tmp_path, ext, options):
    """``ulimit -f 1MB`` while the output is about 10 MB."""
    out = tmp_path / f"avg{ext}"
    out.write_bytes(PREVIOUS)
    expect_cli_failure(["-o", out, *options, *big_pair], 1, str(out), inputs=big_pair, out=out,
                       contains=["disk full"], preexec_fn=limit_file_size(2**20))
    assert sorted(os.listdir(tmp_path)) == [out.name]


def test_disk_full_api_raises_write_error(big_pair, tmp_path):
    out = tmp_path / "avg.tif"
    out.write_bytes(PREVIOUS)
    snapshot = Snapshot([*big_pair, out])
    result = run_api_subprocess(big_pair, out, preexec_fn=limit_file_size(2**20))
    assert result["type"] == "WriteError" and "ProcessingError" in result["mro"] and result["exit_code"] == 1, result
    assert str(out) in result["message"]
    snapshot.assert_unchanged()
    assert temp_files(tmp_path) == []


def test_input_truncated_during_processing_is_a_read_error(tmp_path, rng):
    """An input that shrinks after its header was read: ReadError, previous output kept."""
    a, b = image(rng, (2000, 2000), "uint8"), image(rng, (2000, 2000), "uint8")
    pa = write_tiff(tmp_path / "a.tif", a, rowsperstrip=16)
    pb = write_tiff(tmp_path / "b.tif", b, rowsperstrip=16)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    calls = []

    def shrink(progress):
        calls.append(progress)
        if len(calls) == 1:
            os.truncate(pb, os.path.getsize(pb) // 3)

    with pytest.raises(ReadError) as info:
        avgstack.average_to_file([pa, pb], out, threads=1, progress=shrink)
    assert pb in str(info.value)
    assert calls[-1].bands > 1
    assert out.read_bytes() == PREVIOUS
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("threads", ["1", "2", "4"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_corrupt_tile_in_a_later_band_exit_1_with_threads(tmp_path, rng, threads, where):
    """A decode error while earlier bands are already written (and the next is being read)."""
    a = image(rng, (1600, 1200), "uint8")
    good = write_tiff(tmp_path / "good.tif", a, tile=(64, 64), compression="lzw")
    spans = segment_spans(good)
    index = {"first": 0, "middle": len(spans) // 2, "last": len(spans) - 1}[where]
    bad = corrupt_segment(good, tmp_path / "bad.tif", index, 0x00)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    args = ["-o", out, "-j", threads, "-m", "8MiB", good, bad, good]
    plan = run_cli(["--dry-run", *args])
    bands = int(plan.stdout.split("bands: ")[1].split()[0])
    assert bands > 1, plan.stdout
    line = expect_cli_failure(args, 1, str(bad), inputs=[good, bad], out=out, contains=["corrupt"])
    assert f"strip/tile {index}" in line


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_name", ["moyenne ä ü.tif", "平均 值.png"])
def test_paths_with_spaces_and_non_ascii(tmp_path, rng, out_name):
    folder = tmp_path / "dir with spaces" / "ñandú 日本"
    folder.mkdir(parents=True)
    a, b = image(rng, SHAPE), image(rng, SHAPE)
    pa = write_tiff(folder / "frame één.tif", a)
    pb = write_png(folder / "frame ü 2.png", b)
    out = folder / out_name
    proc = run_cli(["-o", out, pa, pb])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = tifffile.imread(out) if out_name.endswith(".tif") else cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(got, mean_u8(a, b))
    np.testing.assert_array_equal(avgstack.average([pa, pb])[..., ::-1], mean_u8(a, b))
    # and errors name such paths intact
    missing = str(folder / "fehlt ß.tif")
    expect_cli_failure(["-o", out, pa, missing], 2, missing, inputs=[pa, pb], out=out)


# -- --debug ------------------------------------------------------------------------------------


def test_traceback_only_with_debug(pair, tmp_path):
    pa, _, out, _, _ = pair
    missing = str(tmp_path / "nope.tif")
    proc = run_cli(["-o", out, pa, missing])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = run_cli(["--debug", "-o", out, pa, missing])
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)] == [
        f"{ERROR_PREFIX}{missing}: no such file"
    ]


# -- regression tests for bugs found here and by the fuzzer ----------------------------------------
#
# The reproductions are minimal: one valid 24x40 RGB TIFF or PNG with one field changed.


def _edited_tiff(tmp_path, rng, edit, **kwargs) -> str:
    src = write_tiff(tmp_path / "src.tif", image(rng, SHAPE), **kwargs)
    spots = tag_spots(src)
    data = bytearray(Path(src).read_bytes())
    edit(data, spots)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    os.unlink(src)
    return str(bad)


_HEADER_EDITS = {
    # TileWidth 0: ZeroDivisionError in TiffSource._setup (math.ceil(width / self._seg_w))
    "tile_width_zero": (dict(tile=(16, 16), compression="lzw"), lambda d, s: set_tag_value(d, s[322], 0)),
    # ImageWidth with two values: tifffile gives a tuple, TypeError in tifffile's decode setup
    "width_two_values": (dict(rowsperstrip=5), lambda d, s: set_tag_entry(d, s[256], count=2)),
    # ImageWidth typed ASCII: TypeError
    "width_as_ascii": (dict(rowsperstrip=5), lambda d, s: set_tag_entry(d, s[256], dtype=2)),
    # BigTIFF strip offset 2**63: OverflowError converting to int64
    "offset_2_pow_63": (dict(bigtiff=True, rowsperstrip=4), lambda d, s: set_tag_value(d, s[273], 2**63)),
}


@pytest.mark.parametrize("name", _HEADER_EDITS)
def test_issue_damaged_tiff_header_is_internal_error(tmp_path, rng, name):
    """Bug: TiffSource only catches TiffFileError/ValueError/KeyError/IndexError/struct.error.

    Observed: exit 1, ``avgstack: error: internal error: TypeError: ...`` naming no file; the
    API raises a bare TypeError/ZeroDivisionError/OverflowError, not an AvgstackError.
    Expected: InputError, exit 2, naming the file.
    """
    kwargs, edit = _HEADER_EDITS[name]
    bad = _edited_tiff(tmp_path, rng, edit, **kwargs)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    proc = run_cli(["-o", out, bad])
    assert "internal error" not in proc.stderr, proc.stderr
    check_cli_failure(proc, 2, bad)
    assert out.read_bytes() == PREVIOUS
    expect_api_error(lambda: avgstack.average([bad]), InputError, bad)


_WRITER_EDITS = {
    # ResolutionUnit with no value: once int(()) TypeError in TiffSource._setup metadata; now dropped
    "resolution_unit_no_value": lambda d, s: set_tag_entry(d, s[296], count=0),
    # XResolution with no value: IndexError in tifffile.TiffWriter (rational) after all pixels are read
    "x_resolution_no_value": lambda d, s: set_tag_entry(d, s[282], count=0),
    # ResolutionUnit 7: ValueError 'RESUNIT: invalid argument 7' in the writer
    "resolution_unit_7": lambda d, s: set_tag_value(d, s[296], 7),
    # Photometric SEPARATED on 3 samples: ValueError 'not enough samples' in the writer
    "separated_with_3_samples": lambda d, s: set_tag_value(d, s[262], 5),
}


@pytest.mark.parametrize("name", _WRITER_EDITS)
def test_issue_damaged_metadata_fails_in_the_writer_as_internal_error(tmp_path, rng, name):
    """Bug: metadata carried from the first input is not validated when the input is opened.

    Observed: the whole stack is read, then tifffile's writer raises; exit 1, ``internal
    error: IndexError/ValueError`` naming no file; average_to_file raises a non-Avgstack error.
    Expected: exit 2 before processing naming the input (UnsupportedInputError/InputError),
    or the unusable tag dropped and exit 0.
    """
    bad = _edited_tiff(tmp_path, rng, _WRITER_EDITS[name], rowsperstrip=5)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    proc = run_cli(["-o", out, bad, bad])
    assert "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 2), proc.stderr
    if proc.returncode == 2:
        check_cli_failure(proc, 2, bad)
        assert out.read_bytes() == PREVIOUS
    try:
        avgstack.average_to_file([bad], tmp_path / "api.tif")
    except AvgstackError:
        pass


def test_issue_tifffile_warnings_reach_stderr(tmp_path, rng):
    """Bug: tifffile's logger warnings are printed on stderr (logging.lastResort): extra lines.

    Observed (StripByteCounts listing 6 values for 5 strips, a file tifffile and avgstack
    both read): exit 0 with ``<tifffile.TiffPage 0 @8> incorrect StripByteCounts count``
    on stderr; on failures the same lines come before the error line.
    Expected: nothing on stderr on success, only the error line on failure (route the
    ``tifffile`` logger to avgstack's logger at debug level in cli/logs.py, or silence it
    around header parsing in reading/tiff.py).
    """
    good = write_tiff(tmp_path / "good.tif", image(rng, SHAPE), rowsperstrip=5)
    bad = _edited_tiff(tmp_path, rng, lambda d, s: set_tag_entry(d, s[279], count=s[279].count + 1), rowsperstrip=5)
    proc = run_cli(["-o", tmp_path / "out.tif", good, bad])
    assert proc.returncode == 0
    assert proc.stderr == "", proc.stderr
    # and a failing case: one strip listed for 200000 rows
    huge = tmp_path / "huge.tif"
    seed = write_tiff(tmp_path / "one.tif", np.zeros((1, 1), np.uint8))
    patch_tags(seed, huge, {256: 200_000, 257: 200_000})
    proc = run_cli(["-o", tmp_path / "out.tif", huge])
    check_cli_failure(proc, 2, str(huge))


def _png_with_bad_idat(tmp_path, rng) -> str:
    png = write_png(tmp_path / "src.png", image(rng, SHAPE))
    data = bytearray(Path(png).read_bytes())
    pos, _, length = next(c for c in png_chunks(bytes(data)) if c[1] == b"IDAT")
    data[pos + 8 + length // 2 : pos + 8 + length // 2 + 8] = b"\x55" * 8
    fix_png_crcs(data)  # the CRC is right: the damage reaches zlib
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    return str(bad)


def test_issue_libpng_messages_reach_stderr(tmp_path, rng):
    """Bug: libpng writes its own messages straight to file descriptor 2.

    Observed: ``libpng error: IDAT: incorrect data check`` (or ``bad adaptive filter
    value``, ...) before avgstack's error line: two lines. Expected: one line. Fix in
    reading/opencv.py OpenCVSource._imread (redirect fd 2 around cv2.imread and keep the
    text for the message), or decode PNG through a library that raises.
    """
    good = write_png(tmp_path / "good.png", image(rng, SHAPE))
    bad = _png_with_bad_idat(tmp_path, rng)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    expect_cli_failure(["-o", out, good, bad], 1, bad, inputs=[good, bad], out=out)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_issue_truncated_png_is_averaged_as_garbage(tmp_path, rng, cut):
    """Bug: a truncated PNG is read as whatever was in the frame buffer.

    ``cv2.imread(path, dst, flags)`` returns ``dst`` unchanged (not None) when libpng stops
    early, so OpenCVSource._imread's ``frame is None`` check never fires: the uninitialised
    (or previous frame's) buffer is averaged in. Observed: exit 0, wrong output, no message;
    ``avgstack.average`` returns garbage. Expected: an error naming the file (exit 2 if
    found from the file's structure before processing, 1 if while decoding), previous output
    untouched. Fix in reading/opencv.py: call ``cv2.imread(path, flags)`` without ``dst``
    (or check the decoder's result some other way).
    """
    a = image(rng, SHAPE)
    good = write_png(tmp_path / "good.png", a)
    full = Path(write_png(tmp_path / "full.png", image(rng, SHAPE))).read_bytes()
    bad = tmp_path / "cut.png"
    bad.write_bytes(full[: int(len(full) * cut)])
    assert cv2.imread(str(bad), cv2.IMREAD_UNCHANGED) is None  # OpenCV itself refuses it
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    proc = run_cli(["-o", out, good, bad])
    assert proc.returncode != 0, "a truncated PNG was averaged"
    check_cli_failure(proc, proc.returncode if proc.returncode in (1, 2) else 2, str(bad))
    assert out.read_bytes() == PREVIOUS
    expect_api_error(lambda: avgstack.average([good, str(bad)]), (InputError, ReadError), str(bad))


def _png_with_idat_length(tmp_path, rng, length: int) -> str:
    png = write_png(tmp_path / "src.png", image(rng, SHAPE))
    data = bytearray(Path(png).read_bytes())
    pos = next(c[0] for c in png_chunks(bytes(data)) if c[1] == b"IDAT")
    data[pos : pos + 4] = length.to_bytes(4, "big")
    bad = tmp_path / "long_idat.png"
    bad.write_bytes(bytes(data))
    return str(bad)


def test_issue_png_idat_length_makes_opencv_allocate_2_gib(tmp_path, rng):
    """Bug: a PNG whose IDAT chunk claims 2**31-1 bytes (a 3 kB file) costs 2 GiB and is averaged as garbage.

    OpenCV 5 allocates the declared chunk length before reading it; with ``dst`` given
    it then returns ``dst`` untouched. Observed: exit 0 after ~2 s, peak RSS ~2.1 GB
    (budget 512 MiB), output from an uninitialised buffer. Expected: exit 2 naming the
    file (reading/headers.py ``_png_chunks`` can check that the first IDAT chunk lies
    within the file, as it already does for chunks before it), small RSS, fast.
    """
    bad = _png_with_idat_length(tmp_path, rng, 2**31 - 1)
    out = tmp_path / "out.tif"
    out.write_bytes(PREVIOUS)
    start = time.perf_counter()
    proc, peak = run_cli_peak_rss(["-o", out, bad], tmp_path / "peak.txt")
    assert proc.returncode != 0, f"averaged a PNG OpenCV cannot decode (peak RSS {peak / 2**20:.0f} MiB)"
    check_cli_failure(proc, 2, bad)
    assert peak < 300 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    assert time.perf_counter() - start < 5
    assert out.read_bytes() == PREVIOUS


@pytest.mark.parametrize("dtype", ["float32", "int16", "uint32"])
def test_issue_png_output_silently_converted_to_8_bit(tmp_path, rng, dtype):
    """Bug: OpenCV 5's imencode no longer raises for sample types PNG cannot hold.

    It warns ``imencodeWithMetadata Unsupported depth image for selected encoder is
    fallbacked to CV_8U`` on stderr and writes saturated 8-bit data. Observed: exit 0, a
    uint8 PNG of 0/255 values, an OpenCV WARN line. Expected: exit 2 before processing
    (OutputError naming the output, the sample type and the fix: --dtype or .tif), previous
    output untouched. Fix in writing/opencv.py check_writable (know each encoder's types,
    called from api.FileJob.__init__ with the output dtype).
    """
    frames = [np.abs(image(rng, (6, 8), "float32") * 1000).astype(dtype) for _ in range(2)]
    inputs = [write_tiff(tmp_path / f"f{i}.tif", f) for i, f in enumerate(frames)]
    out = tmp_path / "out.png"
    out.write_bytes(PREVIOUS)
    expect_cli_failure(["-o", out, *inputs], 2, str(out), inputs=inputs, out=out, contains=[dtype])


def test_issue_png_output_with_five_samples_fails_after_processing(tmp_path, rng):
    """Bug: the output format's channel limits are not checked before processing.

    Observed: a 5-sample stack written to .png reads every input, then fails with
    ``OpenCV cannot write uint8 images with 5 channel(s) as .png (OpenCV(5.0.0) ...
    Assertion failed ...)``, exit 1 (a WriteError from writing/opencv.py write_opencv). Expected: exit 2 before any
    pixel is read (OutputError naming the output; the README's exit-code table).
    """
    frames = [image(rng, (6, 8, 5)) for _ in range(2)]
    inputs = [write_tiff(tmp_path / f"f{i}.tif", f, photometric="minisblack", planarconfig="contig") for i, f in enumerate(frames)]
    out = tmp_path / "out.png"
    out.write_bytes(PREVIOUS)
    expect_cli_failure(["-o", out, *inputs], 2, str(out), inputs=inputs, out=out)


@pytest.mark.parametrize("weights", [["-inf", "1"], ["1", "-inf"], ["1", "-nan"]])
def test_issue_minus_inf_weight_as_separate_argument_is_a_confusing_usage_error(pair, weights):
    """Minor: ``--weights 1 -inf`` is parsed by argparse as an unknown option ``-inf``.

    The README allows negative weights as separate arguments (``--weights 0.01 -0.002``);
    argparse only treats ``-<digits>`` as numbers. Observed: exit 2 with the usage block and
    ``argument -w/--weights: expected at least one argument`` or ``unrecognized arguments:
    -inf`` - nothing says the weight is not finite. Expected: one line saying weights must
    be finite (cli/options.py: e.g. rewrite ``-inf``/``-nan`` after --weights before parsing,
    or a custom ``_negative_number_matcher``).
    """
    pa, pb, out, _, _ = pair
    proc = run_cli(["-o", out, pa, pb, "--weights", *weights])
    check_cli_failure(proc, 2, contains=["finite"])


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_issue_non_utf8_png_input_name_segfaults(tmp_path, rng):
    """Bug: cv2.imread crashes (SIGSEGV) on a str path holding surrogate escapes.

    A PNG named ``b'frame\\xff.png'`` (valid on Linux, arrives from argv as
    ``'frame\\udcff.png'``). Observed: the process dies with SIGSEGV (exit -11), leaving
    a temporary file. Expected: the average is written (exit 0), or at worst exit 2
    naming the file. Fix in reading/opencv.py: never hand such names to OpenCV (open the
    file and pass ``/proc/self/fd/N``, or decode from bytes with cv2.imdecode).
    """
    a = image(rng, SHAPE)
    name = os.fsdecode(b"frame\xff.png")
    png = write_png(tmp_path / name, a)
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, png, png])
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(tifffile.imread(out), a)


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes any bytes in names")
def test_issue_non_utf8_output_extension_segfaults(pair, tmp_path):
    """Bug: cv2.haveImageWriter crashes (SIGSEGV) on an extension with surrogate escapes.

    ``-o $'avg.\\xff'``. Observed: exit -11 in writing/opencv.py check_writable. Expected:
    exit 2, ``OpenCV cannot write ... files``. Fix: reject non-ASCII extensions before
    calling cv2.
    """
    pa, pb, _, _, _ = pair
    out = str(tmp_path / os.fsdecode(b"avg.\xff"))
    proc = run_cli(["-o", out, pa, pb])
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    check_cli_failure(proc, 2, "avg.")


def test_issue_budget_error_for_huge_strip_does_not_name_the_file(tmp_path):
    """Bug: a header declaring one 200000x200000 deflate strip ends in a BudgetError that names no file.

    Observed: ``avgstack: error: averaging 1 frames of 200000x200000 gray uint8 needs at
    least 37.3 GiB of memory (37.3 GiB fixed ...)``. The 37 GiB is the decode scratch of
    the one strip the damaged/hostile file declares. Expected: the message names the file
    (and that one strip of it needs 37 GiB). Fix in engine.Stack.plan (name the input
    with the largest scratch_bytes) or reading/tiff.py (refuse strips/tiles larger than
    the budget could ever hold, naming the file).
    """
    huge = huge_declared_tiff(tmp_path, kind="deflate")
    check_cli_failure(run_cli(["-o", tmp_path / "out.tif", huge]), 2, huge)


_OPENCV_ONLY = {
    "gif": b"GIF89a\x10\x00\x10\x00\xf2\x4e\x00",
    "jp2": b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    "qoi": b"qoif",
    "exr": b"v/1\x01",
}


@pytest.mark.parametrize("kind", _OPENCV_ONLY)
def test_issue_damaged_file_of_a_format_without_header_parser(pair, tmp_path, kind):
    """Bug: damage found while opening GIF/JPEG 2000/QOI/EXR inputs is a ReadError (exit 1), with OpenCV log lines.

    OpenCVSource.__init__ decodes these formats once to learn their shape, before
    processing, and lets ReadError through. Observed: exit 1, and for GIF/JPEG 2000
    multi-line ``[ERROR:0@...] global loadsave.cpp ...`` logs from OpenCV on stderr.
    Expected: exit 2 (InputError: not a readable image) and one line. Fix in
    reading/opencv.py (raise InputError from the probing decode; set OpenCV's log level
    to silent, cv2.utils.logging.setLogLevel).
    """
    pa, _, out, _, _ = pair
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(_OPENCV_ONLY[kind] + np.random.default_rng(1).bytes(300))
    expect_cli_failure(["-o", out, pa, bad], 2, str(bad), inputs=[pa, bad], out=out)
