"""Damaged, lying and hostile input files, and the checks every fault test makes.

Shared by ``test_errors.py``, ``test_fuzz.py`` and ``scripts/fuzz.py``. Every
file is generated from a seed into a folder the caller owns; nothing here
depends on pytest.

The contract checked for every fault (issue "Bad input and faults"):

- exit code 0, 1 or 2 (2 for problems found before processing, 1 during);
- on failure exactly one line on stderr, ``avgstack: error: ...``, naming the
  file, and no traceback;
- no hang, no temporary file left, previous output and every input untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import tifffile

#: Folder that holds the ``avgstack`` package under test.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])

ERROR_PREFIX = "avgstack: error: "


# -- running the command line ---------------------------------------------------------------


def cli_env() -> dict:
    """Environment for ``python -m avgstack`` subprocesses running the package under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_cli(args: Sequence[object], *, timeout: float = 60, preexec_fn: Callable[[], None] | None = None,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m avgstack ARGS`` with stdin closed; return the completed process (text)."""
    return subprocess.run(
        [sys.executable, "-m", "avgstack", *[os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args]],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        env=cli_env(),
        timeout=timeout,
        preexec_fn=preexec_fn,
        cwd=cwd,
    )


#: Runs a command and writes its peak RSS (KiB on Linux) to a file. Forked from this small
#: launcher, the command does not inherit the pytest process's resident set in its high-water mark.
_LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:], stdin=subprocess.DEVNULL)
with open(sys.argv[1], "w") as fh:
    fh.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_cli_peak_rss(args: Sequence[object], report: Path, *, timeout: float = 60) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``python -m avgstack ARGS``; return the completed process and its peak RSS in bytes."""
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(report), sys.executable, "-m", "avgstack", *[str(a) for a in args]],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", env=cli_env(), timeout=timeout,
    )
    scale = 1 if sys.platform == "darwin" else 1024
    return proc, int(report.read_text()) * scale


