"""alpha='coverage': colour weighted by unassociated alpha, against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import bgr, read_tiff, write_tiff

import avgstack
from avgstack.errors import UsageError


def reference(frames: list[np.ndarray]) -> np.ndarray:
    """float64 coverage mean of (rows, cols, samples) frames in stored order, alpha last."""
    x = np.stack([f.astype(np.float64) for f in frames])
    a = x[..., -1:]
    total = a.sum(axis=0)
    plain = x.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        colour = np.where(total > 0, (a * x[..., :-1]).sum(axis=0) / np.where(total > 0, total, 1), plain[..., :-1])
    return np.concatenate([colour, plain[..., -1:]], axis=-1)


def frames_of(rng, dtype, samples, count=4, shape=(23, 19)):
    dtype = np.dtype(dtype)
    top = 1.0 if dtype.kind == "f" else np.iinfo(dtype).max
    frames = []
    for _ in range(count):
        f = rng.uniform(0, top, shape + (samples,))
        alpha = f[..., -1]
        alpha[rng.random(shape) < 0.3] = 0  # fully transparent, with colour hidden under it
        frames.append(f.astype(dtype) if dtype.kind == "f" else np.rint(f).astype(dtype))
    for f in frames:
        f[0, 0, -1] = 0  # transparent everywhere: plain mean of colour, alpha 0
    return frames


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("samples", [2, 4])
def test_coverage_mean_against_float64_reference(tmp_path, rng, dtype, samples):
    frames = frames_of(rng, dtype, samples)
    photometric = "rgb" if samples == 4 else "minisblack"
    paths = [write_tiff(tmp_path / f"f{i}.tif", f, photometric=photometric, extrasamples=["unassalpha"])
             for i, f in enumerate(frames)]
    avgstack.average_to_file(paths, tmp_path / "out.tif", alpha="coverage", count_map=tmp_path / "n.tif")
    out = read_tiff(tmp_path / "out.tif").reshape(frames[0].shape)
    ref = reference(frames)
    if np.dtype(dtype).kind == "f":
        np.testing.assert_allclose(out, ref.astype(dtype), rtol=1e-6, atol=1e-7)
    else:
        # exact integer division: within half a unit of the float64 reference, and equal to its rint
        # except where the float64 quotient lands within 1e-9 of a tie
        diff = np.abs(out.astype(np.float64) - ref)
        assert diff.max() <= 0.5
        near_tie = np.abs(np.abs(ref - np.floor(ref)) - 0.5) < 1e-9
        assert np.array_equal(out[~near_tie], np.rint(ref[~near_tie]).astype(dtype))
    assert out[0, 0, -1] == 0
    counts = read_tiff(tmp_path / "n.tif")
    assert counts.shape == frames[0].shape[:2]  # one count per pixel
    assert np.array_equal(counts, sum((f[..., -1] > 0).astype(int) for f in frames))
    # K copies of a file give it back, transparent pixels' colour included
    avgstack.average_to_file([paths[1]] * 3, tmp_path / "same.tif", alpha="coverage")
    assert np.array_equal(read_tiff(tmp_path / "same.tif").reshape(frames[1].shape), frames[1])


def test_coverage_with_arrays_and_png(tmp_path, rng):
    import cv2

    frames = frames_of(rng, "uint8", 4, count=3)
    paths = []
    for i, f in enumerate(frames):
        paths.append(str(tmp_path / f"f{i}.png"))
        cv2.imwrite(paths[-1], bgr(f))
    from_png = avgstack.average(paths, alpha="coverage")
    from_arrays = avgstack.average([bgr(f) for f in frames], alpha="coverage")
    assert np.array_equal(from_png, from_arrays)
    ref = reference(frames)
    assert np.abs(from_png.astype(np.float64) - bgr(ref)).max() <= 0.5
    # the bleed the issue is about: channel mode lets hidden colour in
    channel = avgstack.average(paths)
    assert np.abs(channel.astype(np.float64) - bgr(ref)).max() > 1


def test_associated_alpha_coverage_is_the_plain_mean(tmp_path, rng):
    frames = frames_of(rng, "uint16", 4, count=3)
    paths = [write_tiff(tmp_path / f"f{i}.tif", f, photometric="rgb", extrasamples=["assocalpha"])
             for i, f in enumerate(frames)]
    avgstack.average_to_file(paths, tmp_path / "cov.tif", alpha="coverage")
    avgstack.average_to_file(paths, tmp_path / "plain.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "cov.tif"), tifffile.imread(tmp_path / "plain.tif"))


def test_coverage_refuses_what_it_does_not_handle(rng):
    rgb = [rng.integers(0, 255, (4, 4, 3), dtype=np.uint8) for _ in range(2)]
    with pytest.raises(UsageError, match="alpha"):
        avgstack.average(rgb, alpha="coverage")
    rgba = [rng.integers(0, 255, (4, 4, 4), dtype=np.uint8) for _ in range(2)]
    with pytest.raises(UsageError, match="alpha"):
        avgstack.average(rgba, [0.5, 0.5], alpha="coverage")
    with pytest.raises(UsageError, match="alpha"):
        avgstack.average(rgba, alpha="premultiplied")
