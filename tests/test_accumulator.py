"""avgstack.Accumulator: frames pushed one at a time equal average() over them, bit for bit; save and resume."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same_bits, random_image, varied_floats

import avgstack
import avgstack.accumulator as accumulator_module
from avgstack.accumulator import incremental_methods
from avgstack.reducers import METHODS
from avgstack.reducers.base import CUBE, Reducer

IN_DTYPES = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "float16", "float32", "float64"]


def _frames(rng, dtype, n, shape):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return [rng.random(shape) < 0.5 for _ in range(n)]
    if dtype.kind == "f":
        return [varied_floats(rng, shape, dtype, headroom=8) for _ in range(n)]
    return [random_image(rng, shape, dtype) for _ in range(n)]


def _average(frames, method, weights=None, dtype=None, **kwargs):
    """average() over the same frames; other methods go through its ``method=`` argument."""
    extra = {} if method in ("mean", "weighted") else {"method": method}
    return avgstack.average(frames, weights, dtype=dtype, **extra, **kwargs)


def _weights(method, rng, n, scale=1.0):
    if method != "weighted":
        return None
    return [float(w) for w in rng.uniform(-1, 1, n) * scale]


def _accumulate(frames, method, weights=None, dtype=None, **kwargs):
    acc = avgstack.Accumulator(method, dtype, **kwargs)
    for i, frame in enumerate(frames):
        acc.add(frame, None if weights is None else weights[i])
    return acc


@pytest.mark.parametrize("method", incremental_methods())
@pytest.mark.parametrize("in_dtype", IN_DTYPES)
@pytest.mark.parametrize("shape", [(13, 7), (9, 11, 3), (6, 5, 4)])
def test_accumulator_equals_average(rng, method, in_dtype, shape):
    frames = _frames(rng, in_dtype, 5, shape)
    weights = _weights(method, rng, 5)
    dtype = None if in_dtype != "bool" else "uint8"
    acc = _accumulate(frames, method, weights, dtype)
    got = acc.result()
    assert acc.count == 5
    # several bands and threads on the average() side
    want = _average(frames, method, weights, dtype, max_memory="4MiB", threads=2)
    assert_same_bits(got, want)


@pytest.mark.parametrize("method", incremental_methods())
@pytest.mark.parametrize("in_dtype, out_dtype", [
    ("uint16", "uint8"), ("uint8", "float32"), ("float64", "float16"), ("int16", "uint16"), ("float32", "int32"),
])
def test_accumulator_output_types(rng, method, in_dtype, out_dtype):
    frames = _frames(rng, in_dtype, 4, (8, 9, 3))
    weights = _weights(method, rng, 4, scale=3.0)
    assert_same_bits(_accumulate(frames, method, weights, out_dtype).result(),
                     _average(frames, method, weights, out_dtype))


@pytest.mark.parametrize("scale", [0.01, 1e4])
def test_weighted_uint8_follows_the_same_float32_or_float64_sum_as_a_job(rng, scale):
    # small weights: jobs use a float32 sum; large ones rule it out after a few frames
    frames = _frames(rng, "uint8", 12, (31, 17, 4))
    weights = _weights("weighted", rng, 12, scale)
    acc = _accumulate(frames, "weighted", weights)
    for k in (1, 3, 12):  # intermediate results too, and they leave the state as it was
        partial = avgstack.Accumulator("weighted")
        for f, w in zip(frames[:k], weights[:k], strict=True):
            partial.add(f, w)
        assert_same_bits(partial.result(), avgstack.average(frames[:k], weights[:k]))
    assert_same_bits(acc.result(), avgstack.average(frames, weights))
    assert_same_bits(acc.result(), avgstack.average(frames, weights))


@pytest.mark.parametrize("method", incremental_methods())
@pytest.mark.parametrize("in_dtype", ["uint8", "int32", "float64", "float16"])
def test_save_load_resume_equals_one_run(rng, tmp_path, method, in_dtype):
    frames = _frames(rng, in_dtype, 7, (10, 6, 3))
    weights = _weights(method, rng, 7)
    whole = _accumulate(frames, method, weights)
    first = _accumulate(frames[:3], method, None if weights is None else weights[:3])
    path = tmp_path / "state.npz"
    first.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]  # no temporary left
    resumed = avgstack.Accumulator.load(path)
    assert resumed.count == 3 and resumed.shape == (10, 6, 3)
    for i in range(3, 7):
        resumed.add(frames[i], None if weights is None else weights[i])
    assert_same_bits(resumed.result(), whole.result())
    assert_same_bits(resumed.result(), _average(frames, method, weights))
    # the file is a plain npz numpy reads without pickle
    with np.load(path, allow_pickle=False) as npz:
        assert "meta" in npz.files and any(f.startswith("state/") for f in npz.files)


@pytest.mark.parametrize("in_dtype", ["uint8", "int32", "float64"])
def test_state_grows_for_more_frames_exactly(rng, tmp_path, monkeypatch, in_dtype):
    monkeypatch.setattr(accumulator_module, "FIRST_CAPACITY", 2)
    monkeypatch.setattr(accumulator_module, "GROWTH", 3)
    frames = _frames(rng, in_dtype, 20, (3, 4))
    if in_dtype == "float64":  # sums that overflow float64 use the scaled path
        frames[0][0, 0], frames[1][0, 0], frames[2][0, 0] = 1.7e308, 1.7e308, -1.0
    acc = _accumulate(frames[:5], "mean")
    acc.save(tmp_path / "s.npz")
    acc = avgstack.Accumulator.load(tmp_path / "s.npz")
    for f in frames[5:]:
        acc.add(f)
    assert_same_bits(acc.result(), avgstack.average(frames))


def test_mismatched_frames_and_weights_are_refused(rng):
    acc = avgstack.Accumulator()
    acc.add(np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(avgstack.IncompatibleInputsError, match="expected 5x4 with 3"):
        acc.add(np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(avgstack.IncompatibleInputsError, match="uint16"):
        acc.add(np.zeros((4, 5, 3), np.uint16))
    with pytest.raises(avgstack.UsageError, match="every frame or with none"):
        acc.add(np.zeros((4, 5, 3), np.uint8), 0.5)
    with pytest.raises(avgstack.UsageError, match="numpy array"):
        acc.add([[1, 2]])
    assert acc.count == 1
    with pytest.raises(avgstack.UsageError, match="no frames"):
        avgstack.Accumulator().result()
    with pytest.raises(avgstack.UsageError, match="unknown method"):
        avgstack.Accumulator("mode")
    with pytest.raises(avgstack.UsageError, match="finite"):
        avgstack.Accumulator().add(np.zeros((2, 2), np.uint8), float("nan"))


def test_budget_is_checked(rng):
    acc = avgstack.Accumulator(max_memory="1MiB")
    with pytest.raises(avgstack.BudgetError, match="raise max_memory"):
        acc.add(np.zeros((1000, 1000), np.float32))


def test_caller_arrays_unchanged_and_odd_layouts(rng):
    big = random_image(rng, (12, 20, 3), np.uint16)
    frames = [big[:, ::2], big[:, 1::2].astype(">u2"), np.ascontiguousarray(big[:, :10])]
    before = [f.copy() for f in frames]
    acc = _accumulate(frames, "mean")
    for f, b in zip(frames, before, strict=True):
        assert_same_bits(f, b)
    assert_same_bits(acc.result(), avgstack.average([np.ascontiguousarray(f, "=u2") for f in frames]))


def test_methods_without_incremental_support_are_refused(monkeypatch):
    class WholeCube(Reducer):
        kind = CUBE

        @classmethod
        def state_buffers(cls, spec, shape):
            return []

    monkeypatch.setitem(METHODS, "cube-only", lambda spec: WholeCube)
    assert "cube-only" not in incremental_methods()
    acc = avgstack.Accumulator("cube-only")
    with pytest.raises(avgstack.UsageError, match="cannot be computed frame by frame"):
        acc.add(np.zeros((2, 2), np.uint8))


def test_damaged_or_foreign_state_files(tmp_path, rng):
    acc = _accumulate(_frames(rng, "uint8", 2, (4, 4)), "mean")
    good = tmp_path / "s.npz"
    acc.save(good)
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_bytes(b"hello")
    np.savez(tmp_path / "other.npz", meta=np.array('{"format": "something"}'))
    np.savez(tmp_path / "future.npz", meta=np.array('{"format": "avgstack-accumulator", "version": 99}'))
    for name, needle in [("cut", "state file"), ("text", "not an avgstack state file"),
                         ("other", "not an avgstack state file"), ("future", "version 99"),
                         ("missing", "no such state file")]:
        with pytest.raises(avgstack.InputError, match=needle):
            avgstack.Accumulator.load(tmp_path / f"{name}.npz")
