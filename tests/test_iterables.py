"""average() and average_to_file() over one-shot iterables: one frame at a time, never materialised."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import assert_same_bits, peak_rss_of, random_image, varied_floats

import avgstack
from avgstack.iterables import accumulate_iterable
from avgstack.options import JobOptions


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
@pytest.mark.parametrize("weighted", [False, True])
def test_generator_equals_list(rng, dtype, weighted):
    frames = [varied_floats(rng, (9, 7, 3), dtype, headroom=8) if dtype.startswith("float")
              else random_image(rng, (9, 7, 3), dtype) for _ in range(6)]
    weights = [float(w) for w in rng.uniform(-2, 2, 6)] if weighted else None
    out = "float64" if weighted else None
    got = avgstack.average((f for f in frames), None if weights is None else iter(weights), dtype=out)
    assert_same_bits(got, avgstack.average(frames, weights, dtype=out))


def test_map_of_paths_and_arrays_and_to_file(tmp_path, rng):
    rgb = [random_image(rng, (11, 13, 3), np.uint16) for _ in range(3)]
    paths = []
    for i, f in enumerate(rgb):
        paths.append(str(tmp_path / f"f{i}.tif"))
        tifffile.imwrite(paths[-1], f, photometric="rgb")
    extra = random_image(rng, (11, 13, 3), np.uint16)  # BGR, as OpenCV code holds it
    items = iter([*paths, extra])
    report = avgstack.average_to_file(items, tmp_path / "out.tif")
    assert report.frames == 4
    want = avgstack.average([*paths, extra])  # BGR
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif")[..., ::-1], want)
    np.testing.assert_array_equal(avgstack.average(map(str, paths)), avgstack.average(paths))


def test_weights_of_another_length_and_empty_iterables(rng):
    frames = [np.zeros((2, 2), np.uint8)] * 3
    with pytest.raises(avgstack.UsageError, match="fewer weights than frames"):
        avgstack.average(iter(frames), iter([1.0, 2.0]))
    with pytest.raises(avgstack.UsageError, match="more weights"):
        avgstack.average(iter(frames), [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(avgstack.UsageError, match="empty"):
        avgstack.average(iter([]))
    with pytest.raises(avgstack.UsageError, match="finite"):
        avgstack.average(iter(frames), iter([1.0, float("inf"), 1.0]))
    with pytest.raises(avgstack.IncompatibleInputsError):
        avgstack.average(iter([np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8)]))


@pytest.mark.parametrize("method", ["median", "percentile", "sigma-clip", "minmax"])
def test_methods_needing_all_frames_refuse_one_shot_iterables(method):
    options = JobOptions.create(method=method, **({"percentile": 50} if method == "percentile" else {}))
    with pytest.raises(avgstack.UsageError, match="needs every frame at once.*pass a list"):
        accumulate_iterable(iter([np.zeros((2, 2), np.uint8)] * 3), None, options)


_GENERATOR_JOB = """
import sys, weakref, numpy as np, cv2, tifffile, avgstack, avgstack.cli  # the baseline imports these too
y = np.arange(1000, dtype=np.uint16)[:, None, None]
x = np.arange(1000, dtype=np.uint16)[None, :, None]
c = np.arange(4, dtype=np.uint16)[None, None, :]
base = ((x * 3 + y * 5 + c * 64) % 256).astype(np.uint8)
alive, most = [0], [0]
def gone():
    alive[0] -= 1
def frames():
    for i in range(200):
        frame = base + np.uint8(i)  # wraps: every frame differs
        alive[0] += 1
        weakref.finalize(frame, gone)
        most[0] = max(most[0], alive[0])
        yield frame
        del frame
del x, y
avgstack.average_to_file(frames(), sys.argv[1], max_memory="32MiB")
print(most[0], file=sys.stderr)
"""


def test_generator_of_200_large_frames_within_32_mib(tmp_path, baseline):
    out = tmp_path / "mean.tif"
    code, peak, stderr = peak_rss_of(["-c", _GENERATOR_JOB, str(out)], tmp_path)
    assert code == 0, stderr
    assert int(stderr.split()[-1]) <= 2  # frames alive at once: never a list of them
    extra = peak - baseline
    print(f"generator: peak {peak / 2**20:.1f} MiB, baseline {baseline / 2**20:.1f} MiB")
    assert extra < 32 * 2**20, f"peak RSS {extra / 2**20:.1f} MiB above the baseline, budget 32 MiB"
    y = np.arange(1000, dtype=np.int64)[:, None, None]
    x = np.arange(1000, dtype=np.int64)[None, :, None]
    c = np.arange(4, dtype=np.int64)[None, None, :]
    base = (x * 3 + y * 5 + c * 64) % 256
    total = sum((base + i) % 256 for i in range(200))
    q, r = np.divmod(total, 200)  # exact mean, rounded half to even
    want = (q + ((2 * r > 200) | ((2 * r == 200) & (q % 2 == 1)))).astype(np.uint8)
    np.testing.assert_array_equal(tifffile.imread(out), want[..., [2, 1, 0, 3]])  # BGRA frames, RGBA TIFF