def error_lines(stderr: str) -> list[str]:
    """Lines of ``stderr`` that are avgstack error lines."""
    return [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def assert_one_error_line(stderr: str, *names: str, contains: Iterable[str] = ()) -> str:
    """Assert ``stderr`` is exactly one ``avgstack: error:`` line mentioning every name; return it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    line = lines[0]
    assert line.startswith(ERROR_PREFIX), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    for text in contains:
        assert text.lower() in line.lower(), f"{text!r} not in: {line}"
    return line


def check_cli_failure(proc: subprocess.CompletedProcess, code: int, *names: str, contains: Iterable[str] = ()) -> str:
    """Assert the process exited with ``code`` and one clear error line naming ``names``."""
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}; stderr:\n{proc.stderr}"
    assert proc.stdout == "", proc.stdout
    return assert_one_error_line(proc.stderr, *names, contains=contains)


# -- files left as they were ----------------------------------------------------------------


@dataclass(frozen=True)
class FileState:
    """Content hash, size and modification time of one file (None when missing)."""

    digest: str | None
    size: int | None
    mtime_ns: int | None


def file_state(path: str | os.PathLike) -> FileState:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return FileState(None, None, None)
    if not os.path.isfile(path):
        return FileState("<not a file>", None, st.st_mtime_ns)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return FileState(digest, st.st_size, st.st_mtime_ns)


class Snapshot:
    """Remember files' bytes and mtimes; :meth:`assert_unchanged` checks them byte for byte."""

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        self.states = {os.fspath(p): file_state(p) for p in paths}

    def assert_unchanged(self) -> None:
        for path, before in self.states.items():
            after = file_state(path)
            assert after == before, f"{path} changed: {before} -> {after}"


def temp_files(folder: str | os.PathLike) -> list[str]:
    """avgstack temporary files (``.NAME.avgstack-PID-XXXX.tmp``) left in ``folder``."""
    return sorted(n for n in os.listdir(folder) if ".avgstack-" in n and n.endswith(".tmp"))


# -- privileges (tests run as root) ---------------------------------------------------------

_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2
_PR_CAPBSET_DROP = 24


def drop_file_permission_override() -> None:
    """``preexec_fn``: make the child honour file permissions even when it runs as root.

    Root ignores mode bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. Dropping
    both from the bounding set before ``exec`` means the new program never gets them,
    so ``chmod 000`` files cannot be read and ``chmod 555`` folders cannot be written.
    (Dropping to another uid would not do: the interpreter lives under /root.)
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))


def permissions_can_be_enforced() -> str | None:
    """None if mode bits can be made to bind the CLI subprocess, else why not (a skip reason)."""
    if os.name != "posix":
        return "POSIX permissions only"
    if os.geteuid() != 0:
        return None  # an ordinary user: chmod alone works
    if not _can_drop():
        return "running as root without CAP_SETPCAP: cannot drop CAP_DAC_OVERRIDE for the subprocess"
    return None


def _can_drop() -> bool:
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:  # pragma: no cover - child
        try:
            drop_file_permission_override()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def permission_preexec() -> Callable[[], None] | None:
    """The ``preexec_fn`` permission tests run the CLI with (None for non-root users)."""
    return drop_file_permission_override if os.geteuid() == 0 else None


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise TimeoutError in the main thread if the block runs longer than ``seconds`` (a hang guard)."""
    import signal

    def _expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def limit_file_size(limit: int) -> Callable[[], None]:
    """``preexec_fn`` that caps the size of any file the child writes (``ulimit -f``): a full disk."""

    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


# -- small valid files ----------------------------------------------------------------------


def image(rng: np.random.Generator, shape=(24, 40, 3), dtype="uint8") -> np.ndarray:
    """Random samples; floats are smallish normals."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


#: Named layouts of small valid TIFFs: sample type and tifffile keyword arguments.
TIFF_LAYOUTS = {
    "striped": ("uint8", dict(rowsperstrip=5)),
    "striped_be": ("uint8", dict(rowsperstrip=7, byteorder=">")),
    "tiled_lzw": ("uint8", dict(tile=(16, 16), compression="lzw")),
    "tiled_deflate_pred": ("uint8", dict(tile=(16, 16), compression="zlib", predictor=True)),
    "striped_packbits": ("uint8", dict(rowsperstrip=6, compression="packbits")),
    "planar": ("uint8", dict(planarconfig="separate", rowsperstrip=8)),
    "bigtiff": ("uint8", dict(bigtiff=True, rowsperstrip=4)),
    "bigtiff_tiled_zstd": ("uint8", dict(bigtiff=True, tile=(16, 16), compression="zstd")),
    "uint16_tiled_lzw_be": ("uint16", dict(tile=(16, 16), compression="lzw", predictor=2, byteorder=">")),
    "float32_deflate_pred3": ("float32", dict(rowsperstrip=6, compression="zlib", predictor=3)),
    "packed12": ("uint16", dict(bitspersample=12, rowsperstrip=5)),
    "bilevel": ("bool", dict(rowsperstrip=8), (24, 40)),
    "jpeg": ("uint8", dict(compression="jpeg", rowsperstrip=8)),
    "multipage": ("uint8", dict(rowsperstrip=6, pages=2)),
}
#: Small valid PNGs: sample type and channel count.
PNG_LAYOUTS = {"png": ("uint8", 3), "png16_rgba": ("uint16", 4)}


def write_tiff(path: str | os.PathLike, data: np.ndarray, **kwargs) -> str:
    """Write ``data`` (RGB order) with tifffile; planar layouts take it ``(rows, cols, samples)`` too."""
    if kwargs.get("planarconfig") == "separate" and data.ndim == 3:
        kwargs.setdefault("photometric", "rgb" if data.shape[2] in (3, 4) else "minisblack")
        data = np.ascontiguousarray(np.moveaxis(data, 2, 0))
    elif data.ndim == 3 and data.shape[2] in (3, 4):
        kwargs.setdefault("photometric", "rgb")
    tifffile.imwrite(path, data, **kwargs)
    return os.fspath(path)


def write_png(path: str | os.PathLike, data: np.ndarray) -> str:
    """Write ``data`` (RGB order) as PNG through OpenCV, which wants BGR."""
    import cv2

    frame = data[..., [2, 1, 0] + ([3] if data.shape[2] == 4 else [])] if data.ndim == 3 and data.shape[2] in (3, 4) else data
    data_bytes = cv2.imencode(".png", np.ascontiguousarray(frame))[1].tobytes()
    Path(path).write_bytes(data_bytes)
    return os.fspath(path)


def seed_files(folder: str | os.PathLike, seed: int = 0) -> dict[str, str]:
    """Write one small valid file per layout of :data:`TIFF_LAYOUTS` and :data:`PNG_LAYOUTS`; return name -> path."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    out = {}
    for name, (dtype, kwargs, *shape) in TIFF_LAYOUTS.items():
        kwargs = dict(kwargs)
        pages = kwargs.pop("pages", 1)
        path = folder / f"seed_{name}.tif"
        for page in range(pages):
            data = image(rng, shape[0] if shape else (24, 40, 3), dtype)
            if kwargs.get("bitspersample"):
                data >>= data.dtype.itemsize * 8 - kwargs["bitspersample"]
            write_tiff(path, data, append=page > 0, **kwargs)
        out[name] = str(path)
    for name, (dtype, channels) in PNG_LAYOUTS.items():
        out[name] = write_png(folder / f"seed_{name}.png", image(rng, (24, 40, channels), dtype))
    return out


# -- editing TIFF headers in place ----------------------------------------------------------

_TYPE_FORMATS = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i", 11: "f", 12: "d", 16: "Q", 17: "q", 18: "Q"}


@dataclass(frozen=True)
class TagSpot:
    """Where one tag of the first page sits in the file."""

    code: int
    dtype: int
    count: int
    entry: int        # file offset of the 12- or 20-byte IFD entry
    value: int        # file offset of the first value (inline or not)
    byteorder: str    # '<' or '>'
    bigtiff: bool

    @property
    def itemsize(self) -> int:
        return struct.calcsize(_TYPE_FORMATS.get(self.dtype, "B"))


def tag_spots(path: str | os.PathLike, page: int = 0) -> dict[int, TagSpot]:
    """The tags of ``page``, by code, with their file offsets."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return {
            tag.code: TagSpot(tag.code, int(tag.dtype), int(tag.count), int(tag.offset), int(tag.valueoffset),
                              tif.byteorder, tif.is_bigtiff)
            for tag in p.tags.values()
        }


def set_tag_value(data: bytearray, spot: TagSpot, value: float, index: int = 0) -> None:
    """Overwrite value ``index`` of a tag in ``data``, wrapping ``value`` into the tag's type."""
    fmt = _TYPE_FORMATS.get(spot.dtype)
    if fmt is None or index >= spot.count:
        return
    pos = spot.value + index * spot.itemsize
    if pos + spot.itemsize > len(data):
        return
    if fmt in "fd":
        struct.pack_into(spot.byteorder + fmt, data, pos, float(value))
        return
    bits = spot.itemsize * 8
    value = int(value) % (1 << bits)
    if fmt.islower():  # signed
        value = value - (1 << bits) if value >= 1 << (bits - 1) else value
    struct.pack_into(spot.byteorder + fmt, data, pos, value)


def get_tag_value(data: bytes, spot: TagSpot, index: int = 0) -> float:
    fmt = _TYPE_FORMATS.get(spot.dtype, "B")
    return struct.unpack_from(spot.byteorder + fmt, data, spot.value + index * spot.itemsize)[0]


def set_tag_entry(data: bytearray, spot: TagSpot, *, dtype: int | None = None, count: int | None = None) -> None:
    """Overwrite the type or count field of a tag's IFD entry."""
    if dtype is not None:
        struct.pack_into(spot.byteorder + "H", data, spot.entry + 2, dtype % 65536)
    if count is not None:
        fmt = "Q" if spot.bigtiff else "I"
        struct.pack_into(spot.byteorder + fmt, data, spot.entry + 4, count % (1 << (64 if spot.bigtiff else 32)))


def patch_tags(src: str | os.PathLike, dst: str | os.PathLike, values: dict[int, int]) -> str:
    """Copy ``src`` to ``dst`` with the first value of each tag code replaced."""
    spots = tag_spots(src)
    data = bytearray(Path(src).read_bytes())
    for code, value in values.items():
        set_tag_value(data, spots[code], value)
    Path(dst).write_bytes(bytes(data))
    return os.fspath(dst)


def segment_spans(path: str | os.PathLike, page: int = 0) -> list[tuple[int, int]]:
    """``(offset, bytecount)`` of every strip or tile of ``page``."""
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        return [(int(o), int(n)) for o, n in zip(p.dataoffsets, p.databytecounts)]


# -- hostile files for the named cases ------------------------------------------------------


def huge_declared_tiff(folder: str | os.PathLike, side: int = 200_000, kind: str = "deflate") -> str:
    """A TIFF whose header declares ``side`` x ``side`` pixels over a few bytes of data.

    ``kind``: ``'strip'`` (one uncompressed strip of one byte), ``'deflate'`` (one
    deflate strip covering the whole image), ``'tile'`` (one 16x16 deflate tile
    listed for the whole image), ``'bigtile'`` (one tile as large as the image).
    """
    folder = Path(folder)
    seed = folder / f"seed_huge_{kind}.tif"
    out = folder / f"huge_{kind}.tif"
    if kind == "strip":
        tifffile.imwrite(seed, np.zeros((1, 1), np.uint8))
        patch_tags(seed, out, {256: side, 257: side, 278: side})
    elif kind == "deflate":
        tifffile.imwrite(seed, np.zeros((1, 1), np.uint8), compression="zlib")
        patch_tags(seed, out, {256: side, 257: side, 278: side})
    elif kind == "tile":
        tifffile.imwrite(seed, np.zeros((16, 16), np.uint8), tile=(16, 16), compression="zlib")
        patch_tags(seed, out, {256: side, 257: side})
    elif kind == "bigtile":
        tifffile.imwrite(seed, np.zeros((16, 16), np.uint8), tile=(16, 16), compression="zlib")
        patch_tags(seed, out, {256: side, 257: side, 322: side, 323: side})
    else:
        raise ValueError(kind)
    seed.unlink()
    return os.fspath(out)


def corrupt_segment(src: str | os.PathLike, dst: str | os.PathLike, index: int, fill: int = 0xAB) -> str:
    """Copy ``src`` with the stored bytes of strip/tile ``index`` overwritten by ``fill``."""
    offset, count = segment_spans(src)[index]
    data = bytearray(Path(src).read_bytes())
    data[offset : offset + count] = bytes([fill]) * count
    Path(dst).write_bytes(bytes(data))
    return os.fspath(dst)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """``(offset, type, length)`` of each chunk of a PNG, as far as the lengths go."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append((pos, kind, length))
        pos += 12 + length
        if kind == b"IEND":
            break
    return out


def fix_png_crcs(data: bytearray) -> None:
    """Recompute the CRC of every complete chunk, so that edits reach the decoders behind the CRC checks."""
    for pos, kind, length in png_chunks(bytes(data)):
        end = pos + 8 + length
        if end + 4 <= len(data):
            struct.pack_into(">I", data, end, zlib.crc32(bytes(data[pos + 4 : end])))


@contextlib.contextmanager
def chmod_restored(path: str | os.PathLike, mode: int):
    """Set ``path``'s mode for the block, then restore it (so tmp_path can be cleaned)."""
    old = os.stat(path).st_mode & 0o7777
    os.chmod(path, mode)
    try:
        yield
    finally:
        os.chmod(path, old)


# -- fuzzing --------------------------------------------------------------------------------

#: Tags whose values the fuzzer rewrites, and values worth trying besides random ones.
FUZZ_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339)
_INTERESTING = {
    258: (0, 1, 2, 4, 7, 12, 16, 24, 32, 64, 65535),
    259: (0, 1, 2, 5, 6, 7, 8, 99, 32773, 32946, 34925, 50000, 65535),
    262: (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 32803, 34892, 65535),
    277: (0, 1, 2, 3, 4, 5, 255, 65535),
    284: (0, 1, 2, 3, 65535),
    317: (0, 1, 2, 3, 4, 34892, 65535),
    338: (0, 1, 2, 3, 65535),
    339: (0, 1, 2, 3, 4, 5, 6, 65535),
}
_GENERIC = (0, 1, 2, 3, 15, 16, 17, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**63, 200_000)


