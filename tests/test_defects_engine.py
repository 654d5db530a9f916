"""Issue 14, the engine's part: alpha kinds across every input, float16 overflow, inputs of the wrong type."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import tifffile
from conftest import run_cli

import avgstack


def _rgba(path, value, extrasamples):
    frame = np.full((8, 6, 4), value, np.uint8)
    kwargs = {"extrasamples": extrasamples} if extrasamples is not None else {}
    tifffile.imwrite(path, frame, photometric="rgb", **kwargs)
    return str(path)


def test_issue14_alpha_kinds_are_compared_across_every_input(tmp_path):
    """Regression: [unspecified, associated, unassociated] was averaged and labelled unassociated."""
    paths = [
        _rgba(tmp_path / "a.tif", 10, ["unspecified"]),
        _rgba(tmp_path / "b.tif", 20, ["assocalpha"]),
        _rgba(tmp_path / "c.tif", 30, ["unassalpha"]),
    ]
    out = tmp_path / "out.tif"
    proc = run_cli(["-o", out, *paths])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"avgstack: error: {paths[2]}: has unassociated alpha, expected associated alpha like {paths[1]}"
    ]
    assert not out.exists()
    with pytest.raises(avgstack.IncompatibleInputsError):
        avgstack.average(paths)
    # unspecified next to one stated kind is that kind
    assert avgstack.average(paths[:2]).shape == (8, 6, 4)


def test_issue14_float16_overflow_is_saturated_and_counted(caplog):
    """Regression: two raw RuntimeWarnings, infinities written, nothing counted as clipped."""
    a = np.full((3, 4), 60000, np.float32)
    b = np.full((3, 4), 80000, np.float32)
    a[0, 0] = b[0, 0] = np.inf  # infinities in the inputs stay infinite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING, logger="avgstack"):
            mean = avgstack.average([a, b], dtype="float16")
            weighted = avgstack.average([-a, -b], [1.0, 1.0], dtype="float16")
    top = np.finfo(np.float16).max
    assert mean[0, 0] == np.inf and (mean.reshape(-1)[1:] == top).all()
    assert weighted[0, 0] == -np.inf and (weighted.reshape(-1)[1:] == -top).all()
    assert [r.getMessage() for r in caplog.records] == ["11 samples were clipped to the float16 range"] * 2


@pytest.mark.parametrize("bad", [None, 3, b"a.tif", 2.5])
def test_issue14_inputs_of_the_wrong_type_are_usage_errors(bad):
    """Regression: non-path inputs raised a bare TypeError."""
    with pytest.raises(avgstack.UsageError, match="expected a path"):
        avgstack.average([np.zeros((2, 2), np.uint8), bad])
    with pytest.raises(avgstack.UsageError):
        avgstack.average(bad)
