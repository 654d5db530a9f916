"""Video files as frames: written here with cv2.VideoWriter, checked against cv2.VideoCapture's own frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from clihelpers import assert_one_error_line, describe, run
from conftest import exact_int_mean

import avgstack
from avgstack.reading.video import select_frames, sniff_video

CODECS = [("MJPG", "avi"), ("FFV1", "mkv")]  # lossy intra-frame, and a lossless codec the wheel offers


def _write_video(path, fourcc, n=14, size=(40, 24), seed=3):
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc}")
    sent = []
    for i in range(n):
        frame = (rng.integers(0, 60, (size[1], size[0], 3)) + i * 12).astype(np.uint8)
        writer.write(frame)
        sent.append(frame)
    writer.release()
    return sent


def _decoded(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(params=CODECS, ids=[c[0] for c in CODECS])
def video(request, tmp_path):
    fourcc, ext = request.param
    path = tmp_path / f"clip.{ext}"
    sent = _write_video(path, fourcc)
    frames = _decoded(path)
    assert len(frames) == 14
    if fourcc == "FFV1":
        assert all(np.array_equal(a, b) for a, b in zip(sent, frames, strict=True))  # lossless indeed
    return path, frames


def test_mean_of_a_video_equals_mean_of_its_decoded_frames(video):
    path, frames = video
    assert sniff_video(path.read_bytes()[:32]) is not None
    np.testing.assert_array_equal(avgstack.average([path]), exact_int_mean(frames))
    np.testing.assert_array_equal(avgstack.average(str(path)), exact_int_mean(frames))


def test_frames_and_sample_pick_frames(video):
    path, frames = video
    for frames_arg, pick in [("2:11:3", slice(2, 11, 3)), (slice(-4, None), slice(-4, None))]:
        got = avgstack.average([path], frames=frames_arg)
        np.testing.assert_array_equal(got, exact_int_mean(frames[pick]))
    chosen = select_frames(14, None, 5)
    assert chosen == [0, 3, 6, 9, 13]
    np.testing.assert_array_equal(avgstack.average([path], sample=5), exact_int_mean([frames[i] for i in chosen]))


def test_videos_mixed_with_images_and_weights(video, tmp_path):
    path, frames = video
    still = frames[0][:, :, ::-1].copy()  # RGB for the TIFF
    tif = tmp_path / "still.tif"
    tifffile.imwrite(tif, still, photometric="rgb")
    weights = [0.25] * 3 + [-0.5]
    got = avgstack.average([path, tif], weights, frames="0:3", dtype="float64")
    want = sum(w * f.astype(np.float64) for w, f in zip(weights, [*frames[:3], frames[0]], strict=True))
    np.testing.assert_array_equal(got, want)
    with pytest.raises(avgstack.UsageError, match="3 weight"):
        avgstack.average([path, tif], [1.0] * 3, frames="0:3")


def test_cli_video_frames_and_sample(video, tmp_path):
    path, frames = video
    out = tmp_path / "bg.tif"
    result = run(["-v", "-o", out, path, "--sample", "4"])
    assert result.returncode == 0, describe(result)
    assert "4 of 14 frames" in result.stderr and "4 evenly spaced" in result.stderr
    want = exact_int_mean([frames[i] for i in select_frames(14, None, 4)])
    np.testing.assert_array_equal(tifffile.imread(out), want[:, :, ::-1])
    result = run(["-o", out, path, "--frames", "1:5"])
    assert result.returncode == 0, describe(result)
    np.testing.assert_array_equal(tifffile.imread(out), exact_int_mean(frames[1:5])[:, :, ::-1])
    assert_one_error_line(run(["-o", out, path, "--frames", "1:5:0"]), 2, "step cannot be zero")
    dry = run(["-n", "-o", out, path, "--frames", "::2"])
    assert dry.returncode == 0 and "7 frames" in dry.stdout, describe(dry)


def test_a_video_is_not_one_frame_of_a_file_stack(video, tmp_path):
    path, _ = video
    with pytest.raises(avgstack.UnsupportedInputError, match="a video"):
        avgstack.plan_to_file([path], tmp_path / "o.tif")