def _fuzz_value(rng: np.random.Generator, code: int, old: float) -> int:
    pick = rng.random()
    if pick < 0.4 and code in _INTERESTING:
        return int(rng.choice(_INTERESTING[code]))
    if pick < 0.6:
        return int(rng.choice(_GENERIC))
    if pick < 0.8:
        return int(old) + int(rng.integers(-3, 4))
    if pick < 0.9:
        return int(old) * int(rng.choice([2, 16, 1000]))
    return int(rng.integers(0, 2**32))


def mutate_tiff(data: bytes, spots: dict[int, TagSpot], segments: list[tuple[int, int]],
                rng: np.random.Generator) -> tuple[bytes, str]:
    """One random damage to a TIFF; returns the new bytes and a description."""
    out = bytearray(data)
    kind = rng.choice(["flip", "flip_header", "truncate", "tag_value", "tag_value", "tag_value",
                       "tag_entry", "segment", "multi_tag"])
    if kind == "flip":
        n = int(rng.integers(1, 9))
        where = rng.integers(0, len(out), n)
        for pos in where:
            out[pos] = int(rng.integers(0, 256))
        return bytes(out), f"flip {n} bytes at {sorted(int(w) for w in where)}"
    if kind == "flip_header":
        header_end = min((o for o, _ in segments), default=len(out))
        tail_start = max((o + n for o, n in segments), default=0)
        regions = [(0, max(1, header_end))] + ([(tail_start, len(out))] if tail_start < len(out) else [])
        lo, hi = regions[int(rng.integers(0, len(regions)))]
        n = int(rng.integers(1, 4))
        where = rng.integers(lo, hi, n)
        for pos in where:
            out[pos] = int(rng.integers(0, 256))
        return bytes(out), f"flip {n} header bytes at {sorted(int(w) for w in where)}"
    if kind == "truncate":
        cut = int(rng.integers(0, len(out)))
        return bytes(out[:cut]), f"truncate at {cut} of {len(out)}"
    if kind in ("tag_value", "multi_tag"):
        codes = [c for c in FUZZ_TAGS if c in spots]
        edits = []
        for _ in range(1 if kind == "tag_value" else int(rng.integers(2, 4))):
            code = int(rng.choice(codes))
            spot = spots[code]
            index = int(rng.integers(0, spot.count))
            value = _fuzz_value(rng, code, get_tag_value(out, spot, index))
            set_tag_value(out, spot, value, index)
            edits.append(f"tag {code}[{index}]={value}")
        return bytes(out), ", ".join(edits)
    if kind == "tag_entry":
        code = int(rng.choice(list(spots)))
        spot = spots[code]
        if rng.random() < 0.5:
            dtype = int(rng.choice([0, 1, 2, 3, 4, 5, 7, 11, 12, 13, 16, 17, 99]))
            set_tag_entry(out, spot, dtype=dtype)
            return bytes(out), f"tag {code} type={dtype}"
        count = int(rng.choice([0, spot.count - 1, spot.count + 1, spot.count * 2, 2**31, 2**32 - 1]))
        set_tag_entry(out, spot, count=count)
        return bytes(out), f"tag {code} count={count}"
    # segment: damage the compressed or raw bytes of one strip/tile
    index = int(rng.integers(0, len(segments)))
    offset, count = segments[index]
    if count == 0:
        return bytes(out), f"segment {index} empty: unchanged"
    start = offset + int(rng.integers(0, count))
    n = int(rng.integers(1, min(count, 64) + 1))
    end = min(offset + count, start + n)
    out[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return bytes(out), f"segment {index}: random bytes at {start}..{end}"


def mutate_png(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random damage to a PNG; CRCs are often fixed so that the damage reaches the decoder."""
    out = bytearray(data)
    chunks = png_chunks(data)
    kind = rng.choice(["flip", "flip_fixcrc", "truncate", "ihdr", "ihdr", "idat", "length"])
    if kind in ("flip", "flip_fixcrc"):
        n = int(rng.integers(1, 9))
        where = rng.integers(8, len(out), n)
        for pos in where:
            out[pos] = int(rng.integers(0, 256))
        if kind == "flip_fixcrc":
            fix_png_crcs(out)
        return bytes(out), f"{kind} {n} bytes at {sorted(int(w) for w in where)}"
    if kind == "truncate":
        cut = int(rng.integers(0, len(out)))
        return bytes(out[:cut]), f"truncate at {cut} of {len(out)}"
    if kind == "ihdr":
        field = rng.choice(["width", "height", "depth", "color", "interlace"])
        pos, fmt = {"width": (16, ">I"), "height": (20, ">I"), "depth": (24, ">B"), "color": (25, ">B"),
                    "interlace": (28, ">B")}[field]
        if fmt == ">I":
            value = int(rng.choice([0, 1, 2, 23, 25, 39, 41, 4096, 65535, 200_000, 1_000_001, 2**31 - 1, 2**32 - 1]))
        else:
            value = int(rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 255]))
        struct.pack_into(fmt, out, pos, value)
        fix_png_crcs(out)
        return bytes(out), f"IHDR {field}={value} (CRC fixed)"
    idats = [(p, n) for p, k, n in chunks if k == b"IDAT" and n and p + 8 + n <= len(out)]
    if kind == "idat" and idats:
        pos, length = idats[int(rng.integers(0, len(idats)))]
        start = pos + 8 + int(rng.integers(0, length))
        n = int(rng.integers(1, 17))
        end = min(pos + 8 + length, start + n)
        out[start:end] = rng.integers(0, 256, end - start, dtype=np.uint8).tobytes()
        fix_png_crcs(out)
        return bytes(out), f"IDAT random bytes at {start}..{end} (CRC fixed)"
    if not chunks:
        return bytes(out[:-1]), "drop the last byte"
    pos, chunk_kind, length = chunks[int(rng.integers(0, len(chunks)))]
    value = int(rng.choice([0, 1, length - 1, length + 1, 2**31 - 1, 2**32 - 1]))
    struct.pack_into(">I", out, pos, value % 2**32)
    return bytes(out), f"{chunk_kind.decode('latin-1')!r} chunk length={value}"


@dataclass
class FuzzSeed:
    """A valid file and what the mutators need to know about it."""

    name: str
    path: str
    data: bytes
    spots: dict[int, TagSpot] | None
    segments: list[tuple[int, int]] | None

    @classmethod
    def load(cls, name: str, path: str) -> "FuzzSeed":
        data = Path(path).read_bytes()
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            page = 1 if name == "multipage" else 0  # the page the command line selects
            return cls(name, path, data, tag_spots(path, page), segment_spans(path, page))
        return cls(name, path, data, None, None)

    def mutate(self, rng: np.random.Generator) -> tuple[bytes, str]:
        if self.spots is not None:
            return mutate_tiff(self.data, self.spots, self.segments, rng)
        return mutate_png(self.data, rng)


@dataclass
class FuzzCase:
    """One run: a mutated file placed in a stack, the command line, and how it went."""

    seed_name: str
    case_seed: int
    description: str
    mutant: str
    argv: list[str]
    code: int | None = None
    stderr: str = ""
    seconds: float = 0.0
    problems: list[str] | None = None

    def reproducer(self) -> str:
        return f"python -m avgstack {' '.join(_shell_quote(a) for a in self.argv)}"


def _shell_quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def make_case(seeds: Sequence[FuzzSeed], folder: str | os.PathLike, case_seed: int) -> FuzzCase:
    """Write one mutant of a seed (chosen by ``case_seed``) into ``folder`` and build its command line."""
    rng = np.random.default_rng(case_seed)
    seed = seeds[int(rng.integers(0, len(seeds)))]
    data, description = seed.mutate(rng)
    if rng.random() < 0.15:  # a second, independent damage
        second = FuzzSeed(seed.name, seed.path, data, seed.spots, seed.segments)
        if seed.spots is None or len(data) == len(seed.data):
            data, more = second.mutate(rng)
            description += "; " + more
    ext = ".tif" if seed.spots is not None else ".png"
    folder = Path(folder)
    mutant = folder / f"mutant_{case_seed}{ext}"
    mutant.write_bytes(data)
    order = rng.choice(["valid_first", "mutant_first", "alone", "twice"])
    page = "[1]" if seed.name == "multipage" and rng.random() < 0.7 else ""
    valid, damaged = f"{seed.path}{page}", f"{mutant}{page}"
    stack = {"valid_first": [valid, damaged], "mutant_first": [damaged, valid],
             "alone": [damaged], "twice": [damaged, damaged]}[order]
    out_ext = ".png" if rng.random() < 0.2 else ".tif"
    out = folder / f"out{out_ext}"
    out.write_bytes(b"previous output, to be kept on failure\n")
    argv = ["-o", os.fspath(out), *[os.fspath(p) for p in stack]]
    if rng.random() < 0.2:
        argv += ["-j", "2"]
    if rng.random() < 0.2:
        argv += ["--weights", *["0.5"] * len(stack)]
    return FuzzCase(seed.name, case_seed, f"{seed.name}: {description}", os.fspath(mutant), argv)


def _snapshots(case: FuzzCase) -> tuple[Snapshot, Snapshot]:
    inputs = sorted({case.mutant, *[a for a in case.argv[2:] if os.path.isfile(a)]})
    return Snapshot(inputs), Snapshot([case.argv[1]])


def outcome_problems(case: FuzzCase, stdout: str, stray: Sequence[str], folder: str | os.PathLike,
                     snapshots: tuple[Snapshot, Snapshot], time_limit: float) -> list[str]:
    """Everything about a finished run that breaks the contract (empty when it kept it)."""
    problems = []
    if case.code not in (0, 1, 2):
        problems.append(f"exit code {case.code}")
    if "Traceback" in case.stderr:
        problems.append("traceback on stderr")
    if "internal error" in case.stderr:
        problems.append("internal error (an exception avgstack did not expect)")
    if case.seconds > time_limit:
        problems.append(f"took {case.seconds:.1f} s")
    lines = [line for line in case.stderr.splitlines() if line.strip()]
    if case.code:
        errors = error_lines(case.stderr)
        if len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        elif not any(os.path.basename(p) in errors[0] for p in (case.mutant, case.argv[1])):
            problems.append("error line names neither the damaged input nor the output")
        others = [line for line in lines if not line.startswith(ERROR_PREFIX)] + list(stray)
        if others:
            problems.append(f"extra output on stderr: {others[0][:120]!r}")
    else:
        warnings_ = [line for line in lines if not line.startswith("avgstack: warning: ")] + list(stray)
        if warnings_:
            problems.append(f"exit 0 with stray stderr: {warnings_[0][:120]!r}")
        try:
            snapshots[1].assert_unchanged()
            problems.append("exit 0 but the output was not replaced")
        except AssertionError:
            pass
    if stdout:
        problems.append(f"output on stdout: {stdout[:80]!r}")
    if temp_files(folder):
        problems.append(f"temporary file left: {temp_files(folder)}")
    try:
        snapshots[0].assert_unchanged()
    except AssertionError as err:
        problems.append(f"input changed: {err}")
    if case.code != 0:
        try:
            snapshots[1].assert_unchanged()
        except AssertionError as err:
            problems.append(f"previous output changed: {err}")
    return problems


class _StrayRecords:
    """Collect log records of loggers outside ``avgstack`` that the CLI would print on stderr.

    The command line configures only the ``avgstack`` logger, so records of other
    loggers at WARNING or above reach stderr through :data:`logging.lastResort`.
    Under pytest a root handler captures them instead; this catches them either way.
    """

    def __enter__(self):
        import logging

        self.records: list[str] = []
        outer = self

        class _Handler(logging.Handler):
            def emit(self, record):
                if not record.name.startswith("avgstack") and record.levelno >= logging.WARNING:
                    outer.records.append(f"[{record.name}] {record.getMessage()}")

        self.handler = _Handler(logging.WARNING)
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        import logging

        logging.getLogger().removeHandler(self.handler)


def _save_logger(name: str):
    import logging

    logger = logging.getLogger(name)
    return list(logger.handlers), logger.level, logger.propagate


def _restore_logger(name: str, saved) -> None:
    """Undo what ``avgstack.cli.main`` does to the logger, so later tests see the library's own setup."""
    import logging

    logger = logging.getLogger(name)
    handlers, level, propagate = saved
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


def opencv_refuses(path: str) -> bool:
    """True when ``cv2.imread(path, IMREAD_UNCHANGED)`` (no ``dst``) cannot decode the file."""
    import cv2

    with _FdCapture(2):  # libpng talks on fd 2
        return cv2.imread(path, cv2.IMREAD_UNCHANGED) is None


def oracle_problems(case: FuzzCase) -> list[str]:
    """Exit 0 on a non-TIFF mutant that OpenCV itself refuses means garbage was averaged."""
    if case.code == 0 and not case.mutant.endswith(".tif") and opencv_refuses(case.mutant):
        return ["exit 0 although OpenCV cannot decode the mutant (a garbage frame was averaged)"]
    return []


class _FdCapture:
    """Capture what C libraries write straight to a file descriptor (libpng writes errors to fd 2)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def __enter__(self):
        import tempfile

        sys.stderr.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = os.dup(self.fd)
        os.dup2(self._file.fileno(), self.fd)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, self.fd)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode("utf-8", "replace")
        self._file.close()


class FuzzTimeout(BaseException):
    """Raised by the alarm when an in-process run takes too long (a BaseException: main() must not swallow it)."""


def run_main_captured(argv: list[str], time_limit: float) -> tuple[int | None, str, str, list[str], float]:
    """Run ``avgstack.cli.main(argv)`` in this process under an alarm of ``3 * time_limit`` seconds.

    Returns ``(exit code or None, stderr, stdout, strays, seconds)``: None when it timed out or let an
    exception escape (its traceback is then in stderr); strays are what bypassed the log handlers (lines
    written to file descriptor 2, log records that reached no handler, Python warnings).
    """
    import io
    import signal
    import time
    import warnings

    from avgstack.cli import main

    err, out = io.StringIO(), io.StringIO()
    code: int | None

    def _alarm(signum, frame):
        raise FuzzTimeout()

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit * 3)
    start = time.perf_counter()
    saved_logger = _save_logger("avgstack")
    try:
        with _FdCapture(2) as c_stderr, _StrayRecords() as stray, warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else 1
            except FuzzTimeout:
                code = None
                err.write("fuzz: timed out\n")
            except Exception:  # noqa: BLE001 - main() let an exception escape: a bug
                import traceback

                code = None
                err.write(traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        _restore_logger("avgstack", saved_logger)
    seconds = time.perf_counter() - start
    strays = ([f"[fd 2] {line}" for line in c_stderr.text.splitlines() if line.strip()] + stray.records
              + [f"{w.category.__name__}: {w.message}" for w in caught])
    return code, err.getvalue(), out.getvalue(), strays, seconds


def run_case_in_process(case: FuzzCase, folder: str | os.PathLike, time_limit: float = 20.0) -> FuzzCase:
    """Run ``avgstack.cli.main(case.argv)`` in this process, capturing stderr; fill in the outcome."""
    snapshots = _snapshots(case)
    case.code, case.stderr, stdout, strays, case.seconds = run_main_captured(case.argv, time_limit)
    case.problems = outcome_problems(case, stdout, strays, folder, snapshots, time_limit)
    case.problems += oracle_problems(case)
    return case


def run_case_subprocess(case: FuzzCase, folder: str | os.PathLike, time_limit: float = 30.0) -> FuzzCase:
    """Run the case as ``python -m avgstack`` in a subprocess; fill in the outcome."""
    import time

    snapshots = _snapshots(case)
    start = time.perf_counter()
    try:
        proc = run_cli(case.argv, timeout=time_limit * 3)
        case.code, case.stderr, stdout = proc.returncode, proc.stderr, proc.stdout
    except subprocess.TimeoutExpired:
        case.code, case.stderr, stdout = None, "fuzz: timed out", ""
    case.seconds = time.perf_counter() - start
    case.problems = outcome_problems(case, stdout, (), folder, snapshots, time_limit)
    case.problems += oracle_problems(case)
    return case


def reset_folder(folder: str | os.PathLike, keep: Iterable[str]) -> None:
    """Remove every file in ``folder`` but ``keep`` (the seeds), so runs do not see each other's outputs."""
    keep = {os.path.basename(k) for k in keep}
    for name in os.listdir(folder):
        if name not in keep:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(folder, name))
