#!/usr/bin/env python3
"""Benchmark avgstack against libvips, plain numpy/OpenCV, ImageMagick and the I/O floor.

Stacks are generated once into a cache folder outside the repository and
reused. Every tool runs in its own process; tools alternate within each
repetition (A B C, A B C, ...) and the table reports the median wall time
and the median peak RSS that the kernel measured for the child (wait4).

Examples::

    python scripts/bench.py --quick                       # CI smoke run, ~1000x1000
    python scripts/bench.py --workloads rgba8-6000,lzw-tiled-4000 --repeat 3
    python scripts/bench.py --huge --workloads huge-30000 --repeat 1
    python scripts/bench.py --dask                        # 6000x6000 stacks on 1 and 2 local Dask workers
    python scripts/bench.py --workloads rgba8-6000-median,rgba8-6000-sigma-clip --repeat 1

Robust methods (``--method median``, ``sigma-clip``) are compared with libvips
``bandrank`` (its median, the one robust combine it has), numpy/astropy in
memory, and ccdproc ``combine`` on gray frames.

``--dask`` starts ``dask scheduler`` and 1, then 2, ``dask worker`` processes (one thread
each) on this machine, runs avgstack with ``--scheduler-file`` against them, and reports
the wall time, the scaling and the client's peak RSS (the workers' memory is their own),
and whether each output is byte-identical to the local run's.

Extras: ``pip install .[bench]`` (pyvips, pyvips-binary, psutil); ``.[dask]`` for ``--dask``. Tools that
are missing are reported as such, not silently dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 2  # bump when the generated content or layout changes
MiB = 2**20
GB = 1e9


# ---------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StackSpec:
    """A stack of generated frames on disk."""

    key: str
    frames: int
    width: int
    height: int
    samples: int
    dtype: str
    compression: str | None = None  # tifffile name: None, "lzw", "deflate"
    predictor: bool = False
    tile: int | None = None
    rowsperstrip: int = 16

    @property
    def raw_frame_bytes(self) -> int:
        return self.width * self.height * self.samples * np.dtype(self.dtype).itemsize

    def describe(self) -> str:
        kind = {4: "RGBA", 3: "RGB", 1: "gray"}[self.samples]
        comp = self.compression or "uncompressed"
        if self.predictor:
            comp += "+predictor"
        layout = f"tiled {self.tile}" if self.tile else f"strips of {self.rowsperstrip} rows"
        return f"{self.frames} x {self.width}x{self.height} {kind} {self.dtype}, {comp}, {layout}"


@dataclass(frozen=True)
class Workload:
    name: str
    stack: StackSpec
    weights: tuple[float, ...] | None = None
    startup: bool = False  # also time launch -> first read of an input (avgstack only)
    method: str = "mean"


def _weights(n: int) -> tuple[float, ...]:
    return (0.01,) + (-0.002,) * (n - 1)


def build_workloads(quick: bool, huge: bool) -> dict[str, Workload]:
    n = 11
    size6, size4, size30 = (1000, 1000, 1000) if quick else (6000, 4000, 30000)
    suffix = "-quick" if quick else ""
    rgba8 = StackSpec(f"rgba8-{size6}", n, size6, size6, 4, "uint8", rowsperstrip=16)
    lzw = StackSpec(f"lzw-tiled-{size4}", n, size4, size4, 4, "uint8", "lzw", True, tile=256)
    rgb16 = StackSpec(f"rgb16-deflate-{size4}", n, size4, size4, 3, "uint16", "deflate", True, rowsperstrip=32)
    hugestack = StackSpec(f"rgba8-{size30}", n, size30, size30, 4, "uint8", rowsperstrip=16)
    small = StackSpec("rgba8-256", n, 256, 256, 4, "uint8", rowsperstrip=16)
    gray16 = StackSpec(f"gray16-{size4}", n, size4, size4, 1, "uint16", rowsperstrip=16)
    loads = [
        Workload("startup" + suffix, small, startup=True),
        Workload("rgba8-6000" + suffix, rgba8),
        Workload("rgba8-6000-weighted" + suffix, rgba8, _weights(n)),
        Workload("lzw-tiled-4000" + suffix, lzw),
        Workload("rgb16-deflate" + suffix, rgb16),
        Workload("rgba8-6000-median" + suffix, rgba8, method="median"),
        Workload("rgba8-6000-sigma-clip" + suffix, rgba8, method="sigma-clip"),
        Workload("gray16-4000-median" + suffix, gray16, method="median"),
        Workload("gray16-4000-sigma-clip" + suffix, gray16, method="sigma-clip"),
    ]
    if huge:
        loads.append(Workload("huge-30000" + suffix, hugestack))
    return {w.name: w for w in loads}


# ---------------------------------------------------------------------------
# stack generation (streaming: a band of rows at a time)
# ---------------------------------------------------------------------------


def _content(spec: StackSpec, frame: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0:r1 of frame ``frame``: smooth gradients + waves + noise, deterministic."""
    w, h, s = spec.width, spec.height, spec.samples
    dt = np.dtype(spec.dtype)
    top = float(np.iinfo(dt).max)
    y = (np.arange(r0, r1, dtype=np.float32) / h)[:, None]
    x = (np.arange(w, dtype=np.float32) / w)[None, :]
    phase = 0.37 * frame
    out = np.empty((r1 - r0, w, s), dt)
    rng = np.random.default_rng([frame, r0, spec.width, spec.samples])
    colour = s - 1 if s == 4 else s
    for c in range(colour):
        base = 0.45 + 0.25 * (x * (0.6 + 0.1 * c) + y * (0.4 - 0.1 * c))
        base = base + 0.15 * np.sin(6.2832 * (x * (2 + c) + phase)) * np.cos(6.2832 * (y * (1.5 + 0.5 * c) - phase))
        noise = rng.standard_normal((r1 - r0, w), dtype=np.float32) * 0.02
        v = (base + noise) * top
        np.clip(v, 0, top, out=v)
        out[:, :, c] = np.rint(v)
    if s == 4:  # alpha: opaque except a soft vignette in one corner
        a = 1.0 - np.clip(1.5 - 2.0 * np.hypot(x, y), 0, 1) * 0.6
        out[:, :, 3] = np.rint(np.broadcast_to(a, (r1 - r0, w)) * top)
    return out


