"""Issue 8: the plan owns every byte.

The executor allocates from the plan's declarations: a property test counts
what a run really allocates (tracemalloc sees numpy's buffers and every Python
object) and checks it against the plan, and the plan against the budget. The
cases of the issue are regression tests here; those about real peak memory run
``python -m avgstack`` in a subprocess and compare its peak RSS with the
interpreter's baseline plus the budget.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile
from conftest import assert_same_bits, budget_for_bands, cli_env, exact_int_mean, peak_rss_of, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import avgstack
from avgstack.engine import Engine, layout_of, reduce_spec
from avgstack.options import MAX_THREADS, JobOptions
from avgstack.stack import Stack
from avgstack.writing.sinks import ArraySink, choose_sink

MiB = 2**20


def _run_counted(paths, out, options: JobOptions) -> tuple[int, int]:
    """Plan and run a job; return (planned bytes, bytes the run allocated at its peak)."""
    with Stack(paths, options.dtype) as stack:
        sink = (
            ArraySink(layout_of(stack)) if out is None
            else choose_sink(str(out), layout_of(stack), compression=options.compression, tile=options.tile)
        )
        engine = Engine(stack, reduce_spec(stack, options.weights), sink, options.max_memory, options.threads)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            target = sink.result(engine.plan)
            if out is None:
                for _ in engine.bands(target):
                    pass
            else:
                with open(out, "wb") as fh:
                    sink.write(fh, engine.bands(target), engine.plan, engine.threads)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        return engine.plan.memory, peak


_DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    samples=st.sampled_from([1, 3, 4]),
    dtype=st.sampled_from(_DTYPES),
    count=st.integers(1, 5),
    layout=st.sampled_from([("strips", 1), ("strips", 7), ("tiles", 16), ("tiles", 64)]),
    compression=st.sampled_from([None, "zlib", "lzw"]),
    threads=st.integers(1, 8),
    weighted=st.booleans(),
    output=st.sampled_from(["array", "tif", "tif-tiles-zstd", "png"]),
    slack=st.floats(1.0, 4.0),
)
def test_issue8_executor_allocates_no_more_than_the_plan(
    tmp_path_factory, height, width, samples, dtype, count, layout, compression, threads, weighted, output, slack
):
    folder = tmp_path_factory.mktemp("stack")
    rng = np.random.default_rng(height * 1000 + width)
    kind, size = layout
    paths = []
    for i in range(count):
        frame = (rng.random((height, width, samples)) * 200).astype(dtype)
        extra = {"tile": (size, size)} if kind == "tiles" else {"rowsperstrip": size}
        path = folder / f"f{i}.tif"
        tifffile.imwrite(path, frame if samples > 1 else frame[:, :, 0], compression=compression,
                         photometric="rgb" if samples >= 3 else "minisblack", **extra)
        paths.append(str(path))
    if output == "png" and (dtype not in ("uint8", "uint16") or samples == 2):
        output = "tif"
    out = None if output == "array" else folder / f"out.{output.split('-')[0]}"
    opts = {"compression": "zstd", "tile": 32} if output == "tif-tiles-zstd" else {}
    weights = (0.5,) * count if weighted else None
    # the smallest budget the planner accepts, times a random factor: bands of every height
    lo, hi = 1, 2**31
    with Stack(paths) as stack:
        sink = ArraySink(layout_of(stack)) if out is None else choose_sink(str(out), layout_of(stack), **opts)
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                Engine(stack, reduce_spec(stack, weights), sink, mid, threads)
                hi = mid
            except avgstack.BudgetError:
                lo = mid + 1
    budget = int(lo * slack)
    options = JobOptions.create(weights, max_memory=budget, threads=threads, **opts)
    planned, allocated = _run_counted(paths, out, options)
    assert planned <= budget
    assert allocated <= planned, f"allocated {allocated} bytes, planned {planned}"


def test_issue8_row_split_threads_are_counted_at_their_part_height(tmp_path):
    """Regression: 4 threads allocated workers x tallest part rows (41.2 MB) against a 39.4 MB plan."""
    rng = np.random.default_rng(8)
    paths = []
    for i in range(3):
        path = tmp_path / f"f{i}.tif"
        tifffile.imwrite(path, rng.random((1000, 1024)), tile=(128, 128))
        paths.append(str(path))
    options = JobOptions.create(max_memory=int(37.6 * MiB), threads=4)
    planned, allocated = _run_counted(paths, None, options)
    assert allocated <= planned <= options.max_memory


def test_issue8_huge_thread_counts_are_capped_with_a_note(tmp_path):
    """Regression: -j 1000000000 ran for hours while the planner tried every thread count."""
    frames = [np.full((40, 30), v, np.uint8) for v in (1, 3)]
    paths = []
    for i, f in enumerate(frames):
        tifffile.imwrite(tmp_path / f"f{i}.tif", f)
        paths.append(tmp_path / f"f{i}.tif")
    started = time.monotonic()
    proc = run_cli(["-o", tmp_path / "out.tif", *paths, "-j", "1000000000"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == f"avgstack: warning: 1000000000 threads asked for; using at most {MAX_THREADS}"
    assert time.monotonic() - started < 60
    assert (tifffile.imread(tmp_path / "out.tif") == 2).all()
    batch = tmp_path / "jobs.toml"
    batch.write_text(
        f'threads = {2**63 - 1}\n[[jobs]]\noutput = "b.tif"\ninputs = ["f0.tif", "f1.tif"]\n'
    )
    proc = run_cli(["--batch", batch])
    assert proc.returncode == 0, proc.stderr
    assert (tifffile.imread(tmp_path / "b.tif") == 2).all()


def _pngs(folder, count, shape, rng):
    frames = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
    paths = []
    for i, f in enumerate(frames):
        paths.append(str(folder / f"p{i}.png"))
        assert cv2.imwrite(paths[-1], f)
    return frames, paths


def test_issue8_png_stack_too_big_for_one_pass_runs_in_passes(tmp_path):
    """Regression: PNGs whose result did not fit ended in 'internal error: ValueError ... not in bands'."""
    rng = np.random.default_rng(81)
    frames, paths = _pngs(tmp_path, 3, (300, 200, 4), rng)
    out = tmp_path / "out.tif"
    budget = budget_for_bands(paths, out, minimum_bands=2, threads=1)
    plan = avgstack.plan_to_file(paths, out, max_memory=budget, threads=1)
    assert plan.passes > 1 and plan.bands == plan.passes
    assert any("passes" in line for line in plan.lines())
    report = avgstack.average_to_file(paths, out, max_memory=budget, threads=1)
    assert report.bands == plan.passes
    bgr = exact_int_mean(frames)
    assert_same_bits(tifffile.imread(out), bgr[..., [2, 1, 0, 3]])
    # the API returns the same, in OpenCV's layout, in passes too (at the smallest budget it accepts)
    lo, hi = 1, 2**30
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            progress: list = []
            whole = avgstack.average(paths, max_memory=mid, threads=1, progress=progress.append)
            hi = mid
        except avgstack.BudgetError:
            lo = mid + 1
    whole = avgstack.average(paths, max_memory=lo, threads=1, progress=progress.append)
    assert_same_bits(whole, bgr)
    assert max(p.bands for p in progress) > 1


def test_issue8_png_frame_larger_than_the_budget_is_refused_before_reading(tmp_path):
    rng = np.random.default_rng(82)
    _, paths = _pngs(tmp_path, 2, (400, 300, 3), rng)
    proc = run_cli(["-o", tmp_path / "out.tif", *paths, "-m", "300KiB"])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "decoded whole" in lines[0] and "--max-memory" in lines[0], proc.stderr
    with pytest.raises(avgstack.BudgetError, match="max_memory"):
        avgstack.average(paths, max_memory="300KiB")


@pytest.mark.slow
def test_issue8_png_passes_stay_within_the_budget(tmp_path, baseline):
    rng = np.random.default_rng(83)
    _, paths = _pngs(tmp_path, 3, (1500, 2000, 4), rng)  # 12 MB per frame
    budget = 20 * MiB
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-v", "-o", str(tmp_path / "out.tif"), *paths, "-m", str(budget)], tmp_path
    )
    assert code == 0, stderr
    assert "passes" in stderr
    assert peak - baseline < budget, f"peak {peak / MiB:.1f} MiB, baseline {baseline / MiB:.1f} MiB"


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".webp", ".png", ".bmp", ".ppm"])
def test_issue8_opencv_encoders_are_counted(tmp_path, baseline, ext):
    """Regression: .webp output went 323 MiB over the budget, .png/.bmp/.ppm about 47 MiB."""
    rng = np.random.default_rng(84)
    frames = [rng.integers(0, 256, (1000, 1500, 3), dtype=np.uint8) for _ in range(2)]
    paths = []
    for i, f in enumerate(frames):
        paths.append(str(tmp_path / f"f{i}.tif"))
        tifffile.imwrite(paths[-1], f, photometric="rgb")
    budget = 48 * MiB
    out = tmp_path / f"out{ext}"
    code, peak, stderr = peak_rss_of(["-m", "avgstack", "-o", str(out), *paths, "-m", str(budget)], tmp_path)
    if code == 2:  # the encoder does not fit: refused before reading, nothing written
        assert "needs at least" in stderr and not out.exists()
    else:
        assert code == 0, stderr
        assert peak - baseline < budget, f"peak {peak / MiB:.1f} MiB, baseline {baseline / MiB:.1f} MiB"
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", str(out), *paths, "-m", str(4 * budget)], tmp_path
    )
    assert code == 0, stderr
    assert peak - baseline < 4 * budget


@pytest.mark.slow
def test_issue8_lzma_tiles_on_four_threads_are_counted(tmp_path, baseline):
    """Regression: `-c lzma --tile 256 -j 4` went 43 MiB over the budget."""
    rng = np.random.default_rng(85)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"f{i}.tif"))
        tifffile.imwrite(paths[-1], rng.integers(0, 256, (1024, 2048, 4), dtype=np.uint8), photometric="rgb",
                         extrasamples=["unassalpha"])
    budget = 64 * MiB
    code, peak, stderr = peak_rss_of(
        ["-m", "avgstack", "-o", str(tmp_path / "out.tif"), *paths, "-m", str(budget),
         "-c", "lzma", "--tile", "256", "-j", "4"], tmp_path,
    )
    assert code == 0, stderr
    assert peak - baseline < budget, f"peak {peak / MiB:.1f} MiB, baseline {baseline / MiB:.1f} MiB"


def test_issue8_library_changes_no_process_state():
    """Importing and running avgstack sets no environment variable (it used to set OPENCV_IO_MAX_IMAGE_PIXELS)."""
    code = (
        "import os, numpy as np, cv2; before = dict(os.environ); import avgstack;"
        "avgstack.average([np.zeros((4, 4, 3), np.uint8)] * 2);"
        "import avgstack.reading.opencv;"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())"
    )
    env = {k: v for k, v in cli_env().items() if not k.startswith("OPENCV_")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
