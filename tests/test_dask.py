"""Running on a Dask cluster: the same bits as a local run, the same errors, workers that die.

A module-scoped ``LocalCluster`` (processes, 2 workers, 1 thread each) runs the
API tests; the command line runs against ``dask scheduler --scheduler-file``
and two ``dask worker`` subprocesses. Every output is compared byte for byte
with the local run of the same job. Images are generated with seeded numpy
generators into ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dask
import distributed
import numpy as np
import pytest
import tifffile
from clihelpers import cli_env
from clihelpers import run as run_cli
from conftest import assert_same_bits, random_image, varied_floats
from distributed.diagnostics.plugin import WorkerPlugin
from faultfiles import Snapshot, corrupt_segment, temp_files

import avgstack
import avgstack.writing.tiff as tiff_writer
from avgstack.cluster import connect as cluster_connect
from avgstack.job import FileJob
from avgstack.options import JobOptions
from avgstack.reducers import METHODS

PACKAGE_ROOT = str(Path(avgstack.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parent)
#: Wide enough for several output strips per band, tall enough for several tasks.
SHAPE = (400, 1000, 4)
BUDGET = "16MiB"


def _cluster_env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, TESTS])}


def _local_cluster(**config) -> tuple[distributed.LocalCluster, distributed.Client]:
    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=_cluster_env(),
        )
    return cluster, distributed.Client(cluster, set_as_default=False)


@pytest.fixture(scope="module")
def client():
    cluster, client = _local_cluster()
    yield client
    client.close()
    cluster.close()


def _stack(folder: Path, rng, count=5, dtype="uint8", **kwargs) -> list[str]:
    paths = []
    for i in range(count):
        if np.dtype(dtype).kind == "f":
            data = varied_floats(rng, SHAPE, dtype, headroom=8)
        else:
            data = random_image(rng, SHAPE, dtype)
        path = folder / f"frame{i}.tif"
        tifffile.imwrite(path, data, photometric="rgb", extrasamples=["unassalpha"], **kwargs)
        paths.append(str(path))
    return paths


#: Parameters the methods require (the others have defaults).
REQUIRED = {"percentile": {"percentile": 30.0}}


def _run(paths, out, method, client=None, **options) -> avgstack.Report:
    weights = np.linspace(-0.5, 1.5, len(paths)).tolist() if method == "weighted" else None
    options = {**REQUIRED.get(method, {}), **options}
    opts = JobOptions.create(weights, method=None if method == "weighted" else method, client=client, **options)
    with FileJob(paths, out, opts) as job:
        return job.run()


LAYOUTS = {
    "strips": {},
    "strips-lzw": {"compression": "lzw"},
    "tiles": {"tile": 64},
    "tiles-zstd": {"tile": 64, "compression": "zstd"},
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_file_bit_identical_to_local(client, tmp_path, rng, method, layout):
    paths = _stack(tmp_path, rng, rowsperstrip=16)
    here, there = tmp_path / "local.tif", tmp_path / "dask.tif"
    local = _run(paths, here, method, max_memory=BUDGET, **LAYOUTS[layout])
    remote = _run(paths, there, method, client, max_memory=BUDGET, **LAYOUTS[layout])
    assert remote.bands > 1, "the job should be cut into several tasks"
    assert there.read_bytes() == here.read_bytes()
    assert (remote.clipped, remote.bytes_read) == (local.clipped, local.bytes_read)


@pytest.mark.parametrize(
    ("dtype", "out_dtype", "inputs"),
    [("uint16", None, {"tile": (32, 32), "compression": "zlib"}), ("float32", None, {"rowsperstrip": 5}),
     ("uint8", "float32", {"rowsperstrip": 3, "compression": "lzw"})],
)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_sample_types_bit_identical(client, tmp_path, rng, method, dtype, out_dtype, inputs):
    paths = _stack(tmp_path, rng, dtype=dtype, **inputs)
    here, there = tmp_path / "local.tif", tmp_path / "dask.tif"
    _run(paths, here, method, dtype=out_dtype, compression="deflate", max_memory="16MiB")
    _run(paths, there, method, client, dtype=out_dtype, compression="deflate", max_memory="16MiB")
    assert there.read_bytes() == here.read_bytes()


@pytest.mark.parametrize("layout", ["strips-lzw", "tiles"])
def test_bigtiff_bit_identical(client, tmp_path, rng, monkeypatch, layout):
    # a BigTIFF over 4 GiB does not fit a test: lower the threshold for the writer on this machine
    monkeypatch.setattr(tiff_writer, "needs_bigtiff", lambda *a: True)
    paths = _stack(tmp_path, rng, count=3)
    here, there = tmp_path / "local.tif", tmp_path / "dask.tif"
    local = _run(paths, here, "mean", max_memory=BUDGET, **LAYOUTS[layout])
    remote = _run(paths, there, "mean", client, max_memory=BUDGET, **LAYOUTS[layout])
    assert local.bigtiff and remote.bigtiff
    assert there.read_bytes() == here.read_bytes()
    with tifffile.TiffFile(there) as tif:
        assert tif.is_bigtiff


def test_average_with_arrays_and_progress(client, tmp_path, rng):
    paths = _stack(tmp_path, rng, count=3)
    frames = [*paths, random_image(rng, SHAPE, "uint8")[..., [2, 1, 0, 3]]]
    weights = [0.25, -1.0, 0.5, 2.0]
    events: list[avgstack.Progress] = []
    result = avgstack.average(frames, weights, max_memory=BUDGET, client=client, progress=events.append)
    assert_same_bits(result, avgstack.average(frames, weights, max_memory=BUDGET))
    assert len(events) > 1 and events[-1].done == events[-1].total
    assert [e.done for e in events] == sorted(e.done for e in events)


def test_plan_names_the_cluster(client, tmp_path, rng):
    paths = _stack(tmp_path, rng, count=2)
    plan = avgstack.plan_to_file(paths, tmp_path / "out.tif", max_memory=BUDGET, client=client)
    line = plan.lines()[-1]
    assert line.startswith("cluster: Dask scheduler") and "2 worker(s)" in line
    assert plan.threads == 2 and not (tmp_path / "out.tif").exists()


def test_corrupt_input_same_error_as_local(client, tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = _stack(tmp_path, rng, count=2, rowsperstrip=8, compression="zlib")
    corrupt_segment(good[1], tmp_path / "bad.tif", 17)
    out = tmp_path / "avg.tif"
    out.write_bytes(b"previous output")
    kept = Snapshot([out])
    errors = []
    for c in (None, client):
        with pytest.raises(avgstack.AvgstackError) as info:
            avgstack.average_to_file([good[0], "bad.tif"], out, max_memory=BUDGET, client=c)
        errors.append(info.value)
    local, remote = errors
    assert type(remote) is type(local) is avgstack.ReadError
    assert str(remote) == str(local) and str(remote).startswith("bad.tif: ")
    assert remote.exit_code == 1
    kept.assert_unchanged()
    assert temp_files(tmp_path) == []


class _Check:
    """A stand-in client whose workers see other files: the refusal is checked without a second machine."""

    scheduler = type("S", (), {"address": "tcp://elsewhere:8786"})()

    def __init__(self, seen):
        self.seen = seen

    def run(self, function, *args, on_error="raise"):
        return {"tcp://w1:1": (avgstack.__version__, self.seen)}

    def run_on_scheduler(self, function, *args):
        return avgstack.__version__, []


def test_workers_that_do_not_see_inputs_are_refused(tmp_path, rng):
    paths = _stack(tmp_path, rng, count=2)
    with pytest.raises(avgstack.InputError, match=r"frame1\.tif: Dask worker tcp://w1:1 sees no such file.*shared"):
        cluster_connect.check_workers(_Check([os.path.getsize(paths[0]), "no such file"]), paths, paths)
    with pytest.raises(avgstack.InputError, match=r"sees 7 bytes, not"):
        cluster_connect.check_workers(_Check([7, os.path.getsize(paths[1])]), paths, paths)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    options = JobOptions.create(scheduler_address="tcp://127.0.0.1:1")
    with pytest.raises(avgstack.ClusterError, match=r"avgstack\[dask\]"), cluster_connect.open_client(options):
        pass


def test_options_are_exclusive(client):
    with pytest.raises(avgstack.UsageError, match="at most one"):
        JobOptions.create(client=client, scheduler_file="s.json")
    with pytest.raises(avgstack.UsageError, match="distributed.Client"):
        JobOptions.create(client="tcp://head:8786")


# -- workers that die -------------------------------------------------------------------------


class Killer(WorkerPlugin):
    """Make a worker process exit in the middle of a task after the first band; once (marker) or always."""

    def __init__(self, marker: str | None) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        from avgstack.cluster import remote

        original, marker = remote.run_band, self.marker

        def deadly(task, *args, **kwargs):
            if task.band.start > 0 and (marker is None or not os.path.exists(marker)):
                if marker is not None:
                    Path(marker).touch()
                os._exit(1)
            return original(task, *args, **kwargs)

        remote.run_band = deadly


def test_worker_killed_mid_run_is_retried(tmp_path, rng):
    paths = _stack(tmp_path, rng, count=3)
    here, there = tmp_path / "local.tif", tmp_path / "dask.tif"
    _run(paths, here, "mean", max_memory=BUDGET, compression="lzw")
    cluster, client = _local_cluster()
    try:
        client.register_plugin(Killer(str(tmp_path / "killed")))
        report = _run(paths, there, "mean", client, max_memory=BUDGET, compression="lzw")
    finally:
        client.close()
        cluster.close()
    assert (tmp_path / "killed").exists(), "a worker should have died"
    assert report.bands > 1
    assert there.read_bytes() == here.read_bytes()


def test_workers_dying_every_time_fail_cleanly(tmp_path, rng):
    paths = _stack(tmp_path, rng, count=2)
    out = tmp_path / "avg.tif"
    out.write_bytes(b"previous output")
    kept = Snapshot([out])
    cluster, client = _local_cluster(**{"distributed.scheduler.allowed-failures": 1})
    try:
        client.register_plugin(Killer(None))
        with pytest.raises(avgstack.ProcessingError, match="Dask workers died computing rows") as info:
            _run(paths, out, "mean", client, max_memory=BUDGET)
    finally:
        client.close()
        cluster.close()
    assert info.value.exit_code == 1
    kept.assert_unchanged()
    assert temp_files(tmp_path) == []


# -- the command line against `dask scheduler` and `dask worker` -----------------------------------


@pytest.fixture(scope="module")
def scheduler_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    path = folder / "scheduler.json"
    env = dict(cli_env(), PYTHONPATH=os.pathsep.join([PACKAGE_ROOT, TESTS]))
    dask_cli = [sys.executable, "-m", "dask"]  # the `dask` command of this interpreter
    common = {"env": env, "cwd": folder, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([*dask_cli, "scheduler", "--scheduler-file", str(path), "--port", "0",
                               "--no-dashboard"], **common)]
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline, "dask scheduler did not start"
            time.sleep(0.1)
        for _ in range(2):
            procs.append(subprocess.Popen([*dask_cli, "worker", "--scheduler-file", str(path), "--nthreads", "1",
                                           "--no-dashboard", "--no-nanny"], **common))
        with distributed.Client(scheduler_file=str(path), set_as_default=False) as c:
            c.wait_for_workers(2, timeout=60)
        yield str(path)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_cli_with_scheduler_file(scheduler_file, tmp_path, rng):
    paths = _stack(tmp_path, rng, count=3)
    args = ["-m", BUDGET, "--tile", "64", "-c", "zstd", *paths, "--weights", "0.5", "-0.25", "1"]
    local = run_cli(["-o", tmp_path / "local.tif", *args])
    remote = run_cli(["-v", "-o", tmp_path / "dask.tif", "--scheduler-file", scheduler_file, *args])
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert (tmp_path / "dask.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()
    assert "Dask scheduler tcp://" in remote.stderr and "2 worker(s)" in remote.stderr


def test_cli_batch_with_scheduler_key(scheduler_file, tmp_path, rng):
    paths = _stack(tmp_path, rng, count=2)
    batch = tmp_path / "jobs.toml"
    batch.write_text(
        f'scheduler_file = "{os.path.relpath(scheduler_file, tmp_path)}"\nmax_memory = "{BUDGET}"\n'
        f'[[jobs]]\noutput = "dask.tif"\ninputs = {paths!r}\n'.replace("'", '"')
    )
    proc = run_cli(["--batch", batch])
    assert proc.returncode == 0, proc.stderr
    run_cli(["-o", tmp_path / "local.tif", "-m", BUDGET, *paths])
    assert (tmp_path / "dask.tif").read_bytes() == (tmp_path / "local.tif").read_bytes()


def test_cli_refuses_both_scheduler_options(tmp_path):
    proc = run_cli(["-o", tmp_path / "o.tif", "--scheduler-address", "tcp://h:1", "--scheduler-file", "f", "a.tif"])
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_cli_unreachable_scheduler_exit_2(tmp_path, rng):
    paths = _stack(tmp_path, rng, count=1)
    proc = run_cli(["-o", tmp_path / "o.tif", "--scheduler-file", tmp_path / "missing.json", *paths])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [(f"avgstack: error: {tmp_path / 'missing.json'}: no such scheduler file "
                                        "(--scheduler-file)")]


def test_workers_without_avgstack_are_refused(tmp_path, rng):
    paths = _stack(tmp_path, rng, count=1)

    class NoPackage(_Check):
        def run(self, function, *args, on_error="raise"):
            assert on_error == "return"
            return {"tcp://w1:1": ModuleNotFoundError("No module named 'avgstack'")}

    with pytest.raises(avgstack.ClusterError, match=r"worker tcp://w1:1 cannot run avgstack .*avgstack\[dask\]"):
        cluster_connect.check_workers(NoPackage([]), paths, paths)