def _strip_encoder(spec: StackSpec):
    import tifffile

    code = {None: 1, "lzw": 5, "deflate": 8}[spec.compression]
    compress = tifffile.TIFF.COMPRESSORS[code] if code != 1 else None
    predict = tifffile.TIFF.PREDICTORS[2] if spec.predictor else None

    def encode(strip: np.ndarray) -> bytes:
        data = predict(strip, axis=-2) if predict is not None else strip
        return compress(data) if compress is not None else data.tobytes()

    return encode


def _frame_segments(spec: StackSpec, frame: int):
    """Yield encoded strips (bytes) or tiles (arrays), top to bottom, a band at a time."""
    if spec.tile:
        t = spec.tile
        for r0 in range(0, spec.height, t):
            r1 = min(spec.height, r0 + t)
            band = _content(spec, frame, r0, r1)
            for c0 in range(0, spec.width, t):
                yield band[:, c0 : c0 + t]
    else:
        encode = _strip_encoder(spec)
        rps = spec.rowsperstrip
        band_rows = max(rps, (16 * MiB // max(1, spec.width * spec.samples * 4)) // rps * rps)
        for b0 in range(0, spec.height, band_rows):
            b1 = min(spec.height, b0 + band_rows)
            band = _content(spec, frame, b0, b1)
            for r in range(0, b1 - b0, rps):
                yield encode(band[r : r + rps])


def write_frame(spec: StackSpec, frame: int, path: Path) -> None:
    import tifffile

    tmp = path.with_suffix(".tmp")
    kwargs = dict(
        shape=(spec.height, spec.width, spec.samples) if spec.samples > 1 else (spec.height, spec.width),
        dtype=spec.dtype,
        photometric="rgb" if spec.samples >= 3 else "minisblack",
        planarconfig="contig" if spec.samples > 1 else None,
        extrasamples=["unassalpha"] if spec.samples == 4 else None,
        compression=spec.compression,
        predictor=2 if spec.predictor else None,
        software="avgstack-bench",
        metadata=None,
        bigtiff=spec.raw_frame_bytes > 2**32 - 2**26,
    )
    if spec.tile:
        kwargs["tile"] = (spec.tile, spec.tile)
    else:
        kwargs["rowsperstrip"] = spec.rowsperstrip
    tifffile.imwrite(tmp, _frame_segments(spec, frame), **kwargs)
    os.replace(tmp, path)


def stack_dir(cache: Path, spec: StackSpec) -> Path:
    return cache / f"{spec.key}-{spec.compression or 'raw'}-v{GENERATOR_VERSION}"


def stack_ready(cache: Path, spec: StackSpec) -> bool:
    marker = stack_dir(cache, spec) / "stack.json"
    try:
        return json.loads(marker.read_text()) == _spec_json(spec)
    except (OSError, ValueError):
        return False


def _spec_json(spec: StackSpec) -> dict:
    d = dict(spec.__dict__)
    d["generator"] = GENERATOR_VERSION
    return d


def frame_paths(cache: Path, spec: StackSpec) -> list[str]:
    d = stack_dir(cache, spec)
    return [str(d / f"frame{i:02d}.tif") for i in range(spec.frames)]


def ensure_stack(cache: Path, spec: StackSpec) -> list[str]:
    paths = frame_paths(cache, spec)
    if stack_ready(cache, spec) and all(os.path.exists(p) for p in paths):
        return paths
    d = stack_dir(cache, spec)
    d.mkdir(parents=True, exist_ok=True)
    log(f"generating {spec.describe()} in {d}")
    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        write_frame(spec, i, Path(p))
        log(f"  frame {i + 1}/{spec.frames} ({os.path.getsize(p) / MiB:.0f} MiB)")
    (d / "stack.json").write_text(json.dumps(_spec_json(spec)))
    log(f"  generated in {time.perf_counter() - t0:.1f} s")
    return paths


# ---------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------

VIPS_SCRIPT = r"""
import sys, json, pyvips
args = json.loads(sys.argv[1])
files, out, weights = args["files"], args["out"], args["weights"]
ims = [pyvips.Image.new_from_file(f, access="sequential") for f in files]
fmt = ims[0].format
if args.get("method", "mean") != "mean":  # libvips' robust combine: bandrank, default index = median
    res = ims[0].bandrank(ims[1:])
elif weights is None:
    res = pyvips.Image.sum(ims).linear(1.0 / len(ims), 0.5).cast(fmt)
else:
    res = pyvips.Image.sum([im.linear(w, 0) for im, w in zip(ims, weights)]).cast(fmt)
res.tiffsave(out)
"""

NUMPY_SCRIPT = r"""
import sys, json
import numpy as np, cv2
args = json.loads(sys.argv[1])
files, out, weights = args["files"], args["out"], args["weights"]
acc = None
for i, f in enumerate(files):
    frame = cv2.imread(f, cv2.IMREAD_UNCHANGED)
    if frame is None:
        sys.exit(f"cv2.imread failed on {f}")
    if acc is None:
        acc = np.zeros(frame.shape, np.float64)
        dtype = frame.dtype
    if weights is None:
        np.add(acc, frame, out=acc)
    else:  # row blocks keep the float64 temporary small
        w = weights[i]
        for r in range(0, frame.shape[0], 256):
            acc[r:r + 256] += w * frame[r:r + 256]
    del frame
if weights is None:
    acc /= len(files)
np.rint(acc, out=acc)
info = np.iinfo(dtype)
np.clip(acc, info.min, info.max, out=acc)
res = acc.astype(dtype)
del acc
if not cv2.imwrite(out, res, [cv2.IMWRITE_TIFF_COMPRESSION, 1]):
    sys.exit("cv2.imwrite failed")
"""

METHOD_SCRIPT = r"""
import sys, json, warnings
import numpy as np, tifffile
args = json.loads(sys.argv[1])
files, out, method = args["files"], args["out"], args["method"]
stack = np.stack([tifffile.imread(f) for f in files])
dtype = stack.dtype
if method == "median":
    res = np.median(stack, axis=0)
else:
    from astropy.stats import sigma_clip
    warnings.simplefilter("ignore")
    res = sigma_clip(stack, axis=0, sigma=3, maxiters=5, cenfunc="median", stdfunc="std").mean(axis=0)
    res = np.ma.filled(res, 0)
del stack
info = np.iinfo(dtype)
res = np.clip(np.rint(res), info.min, info.max).astype(dtype)
tifffile.imwrite(out, res, photometric="rgb" if res.ndim == 3 and res.shape[2] >= 3 else "minisblack")
"""

CCDPROC_SCRIPT = r"""
import sys, json, warnings
import numpy as np, tifffile
from astropy.nddata import CCDData
import ccdproc
warnings.simplefilter("ignore")
args = json.loads(sys.argv[1])
files, out, method = args["files"], args["out"], args["method"]
ccds = [CCDData(tifffile.imread(f), unit="adu") for f in files]
dtype = ccds[0].data.dtype
if method == "median":
    res = ccdproc.combine(ccds, method="median")
else:  # one pass of clipping around the median (ccdproc does not iterate), then the mean
    res = ccdproc.combine(ccds, method="average", sigma_clip=True, sigma_clip_low_thresh=3,
                          sigma_clip_high_thresh=3, sigma_clip_func=np.ma.median, sigma_clip_dev_func=np.ma.std)
info = np.iinfo(dtype)
data = np.clip(np.rint(np.asarray(res.data, np.float64)), info.min, info.max).astype(dtype)
tifffile.imwrite(out, data, photometric="minisblack")
"""

FLOOR_SCRIPT = r"""
import sys, json, os, threading
args = json.loads(sys.argv[1])
files, readers = args["files"], args["readers"]
def read(part):
    mv = memoryview(bytearray(8 << 20))
    for f in part:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(mv):
                pass
threads = [threading.Thread(target=read, args=(files[i::readers],)) for i in range(readers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
mv = memoryview(bytearray(8 << 20))
buf = mv
left = args["out_bytes"]
with open(args["out"], "wb", buffering=0) as fh:
    while left > 0:
        left -= fh.write(mv[: min(left, len(buf))])
    if args["fsync"]:
        os.fsync(fh.fileno())
"""


@dataclass
class Tool:
    name: str
    available: bool = True
    why: str = ""  # why unavailable

    def command(self, wl: Workload, files: list[str], out: str) -> list[str] | None:  # pragma: no cover
        raise NotImplementedError

    def skip_reason(self, wl: Workload, files: list[str], mem_available: int) -> str | None:
        return None if self.available else self.why

    produces_image: bool = True


# Runs ``python -m avgstack ARGS`` (the package in SRC first on sys.path, if SRC is
# not empty) and writes the wall-clock time of the first open() of an input (an audit
# hook) to MARKER, if MARKER is not empty: launch -> first read.
AVGSTACK_SCRIPT = r"""
import os, runpy, sys, time
marker, src, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if src:
    sys.path.insert(0, src)
inputs = {os.path.abspath(a) for a in args if os.path.isfile(a)}
seen = []
def hook(event, hook_args):
    if event == "open" and not seen and isinstance(hook_args[0], str) and os.path.abspath(hook_args[0]) in inputs:
        seen.append(time.time())
        with open(marker, "w") as fh:
            fh.write(repr(seen[0]))
if marker:
    sys.addaudithook(hook)
sys.argv = ["avgstack", *args]
runpy.run_module("avgstack", run_name="__main__", alter_sys=True)
"""


class AvgstackTool(Tool):
    marker: str | None = None  # set for start-up workloads
    src: str = ""  # another checkout's package folder (--baseline); "" for --avgstack-src

    def command(self, wl, files, out):
        args = ["-o", out, *files]
        if wl.method != "mean":
            args += ["--method", wl.method]
        if wl.weights is not None:
            args.append("--weights=" + ",".join(repr(w) for w in wl.weights))
        if self.marker is None and not self.src:
            return [sys.executable, "-m", "avgstack", *args]
        return [sys.executable, "-c", AVGSTACK_SCRIPT, self.marker or "", self.src, *args]


class VipsTool(Tool):
    def command(self, wl, files, out):
        args = {"files": files, "out": out, "weights": list(wl.weights) if wl.weights else None,
                "method": wl.method}
        return [sys.executable, "-c", VIPS_SCRIPT, json.dumps(args)]


class NumpyTool(Tool):
    @staticmethod
    def needs(wl: Workload) -> int:
        s = wl.stack
        samples = s.width * s.height * s.samples
        item = np.dtype(s.dtype).itemsize
        if wl.method == "median":  # every frame, np.median's partitioned copy, a float64 result
            return s.frames * samples * item * 2 + samples * 8 + 256 * MiB
        if wl.method != "mean":  # astropy: float copies of the stack, NaN masks, medians
            return s.frames * samples * (item + 18) + 256 * MiB
        # float64 accumulator + one decoded frame + result + encoder copy, plus libtiff strip scratch
        return samples * (8 + 3 * item) + 256 * MiB

    def skip_reason(self, wl, files, mem_available):
        if not self.available:
            return self.why
        need = self.needs(wl)
        if need > 0.8 * mem_available:
            return f"n/a (needs {need / GB:.1f} GB)"
        return None

    def command(self, wl, files, out):
        if wl.method != "mean":
            args = {"files": files, "out": out, "method": wl.method}
            return [sys.executable, "-c", METHOD_SCRIPT, json.dumps(args)]
        args = {"files": files, "out": out, "weights": list(wl.weights) if wl.weights else None}
        return [sys.executable, "-c", NUMPY_SCRIPT, json.dumps(args)]


class CcdprocTool(Tool):
    def skip_reason(self, wl, files, mem_available):
        if not self.available:
            return self.why
        s = wl.stack
        if wl.method == "mean" or s.samples != 1:
            return "n/a (gray robust combines only)"
        need = s.frames * s.width * s.height * 8 * 3 + 512 * MiB  # float64 CCDData, masked stack, result
        if need > 0.8 * mem_available:
            return f"n/a (needs {need / GB:.1f} GB)"
        return None

    def command(self, wl, files, out):
        args = {"files": files, "out": out, "method": wl.method}
        return [sys.executable, "-c", CCDPROC_SCRIPT, json.dumps(args)]


class MagickTool(Tool):
    exe: str = "convert"

    def skip_reason(self, wl, files, mem_available):
        if not self.available:
            return self.why
        if wl.weights is not None or wl.method != "mean":
            return "n/a (mean only here)"
        s = wl.stack
        need = s.frames * s.width * s.height * s.samples * 4  # Q16-HDRI holds every frame as float
        if need > 0.8 * mem_available:
            return f"n/a (needs {need / GB:.1f} GB)"
        return None

    def command(self, wl, files, out):
        return [self.exe, *files, "-evaluate-sequence", "mean", out]


class FloorTool(Tool):
    produces_image = False

    def __init__(self, name: str, fsync: bool) -> None:
        super().__init__(name)
        self.fsync = fsync
        self.produces_image = False

    readers = 1  # set per workload by fastest_readers()

    def command(self, wl, files, out):
        s = wl.stack
        args = {"files": files, "out": out, "out_bytes": s.raw_frame_bytes, "fsync": self.fsync,
                "readers": self.readers}
        return [sys.executable, "-c", FLOOR_SCRIPT, json.dumps(args)]


def _probe_vips() -> tuple[bool, str, str]:
    try:
        r = subprocess.run(
            [sys.executable, "-c", "import pyvips;print(pyvips.__version__, '%d.%d.%d' % tuple(pyvips.version(i) for i in range(3)))"],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, "not available", str(err)
    if r.returncode != 0:
        return False, "n/a (pip install pyvips pyvips-binary)", ""
    return True, "", r.stdout.strip()


def _probe_magick() -> tuple[bool, str, str]:
    for exe in ("magick", "convert"):
        path = shutil.which(exe)
        if not path:
            continue
        try:
            r = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "ImageMagick" in r.stdout:
            return True, path, r.stdout.splitlines()[0]
    return False, "n/a (ImageMagick not installed)", ""


def build_tools(selected: set[str] | None) -> tuple[list[Tool], dict[str, str]]:
    versions: dict[str, str] = {}
    ok, why, ver = _probe_vips()
    versions["pyvips / libvips"] = ver or why
    tools: list[Tool] = [
        AvgstackTool("avgstack"),
        VipsTool("libvips", ok, why),
        NumpyTool("numpy+OpenCV"),
    ]
    try:
        import ccdproc

        versions["ccdproc"] = ccdproc.__version__
        tools.append(CcdprocTool("ccdproc"))
    except ImportError:
        tools.append(CcdprocTool("ccdproc", False, "n/a (ccdproc not installed)"))
    ok, what, ver = _probe_magick()
    magick = MagickTool("ImageMagick", ok, what if not ok else "")
    if ok:
        magick.exe = what
        versions["ImageMagick"] = ver
    tools.append(magick)
    tools.append(FloorTool("floor: read+write", fsync=False))
    tools.append(FloorTool("floor: read+write+fsync", fsync=True))
    if selected:
        unknown = selected - {t.name for t in tools} - {"floor"}
        if unknown:
            sys.exit(f"bench: unknown tool(s) {', '.join(sorted(unknown))}")
        tools = [t for t in tools if t.name in selected or ("floor" in selected and t.name.startswith("floor"))]
    return tools, versions


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    maxrss: int  # bytes
    rc: int
    launched: float = 0.0  # time.time() just before the child was spawned
    cpu: float = 0.0  # user + system CPU seconds of the child (wait4)
    first_read: float | None = None  # seconds from launch to the first read of an input


@dataclass
class Result:
    workload: str
    tool: str
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None
    failed: str | None = None
    diff: str = ""
    output: str | None = None

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def rss(self) -> float:
        return statistics.median(r.maxrss for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu for r in self.runs)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# The measuring parent: a small process with a fresh address space. Linux
# charges a child's ru_maxrss with the high-water RSS of the address space it
# exec'd from; with vfork/posix_spawn that is its parent's. Spawning tools from
# this tiny runner (no numpy) instead of from the bench process (which holds
# generated bands) keeps every tool's peak RSS its own (plus ~10 MB).
RUNNER_SCRIPT = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["log"], "wb") as err:
        launched = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(job["cmd"], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                env=job["env"], cwd=job["cwd"])
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "rc": proc.returncode,
                      "launched": launched, "cpu": usage.ru_utime + usage.ru_stime}), flush=True)
