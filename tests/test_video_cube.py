"""Cube methods (median, percentile, sigma-clip, ...) over video files, through the band engine in passes.

Videos are written here with cv2.VideoWriter; the references are numpy/astropy over the frames that
cv2.VideoCapture itself decodes.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from clihelpers import describe, run
from conftest import peak_rss_of, budget_for_bands
from test_methods import as_out, astropy_survivors, exact_mean_of
from test_video import CODECS, _decoded, _write_video

import avgstack
from avgstack.reading.video import VideoInfo, select_frames
from avgstack.reading.videoframes import VideoCursor


@pytest.fixture(params=CODECS, ids=[c[0] for c in CODECS])
def video(request, tmp_path):
    fourcc, ext = request.param
    path = tmp_path / f"clip.{ext}"
    _write_video(path, fourcc, n=15)
    frames = _decoded(path)
    assert len(frames) == 15
    return path, frames


def _median(frames):
    return as_out(np.median(np.stack(frames).astype(np.float64), axis=0), np.dtype(np.uint8))


def _sigma_clip(frames, low=3.0, high=3.0, iters=5):
    cube = np.stack(frames).astype(np.float64)
    keep = astropy_survivors(cube, low, high, iters)
    want = np.empty(cube.shape[1:], np.uint8)
    for idx in np.ndindex(*want.shape):
        want[idx] = exact_mean_of(cube[(slice(None), *idx)][keep[(slice(None), *idx)]], np.dtype(np.uint8))
    return want


def test_median_percentile_sigma_clip_of_a_video(video, tmp_path):
    path, frames = video
    np.testing.assert_array_equal(avgstack.average(path, method="median"), _median(frames))
    np.testing.assert_array_equal(avgstack.average([path], method="median", frames="1:15"), _median(frames[1:]))
    got = avgstack.average([path], method="percentile", percentile=30)
    want = as_out(np.percentile(np.stack(frames).astype(np.float64), 30, axis=0), np.dtype(np.uint8))
    np.testing.assert_array_equal(got, want)
    pytest.importorskip("astropy")
    got = avgstack.average([path], method="sigma-clip", sigma_low=1.5, sigma_high=1.2)
    np.testing.assert_array_equal(got, _sigma_clip(frames, 1.5, 1.2))
    got = avgstack.average([path], method="std", ddof=1)
    np.testing.assert_allclose(got, np.std(np.stack(frames).astype(np.float64), axis=0, ddof=1), rtol=1e-6)


def test_frames_and_sample_with_median_in_passes(video, tmp_path):
    path, frames = video
    chosen = select_frames(15, slice(2, None), 5)
    want = _median([frames[i] for i in chosen])
    np.testing.assert_array_equal(avgstack.average([path], method="median", frames="2:", sample=5), want)
    out = tmp_path / "bg.tif"
    plan = avgstack.plan_to_file([path], out, method="median", max_memory="16MiB")
    assert plan.passes == 1 and len(plan.inputs) == 15
    # the smallest budget the planner accepts: the cube of 15 frames in several passes, each decoding the video once
    budget = budget_for_bands([path], out, minimum_bands=2, method="median")
    small = avgstack.plan_to_file([path], out, method="median", max_memory=budget)
    assert small.passes > 1 and small.passes == small.bands
    report = avgstack.average_to_file([path], out, method="median", max_memory=budget)
    assert report.frames == 15
    np.testing.assert_array_equal(tifffile.imread(out), _median(frames)[:, :, ::-1])
    result = run(["-v", "-o", out, path, "--method", "median", "--sample", "5", "--frames", "2:",
                  "--max-memory", str(budget)])
    assert result.returncode == 0, describe(result)
    assert "5 of 15 frames" in result.stderr and "5 evenly spaced" in result.stderr
    assert "passes" in result.stderr, result.stderr
    np.testing.assert_array_equal(tifffile.imread(out), want[:, :, ::-1])
    dry = run(["-n", "-o", out, path, "--method", "median", "--max-memory", str(budget)])
    assert dry.returncode == 0 and f"{small.passes} passes" in dry.stdout, describe(dry)


def test_videos_mixed_with_images(video, tmp_path):
    path, frames = video
    tif = tmp_path / "still.tif"
    tifffile.imwrite(tif, frames[3][:, :, ::-1].copy(), photometric="rgb")
    got = avgstack.average([tif, path, tif], method="median", frames="0:4")
    np.testing.assert_array_equal(got, _median([frames[3], *frames[:4], frames[3]]))
    weights = np.array([1.0, 2.0, 1.0, 1.0, 3.0])
    got = avgstack.average([path, tif], list(weights), method="minmax", frames="::4", nlow=1, nhigh=1)
    cube = np.stack([*frames[::4], frames[3]]).astype(np.float64)
    ranks = np.argsort(np.argsort(cube, axis=0, kind="stable"), axis=0, kind="stable")
    kept = (ranks >= 1) & (ranks <= 3)  # the lowest and the highest dropped, ties by frame order
    w = weights[:, None, None, None] * kept
    np.testing.assert_array_equal(got, as_out((w * cube).sum(axis=0) / w.sum(axis=0), np.dtype(np.uint8)))
    other = tmp_path / "other.tif"
    tifffile.imwrite(other, np.zeros((24, 41, 3), np.uint8), photometric="rgb")
    with pytest.raises(avgstack.IncompatibleInputsError, match="other.tif"):
        avgstack.average([path, other], method="median")


def test_a_container_that_overstates_its_frames_is_read_to_its_real_end(tmp_path, caplog):
    path = tmp_path / "cut.avi"
    _write_video(path, "MJPG", n=15)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])  # the header still says 15 frames
    assert int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) == 15
    frames = _decoded(path)
    assert 0 < len(frames) < 15
    with caplog.at_level("WARNING", logger="avgstack"):
        got = avgstack.average([path], method="median")
    np.testing.assert_array_equal(got, _median(frames))
    assert f"declares 15 frames but holds {len(frames)}" in caplog.text
    # a video that ends earlier than planned in a later pass: a ReadError naming the file
    cursor = VideoCursor(VideoInfo(str(path), 15, 24, 40, 10.0), 14)
    out = np.empty((24, 40, 3), np.uint8)
    cursor.read(0, out)
    np.testing.assert_array_equal(out, frames[0])
    with pytest.raises(avgstack.ReadError, match=r"cut\.avi: the video ends at frame"):
        cursor.read(14, out)


def test_refused_before_reading_when_one_row_of_every_frame_does_not_fit(video, tmp_path):
    path, _ = video
    with pytest.raises(avgstack.BudgetError, match="a video's frames are decoded whole"):
        avgstack.plan_to_file([path], tmp_path / "o.tif", method="median", max_memory="1MiB")
    out = tmp_path / "o.tif"
    result = run(["-o", out, path, "--method", "median", "--max-memory", "1MiB"])
    assert result.returncode == 2 and "needed" in result.stderr and not out.exists(), describe(result)


@pytest.mark.slow
def test_median_of_a_video_larger_than_the_budget_in_passes(tmp_path, baseline):  # noqa: F811
    width, height, count = 480, 360, 60  # 31 MB of decoded frames, a few MB of MJPG
    budget = 16 * 2**20
    path = tmp_path / "walkers.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(5)
    scene = rng.integers(0, 200, (height, width, 3), dtype=np.uint8)
    for i in range(count):
        frame = scene.copy()
        frame[:, (i * 8) % width : (i * 8) % width + 30] = 255  # a walker crossing
        writer.write(frame)
    writer.release()
    assert path.stat().st_size < 8 * 2**20
    out = tmp_path / "bg.tif"
    plan = avgstack.plan_to_file([path], out, method="median", max_memory=budget)
    assert plan.passes > 1 and plan.memory <= budget
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", str(out), str(path), "--method", "median", "--max-memory", str(budget)], tmp_path
    )
    assert code == 0, stderr
    extra = peak - baseline
    assert extra < budget, f"peak {peak / 2**20:.1f} MiB = baseline {baseline / 2**20:.1f} MiB + {extra / 2**20:.1f} MiB"
    want = _median(_decoded(path))
    np.testing.assert_array_equal(tifffile.imread(out), want[:, :, ::-1])


def test_a_dask_cluster_refuses_videos(video, tmp_path):
    path, _ = video
    out = tmp_path / "o.tif"
    result = run(["-o", out, path, "--method", "median", "--scheduler-address", "tcp://127.0.0.1:1"])
    assert result.returncode == 2 and "cannot be read on a Dask cluster" in result.stderr, describe(result)
    assert not out.exists()