"""


class Runner:
    """Runs commands one at a time in a separate small process; see RUNNER_SCRIPT."""

    def __init__(self, pythonpath: str) -> None:
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = pythonpath + os.pathsep + self.env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen([sys.executable, "-S", "-c", RUNNER_SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=self.env)

    def run(self, cmd: list[str], log_path: Path, cwd: Path) -> Run:
        job = {"cmd": cmd, "log": str(log_path), "env": self.env, "cwd": str(cwd)}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench runner died")
        r = json.loads(line)
        scale = 1 if sys.platform == "darwin" else 1024
        return Run(r["seconds"], r["maxrss_kib"] * scale, r["rc"], r["launched"], r["cpu"])

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def warm(files: list[str]) -> float:
    """Read every input once (untimed) so the page cache is warm."""
    t0 = time.perf_counter()
    buf = bytearray(8 * MiB)
    mv = memoryview(buf)
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.readinto(mv):
                pass
    return time.perf_counter() - t0


def fastest_readers(files: list[str]) -> tuple[int, dict[int, float]]:
    """How many parallel readers read the (cached) stack fastest here; the floor reads with that many."""
    import threading

    def read(part: list[str]) -> None:
        mv = memoryview(bytearray(8 * MiB))
        for f in part:
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(mv):
                    pass

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=read, args=(files[i::n],)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    cores = os.cpu_count() or 1
    counts = sorted({1, 2, cores, 2 * cores} - {0})
    seconds = {n: min(timed(n) for _ in range(3)) for n in counts}
    return min(seconds, key=seconds.__getitem__), seconds


def compile_package(src: Path) -> None:
    """Byte-compile the benchmarked package, as ``pip install`` does, so start-up is not spent compiling."""
    import compileall

    compileall.compile_dir(str(src / "avgstack"), quiet=1)


def decoder_versions(src: Path) -> str:
    """Which decoder avgstack uses for each TIFF codec, with library versions (from avgstack.reading.codecs)."""
    code = "import avgstack.reading.codecs as c; print(c.describe())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/",
                       env=dict(os.environ, PYTHONPATH=str(src)))
    return r.stdout.strip() if r.returncode == 0 else "n/a (this avgstack has no reading.codecs)"


def _open_result(path: str) -> np.ndarray:
    import tifffile

    try:
        return tifffile.memmap(path, mode="r")
    except ValueError:  # not memory-mappable (compressed or non-contiguous)
        return tifffile.imread(path)


def max_abs_diff(a_path: str, b_path: str) -> int | str:
    a, b = _open_result(a_path), _open_result(b_path)
    if a.ndim == 2:
        a = a[:, :, None]
    if b.ndim == 2:
        b = b[:, :, None]
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    worst = 0
    for r in range(0, a.shape[0], 512):
        d = np.abs(a[r : r + 512].astype(np.int64) - b[r : r + 512].astype(np.int64))
        worst = max(worst, int(d.max()))
    return worst


def disk_needed(cache: Path, loads: list[Workload], n_outputs: int) -> int:
    need = 0
    seen = set()
    for wl in loads:
        s = wl.stack
        if s.key not in seen and not stack_ready(cache, s):
            seen.add(s.key)
            need += s.frames * s.raw_frame_bytes  # compressed stacks are smaller: an upper bound
    biggest_out = max((wl.stack.raw_frame_bytes for wl in loads), default=0)
    return need + n_outputs * biggest_out + 2**30


def machine_info(versions: dict[str, str], avgstack_src: Path) -> list[tuple[str, str]]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import cv2
    import tifffile

    try:
        import imagecodecs

        ic = imagecodecs.__version__
    except ImportError:
        ic = "missing"
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        rev = ""
    r = subprocess.run([sys.executable, "-c", "import avgstack; print(avgstack.__version__)"],
                       capture_output=True, text=True, cwd="/", env=dict(os.environ, PYTHONPATH=str(avgstack_src)))
    av = r.stdout.strip() if r.returncode == 0 else "not importable: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    where = f"checkout {rev}" if avgstack_src == REPO else str(avgstack_src)
    av = f"{av} ({where})"
    info = [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores ({affinity} usable)"),
        ("RAM", f"{ram / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("numpy", np.__version__),
        ("tifffile", tifffile.__version__),
        ("imagecodecs", ic),
        ("OpenCV", cv2.__version__),
        ("avgstack", av),
    ]
    info += list(versions.items())
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "avgstack-bench",
                   help="where stacks and outputs live (default ~/.cache/avgstack-bench)")
    p.add_argument("--workloads", help="comma-separated workload names (default: all but huge)")
    p.add_argument("--tools", help="comma-separated tools (avgstack, libvips, numpy+OpenCV, ccdproc, ImageMagick, floor)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per tool (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="small 1000x1000 stacks, for smoke tests")
    p.add_argument("--huge", action="store_true", help="add huge-30000: 11 x 30000x30000 RGBA (40 GB on disk)")
    p.add_argument("--keep-outputs", action="store_true", help="leave the outputs in CACHE/out")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    p.add_argument("--avgstack-src", type=Path, default=REPO,
                   help="folder holding the avgstack package to benchmark (default: this checkout)")
    p.add_argument("--baseline", type=Path,
                   help="folder holding another avgstack package (e.g. `git archive REV avgstack | tar -x -C DIR`), "
                        "run as tool 'avgstack (baseline)' alternating with the others")
    p.add_argument("--dask", action="store_true",
                   help="run the 6000x6000 workloads on 1 and 2 local Dask workers (see above)")
    args = p.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        p.error("--repeat must be at least 1")

    all_loads = build_workloads(args.quick, args.huge)
    if args.workloads:
        names = [n.strip() for n in args.workloads.split(",") if n.strip()]
        if args.quick:
            names = [n if n.endswith("-quick") else n + "-quick" for n in names]
        if args.huge is False and any(n.startswith("huge") for n in names):
            all_loads = build_workloads(args.quick, True)
        unknown = [n for n in names if n not in all_loads]
        if unknown:
            p.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(all_loads)}")
        loads = [all_loads[n] for n in names]
    else:
        loads = list(all_loads.values())
        if args.dask:
            loads = [wl for wl in loads if wl.name.startswith("rgba8-")]

    avgstack_src = args.avgstack_src.expanduser().resolve()
    if not (avgstack_src / "avgstack" / "__init__.py").exists():
        p.error(f"--avgstack-src {avgstack_src} has no avgstack package")
    tools, versions = build_tools({t.strip() for t in args.tools.split(",")} if args.tools else None)
    if args.baseline is not None:
        base_src = args.baseline.expanduser().resolve()
        if not (base_src / "avgstack" / "__init__.py").exists():
            p.error(f"--baseline {base_src} has no avgstack package")
        compile_package(base_src)
        base = AvgstackTool("avgstack (baseline)")
        base.src = str(base_src)
        tools.insert(1, base)
        versions["avgstack (baseline)"] = str(base_src)
    cache = args.cache.expanduser().resolve()
    if REPO in cache.parents or cache == REPO:
        p.error(f"--cache {cache} is inside the repository; pick a folder outside it")
    cache.mkdir(parents=True, exist_ok=True)
    outdir = cache / "out"
    outdir.mkdir(exist_ok=True)

    n_out = sum(1 for t in tools if t.available) + 1
    need = disk_needed(cache, loads, n_out)
    free = shutil.disk_usage(cache).free
    if need > free:
        print(
            f"bench: refusing to start: needs about {need / GB:.1f} GB free in {cache} "
            f"(stacks not yet generated + outputs), only {free / GB:.1f} GB free. "
            "Free some space, pick fewer workloads, or use --cache on a bigger disk.",
            file=sys.stderr,
        )
        return 2

    try:
        import psutil

        mem_available = psutil.virtual_memory().available
    except ImportError:
        mem_available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")

    compile_package(avgstack_src)
    versions["avgstack decoders"] = decoder_versions(avgstack_src)
    load_start = os.getloadavg()[0]
    runner = Runner(str(avgstack_src))
    if args.dask:
        try:
            return bench_dask(loads, cache, outdir, runner, repeat, avgstack_src)
        finally:
            runner.close()
    baseline = runner.run([sys.executable, "-c", "pass"], outdir / "baseline.log", outdir)
    versions["RSS of an empty python child"] = f"{baseline.maxrss / MiB:.0f} MiB (included in every row)"
    results: list[Result] = []
    bad = False
    for wl in loads:
        files = ensure_stack(cache, wl.stack)
        in_bytes = sum(os.path.getsize(f) for f in files)
        log(f"{wl.name}: {wl.stack.describe()}, {in_bytes / MiB:.0f} MiB on disk; warming page cache")
        log(f"  warm-up read: {warm(files):.2f} s")
        floors = [t for t in tools if isinstance(t, FloorTool)]
        if floors and not wl.startup:
            readers, tried = fastest_readers(files)
            for t in floors:
                t.readers = readers
            log("  cached read with N readers: " + ", ".join(f"{n}: {v:.2f} s" for n, v in tried.items()))
            versions[f"floor readers ({wl.name})"] = f"{readers} (fastest of {', '.join(map(str, tried))})"
        res = {t.name: Result(wl.name, t.name) for t in tools}
        active = []
        for t in tools:
            why = t.skip_reason(wl, files, mem_available)
            if why:
                res[t.name].skipped = why
            else:
                active.append(t)
        safe = {t.name: t.name.replace("+", "_").replace(" ", "_").replace(":", "") for t in tools}
        for rep in range(repeat):
            for t in active:
                r = res[t.name]
                if r.failed:
                    continue
                out = str(outdir / f"{wl.name}.{safe[t.name]}.tif")
                with contextlib.suppress(OSError):
                    os.unlink(out)
                errlog = outdir / f"{wl.name}.{safe[t.name]}.log"
                marker = outdir / "first-read.txt"
                with contextlib.suppress(OSError):
                    marker.unlink()
                if isinstance(t, AvgstackTool):
                    t.marker = str(marker) if wl.startup else None
                run = runner.run(t.command(wl, files, out), errlog, outdir)
                if isinstance(t, AvgstackTool) and wl.startup and marker.exists():
                    run.first_read = float(marker.read_text()) - run.launched
                if run.rc != 0:
                    tail = errlog.read_text(errors="replace").strip().splitlines()[-3:]
                    r.failed = f"exit {run.rc}: {' | '.join(tail)}"
                    log(f"  {t.name}: FAILED {r.failed}")
                    bad = True
                    continue
                r.runs.append(run)
                r.output = out
                first = f", first read after {run.first_read:.3f} s" if run.first_read is not None else ""
                log(f"  run {rep + 1}/{repeat} {t.name}: {run.seconds:.2f} s (CPU {run.cpu:.2f} s){first}, peak RSS {run.maxrss / MiB:.0f} MiB")
        ref = res.get("libvips")
        for t in active:
            r = res[t.name]
            if not t.produces_image or not r.output or r.failed:
                continue
            if t.name == "libvips" or ref is None or not ref.output or ref.failed:
                continue
            d = max_abs_diff(r.output, ref.output)
            r.diff = str(d)
            if wl.method not in ("mean", "median"):
                r.diff += " (libvips: median)"
                continue
            if t.name == "avgstack" and wl.weights is None and (not isinstance(d, int) or d > 1):
                r.diff += " (FAIL: > 1)"
                bad = True
        if not args.keep_outputs:
            for t in tools:
                for suffix in (".tif",):
                    with contextlib.suppress(OSError):
                        os.unlink(outdir / f"{wl.name}.{safe[t.name]}{suffix}")
        results.extend(res[t.name] for t in tools)

    runner.close()
    load_end = os.getloadavg()[0]
    busy = "  <- other load on the machine: timings are noisy" if max(load_start, load_end) > 0.5 else ""
    versions["1-min load average (start / end)"] = f"{load_start:.2f} / {load_end:.2f}{busy}"
    print_report(loads, tools, results, machine_info(versions, avgstack_src), repeat, args.quick)
    if args.json:
        args.json.write_text(json.dumps([
            {"workload": r.workload, "tool": r.tool, "skipped": r.skipped, "failed": r.failed, "diff": r.diff,
             "runs": [r_.__dict__ for r_ in r.runs]} for r in results], indent=1))
    return 1 if bad else 0


@contextlib.contextmanager
def dask_cluster(workers: int, folder: Path, pythonpath: str):
    """A ``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes; yields the scheduler file."""
    import distributed

    path = folder / f"scheduler-{workers}.json"
    with contextlib.suppress(OSError):
        path.unlink()
    env = dict(os.environ, PYTHONPATH=pythonpath + os.pathsep + os.environ.get("PYTHONPATH", ""))
    quiet = {"env": env, "cwd": folder, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen([*dask, "scheduler", "--scheduler-file", str(path), "--port", "0", "--no-dashboard"],
                              **quiet)]
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.1)
        for _ in range(workers):
            procs.append(subprocess.Popen([*dask, "worker", "--scheduler-file", str(path), "--nthreads", "1",
                                           "--no-dashboard", "--memory-limit", "0"], **quiet))
        with distributed.Client(scheduler_file=str(path), set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
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


def bench_dask(loads, cache: Path, outdir: Path, runner: Runner, repeat: int, avgstack_src: Path) -> int:
    """Local run, then 1 and 2 Dask workers: wall time, scaling, client peak RSS, identical bytes."""
    import hashlib

    def digest(path: str) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(8 * MiB), b""):
                h.update(block)
        return h.hexdigest()

    rows, bad = [], False
    tool = AvgstackTool("avgstack")
    for wl in loads:
        files = ensure_stack(cache, wl.stack)
        log(f"{wl.name}: {wl.stack.describe()}; warming page cache")
        log(f"  warm-up read: {warm(files):.2f} s")
        setups = [("local threads", None, 0)] + [(f"dask, {n} worker(s)", n, n) for n in (1, 2)]
        reference = None
        for label, workers, _ in setups:
            out = str(outdir / f"{wl.name}.dask{workers or 0}.tif")
            with contextlib.ExitStack() as stack:
                extra = []
                if workers:
                    extra = ["--scheduler-file", stack.enter_context(dask_cluster(workers, outdir, str(avgstack_src)))]
                runs = []
                for rep in range(repeat):
                    with contextlib.suppress(OSError):
                        os.unlink(out)
                    cmd = [*tool.command(wl, files, out), *extra]
                    run = runner.run(cmd, outdir / f"{wl.name}.dask{workers or 0}.log", outdir)
                    if run.rc != 0:
                        log(f"  {label}: FAILED exit {run.rc}")
                        bad = True
                        break
                    runs.append(run)
                    log(f"  run {rep + 1}/{repeat} {label}: {run.seconds:.2f} s, client peak RSS "
                        f"{run.maxrss / MiB:.0f} MiB")
            if not runs:
                rows.append((wl.name, label, None, None, "failed"))
                continue
            same = digest(out)
            if reference is None:
                reference, identical = same, "reference"
            else:
                identical = "yes" if same == reference else "NO"
                bad = bad or same != reference
            rows.append((wl.name, label, statistics.median(r.seconds for r in runs),
                         statistics.median(r.maxrss for r in runs), identical))
            with contextlib.suppress(OSError):
                os.unlink(out)
    print()
    print(f"## avgstack on Dask (median of {repeat} run(s); {os.cpu_count()} cores on this machine)")
    print()
    print("| workload | where | wall s | vs 1 worker | client peak RSS MiB | bytes identical to local |")
    print("|---|---|---:|---:|---:|---|")
    for name in dict.fromkeys(r[0] for r in rows):
        one = next((r[2] for r in rows if r[0] == name and r[1].startswith("dask, 1") and r[2]), None)
        for _, label, seconds, rss, identical in (r for r in rows if r[0] == name):
            if seconds is None:
                print(f"| {name} | {label} | failed | | | |")
                continue
            ratio = f"{one / seconds:.2f}x" if one and label.startswith("dask") else ""
            print(f"| {name} | {label} | {seconds:.2f} | {ratio} | {rss / MiB:.0f} | {identical} |")
    print()
    print("Client peak RSS is the avgstack process that plans, submits and writes (wait4 of the child);"
          " workers run in their own processes. The baseline of a client includes importing distributed.")
    return 1 if bad else 0


def print_report(loads, tools, results, machine, repeat, quick) -> None:
    by = {(r.workload, r.tool): r for r in results}
    print()
    print(f"## avgstack benchmark{' (quick)' if quick else ''}")
    print()
    print("| | |")
    print("|---|---|")
    for k, v in machine:
        print(f"| {k} | {v} |")
    print()
    print(f"Median of {repeat} run(s) per tool, tools alternating, page cache warm; "
          "peak RSS from wait4() of each child. Ratios are tool / libvips and tool / the read+write+fsync "
          "floor (lower is better). max |Δ| is the largest per-sample difference from the libvips output. "
          "first read: seconds from launching avgstack to its first open() of an input (median). "
          "CPU s: user + system seconds of the child (median), steadier than wall time on a busy machine.")
    print()
    print("| workload | tool | wall s | (min–max) | CPU s | peak RSS MiB | time vs libvips | time vs floor+fsync "
          "| RSS vs libvips | max \\|Δ\\| vs libvips | first read s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for wl in loads:
        ref = by.get((wl.name, "libvips"))
        ref_ok = ref is not None and ref.runs and not ref.failed
        floor = by.get((wl.name, "floor: read+write+fsync"))
        floor_ok = floor is not None and floor.runs and not floor.failed
        for t in tools:
            r = by[(wl.name, t.name)]
            if r.skipped or r.failed or not r.runs:
                note = r.skipped or (f"failed: {r.failed}" if r.failed else "no runs")
                print(f"| {wl.name} | {t.name} | {note} | | | | | | | | |")
                continue
            tr = f"{r.seconds / ref.seconds:.2f}x" if ref_ok else ""
            fr = f"{r.seconds / floor.seconds:.2f}x" if floor_ok else ""
            mr = f"{r.rss / ref.rss:.2f}x" if ref_ok else ""
            lo, hi = min(x.seconds for x in r.runs), max(x.seconds for x in r.runs)
            firsts = [x.first_read for x in r.runs if x.first_read is not None]
            first = f"{statistics.median(firsts):.3f}" if firsts else ""
            print(f"| {wl.name} | {t.name} | {r.seconds:.2f} | {lo:.2f}–{hi:.2f} | {r.cpu:.2f} | {r.rss / MiB:.0f} | {tr} | {fr} "
                  f"| {mr} | {r.diff} | {first} |")
    print()
    print("Workloads:")
    for wl in loads:
        w = f"; weights {wl.weights[0]}, {wl.weights[1]} x {len(wl.weights) - 1}" if wl.weights else ""
        m = f"; {wl.method} (libvips: bandrank median)" if wl.method != "mean" else ""
        print(f"- {wl.name}: {wl.stack.describe()}{w}{m}")
    print()
    print(textwrap.dedent("""\
        Notes: avgstack and libvips write uncompressed striped TIFF, numpy+OpenCV writes
        uncompressed TIFF through cv2.imwrite. avgstack fsyncs its output before the atomic
        rename; the other tools do not (compare with the two floor rows). libvips rounds the
        mean as trunc(sum/N + 0.5) and truncates weighted sums; avgstack rounds half to even.
        cv2.imread premultiplies the unassociated alpha of 8-bit RGBA TIFFs (libtiff's RGBA
        path), so numpy+OpenCV differs wherever alpha < 255 on the RGBA workloads.
        Robust workloads (median, sigma-clip): the numpy+OpenCV row is numpy in memory
        (tifffile reads, np.median, or astropy sigma_clip then the mean), libvips runs
        bandrank (its median) in both, and ccdproc combine runs on gray stacks only
        (one clipping pass around the median: ccdproc does not iterate).""").strip())


if __name__ == "__main__":
    sys.exit(main())
