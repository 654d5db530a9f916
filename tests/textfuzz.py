"""Seeded fuzzing of the command line's text inputs: batch files and ``@list`` files (issue 14).

A small project folder (``in/`` with four valid frames, one of them named with a
byte that is not UTF-8; ``lists/``; ``out/``) is laid out once. Each case writes a
batch file or a list file made from a valid one by one of these mutators:

- ``value``: a key of the defaults or of a job set to a value from a pool of the
  wrong types, sizes and characters (arrays, tables, nested arrays, dates, NaN,
  2**70, strings with NUL, newlines and escapes, duplicate outputs, missing lists);
- ``key``: an unknown, empty or control-character key; ``jobs`` of the wrong shape;
- ``nesting``: arrays or inline tables nested 10 to 3000 deep;
- ``bytes``: byte flips, insertions (NUL, 0xff, 0x80), deletions and truncation;
- ``encoding``: the file saved as UTF-16 (with and without a byte-order mark),
  UTF-32, Latin-1 or UTF-8 with a mark;
- ``list``: list files with every encoding, Latin-1 names, CRLF, comments, NUL,
  control characters, page suffixes, globs, missing files, nested and
  self-referencing lists, very long lines.

The contract checked (:func:`text_case_problems`): exit 0, 1 or 2 in bounded time;
no traceback and no "internal error"; every stderr line an ``avgstack: error:`` or
``avgstack: warning:`` line with no raw control character; a single run that fails
prints exactly one error line; a batch exits 2 with exactly one error line when the
batch file is invalid, and with 1 when a job failed, its last line then being the
summary; no temporary file anywhere; the input frames untouched.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from faultfiles import Snapshot, run_cli, run_main_captured

__all__ = ["TextCase", "make_project", "make_text_case", "reset_project", "run_text_case_in_process",
           "run_text_case_subprocess", "text_case_problems", "MUTATORS"]

#: Frames of the project, relative to its folder (one name is not UTF-8).
FRAMES = ["in/a.tif", "in/b.tif", "in/c.tif", os.fsdecode(b"in/caf\xe9.tif")]
BATCH = "jobs.toml"
LIST = "lists/frames.txt"

VALID_BATCH = """\
# nightly batch
max_memory = "64MiB"
compression = "zstd"

[[jobs]]
output = "out/mean.tif"
inputs = ["in/*.tif"]

[[jobs]]
output = "out/list.tif"
inputs = ["@lists/frames.txt"]
weights = [0.5, 0.25, 0.25]
dtype = "float32"

[[jobs]]
output = "out/tiles.tif"
inputs = ["in/a.tif", "in/b.tif"]
tile = 16
threads = 2
"""
VALID_LIST = "# frames, relative to lists/\n../in/a.tif\n../in/b.tif\n\n../in/c.tif\n"

_SUMMARY = re.compile(r"^avgstack: (error: |warning: )?batch .*: \d+ done, \d+ skipped, (\d+) failed$")
_RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass
class TextCase:
    """One run: a fuzzed batch or list file, the command line, and how it went."""

    kind: str
    case_seed: int
    description: str
    argv: list[str]
    files: list[str]
    code: int | None = None
    stderr: str = ""
    stdout: str = ""
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def reproducer(self) -> str:
        import shlex

        return f"python -m avgstack {' '.join(shlex.quote(a) for a in self.argv)}"


# -- the project -----------------------------------------------------------------------------


def make_project(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Lay out ``in/`` (four small valid RGB frames), ``lists/`` and ``out/`` under ``folder``."""
    root = Path(folder)
    rng = np.random.default_rng(seed)
    for name in FRAMES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), photometric="rgb")
    (root / "lists").mkdir(exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    return root


def reset_project(root: str | os.PathLike) -> None:
    """Remove everything but the frames in ``in/``, so cases do not see each other's files."""
    root = Path(root)
    keep = {os.fsencode(name) for name in FRAMES}
    for entry in os.listdir(os.fsencode(root)):
        path = os.path.join(os.fsencode(root), entry)
        if entry == b"in":
            for name in os.listdir(path):
                if b"in/" + name not in keep:
                    _remove(os.path.join(path, name))
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove(path)
    (root / "lists").mkdir(exist_ok=True)
    (root / "out").mkdir(exist_ok=True)


def _remove(path) -> None:
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


# -- TOML text -------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F or 0xD800 <= ord(char) <= 0xDFFF:
            out.append(f"\\u{ord(char):04x}" if not 0xD800 <= ord(char) <= 0xDFFF else "?")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def toml_value(value: Any) -> str:
    """A TOML literal for ``value`` (bool, int, float, str, list, dict, date)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    raise TypeError(type(value))


def render_batch(defaults: dict[str, Any], jobs: list[dict[str, Any]] | Any) -> str:
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in defaults.items()]
    if isinstance(jobs, list) and all(isinstance(j, dict) for j in jobs):
        for job in jobs:
            lines.append("\n[[jobs]]")
            lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in job.items()]
    else:
        lines.append(f"jobs = {toml_value(jobs)}")
    return "\n".join(lines) + "\n"


def _valid_structure() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    defaults = {"max_memory": "64MiB", "compression": "zstd"}
    jobs = [
        {"output": "out/mean.tif", "inputs": ["in/*.tif"]},
        {"output": "out/list.tif", "inputs": ["@lists/frames.txt"], "weights": [0.5, 0.25, 0.25],
         "dtype": "float32"},
        {"output": "out/tiles.tif", "inputs": ["in/a.tif", "in/b.tif"], "tile": 16, "threads": 2},
    ]
    return defaults, jobs


# -- value pools -----------------------------------------------------------------------------

_STRINGS = [
    "", "none", "zstd", "lzw", "jpeg", "uint8", "float16", "int64", "512MiB", "0MiB", "-1GiB", "nanMiB",
    "1e999GB", "9" * 40, "x" * 2000, "a\nb", "tab\there", "\x00", "nul\x00.tif", "line\u2028sep", "\x1b[31mred",
    "in/a.tif", "in/a.tif[0]", "in/a.tif[7]", "in/*.png", "in/[", "@lists/frames.txt", "@lists/missing.txt", "@",
    "@@lists/frames.txt", "out/mean.tif", "out/", "out", "lists/frames.txt", "jobs.toml", "/", "..", "in",
    "out/new\nline.tif", "out/é.tif", "out/" + "n" * 300 + ".tif", "out/x.png", "out/x.jpg", "out/x.webp",
    "out/x.jp2", "out/x", "out/x.exr",
]
_NUMBERS = [0, -1, 1, 2, 3, 15, 16, 17, 32, 255, 256, 65536, 65552, 2**31, 2**62, 2**63 - 1, -2**63,
            0.5, -0.0, 1e308, -1e308, 5e-324, float("nan"), float("inf"), float("-inf")]


def _random_value(rng: np.random.Generator, depth: int = 0) -> Any:
    kind = rng.integers(0, 9 if depth < 2 else 6)
    if kind == 0:
        return bool(rng.integers(0, 2))
    if kind in (1, 2):
        return _NUMBERS[int(rng.integers(0, len(_NUMBERS)))]
    if kind in (3, 4):
        return _STRINGS[int(rng.integers(0, len(_STRINGS)))]
    if kind == 5:
        return [datetime.date(2024, 2, 29), datetime.datetime(2024, 1, 1, 2, 3, 4), datetime.time(1, 2)][
            int(rng.integers(0, 3))]
    if kind in (6, 7):
        return [_random_value(rng, depth + 1) for _ in range(int(rng.integers(0, 5)))]
    return {f"k{i}": _random_value(rng, depth + 1) for i in range(int(rng.integers(0, 3)))}


def _weights(rng: np.random.Generator) -> Any:
    count = int(rng.integers(0, 6))
    pool = [1.0, 0.5, -1.0, 0, 1, 2**70, 1e308, float("nan"), float("inf"), "1", True]
    values = [pool[int(rng.integers(0, len(pool)))] if rng.random() < 0.3 else float(rng.normal())
              for _ in range(count)]
    return values


# -- mutators --------------------------------------------------------------------------------

_KEYS = ["weights", "dtype", "compression", "tile", "max_memory", "threads", "output", "inputs"]


def _mutate_value(rng):
    defaults, jobs = _valid_structure()
    key = _KEYS[int(rng.integers(0, len(_KEYS)))]
    where = int(rng.integers(-1, len(jobs)))
    value = _weights(rng) if key == "weights" and rng.random() < 0.5 else _random_value(rng)
    if key == "inputs" and rng.random() < 0.5:
        value = [_STRINGS[int(rng.integers(0, len(_STRINGS)))] for _ in range(int(rng.integers(0, 4)))]
    if where < 0 and key not in ("output", "inputs"):
        defaults[key] = value
    else:
        jobs[max(0, where)][key] = value
    return render_batch(defaults, jobs).encode(), f"value: {'defaults' if where < 0 else f'job {max(1, where + 1)}'}.{key} = {toml_value(value)[:80]}"


def _mutate_key(rng):
    defaults, jobs = _valid_structure()
    choice = int(rng.integers(0, 8))
    if choice == 0:
        defaults[["verbose", "", "a\nb", "jobs2", "Weights", "\u2028"][int(rng.integers(0, 6))]] = 1
        what = "unknown top-level key"
    elif choice == 1:
        jobs[int(rng.integers(0, len(jobs)))][["colour", "", "out\nput", "force"][int(rng.integers(0, 4))]] = "x"
        what = "unknown job key"
    elif choice == 2:
        del jobs[int(rng.integers(0, len(jobs)))]["output" if rng.random() < 0.5 else "inputs"]
        what = "missing required key"
    elif choice == 3:
        return render_batch(defaults, _random_value(rng)).encode(), "jobs of the wrong shape"
    elif choice == 4:
        return render_batch(defaults, []).encode(), "no jobs"
    elif choice == 5:
        jobs = [dict(jobs[0], output=f"out/j{i}.tif") for i in range(int(rng.integers(20, 60)))]
        what = "many jobs"
    elif choice == 6:
        jobs[2]["output"] = jobs[0]["output"]
        what = "duplicate output"
    else:
        text = render_batch(defaults, jobs) + 'compression = "lzw"\n'
        return text.encode(), "duplicate key"
    return render_batch(defaults, jobs).encode(), what


def _mutate_nesting(rng):
    depth = int(rng.choice([10, 100, 500, 990, 1000, 1010, 3000]))
    if rng.random() < 0.5:
        value = "[" * depth + "1" + "]" * depth
    else:
        value = "{a = " * depth + "1" + "}" * depth
    key = ["weights", "x", "inputs"][int(rng.integers(0, 3))]
    return (f"{key} = {value}\n" + VALID_BATCH).encode(), f"nesting: {key} {depth} deep"


def _mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    data = bytearray(data)
    edits = []
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 5))
        at = int(rng.integers(0, max(1, len(data))))
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << int(rng.integers(0, 8))
            edits.append(f"flip@{at}")
        elif op == 1:
            byte = int(rng.choice([0, 0xFF, 0x80, 0xC3, 0x0D, 0x1B, 0x22, 0x5B, 0x5D, 0x40]))
            data[at:at] = bytes([byte])
            edits.append(f"insert 0x{byte:02x}@{at}")
        elif op == 2:
            del data[at:at + int(rng.integers(1, 20))]
            edits.append(f"delete@{at}")
        elif op == 3:
            data = data[:at]
            edits.append(f"truncate@{at}")
        else:
            lines = bytes(data).split(b"\n")
            i = int(rng.integers(0, len(lines)))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
            edits.append(f"duplicate line {i + 1}")
    return bytes(data), "bytes: " + ", ".join(edits)


_ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "utf-8-sig", "cp1252"]


def _mutate_encoding(text: str, rng) -> tuple[bytes, str]:
    encoding = _ENCODINGS[int(rng.integers(0, len(_ENCODINGS)))]
    text = "# café, déjà vu\n" + text
    return text.encode(encoding, "replace"), f"encoding: {encoding}"


def _list_lines(rng) -> tuple[list[str], str]:
    pool = ["../in/a.tif", "../in/b.tif", "../in/c.tif", os.fsdecode(b"../in/caf\xe9.tif"), "../in/a.tif[0]",
            "../in/a.tif[3]", "../in/*.tif", "../in/*.png", "# comment", "", "   ", "\t../in/c.tif  ",
            "../in/missing.tif", "../in", "@frames.txt", "@other.txt", "@missing.txt", "frames.txt",
            "../out/list.tif", "a\x00b.tif", "../in/a\nb.tif", "x" * 5000, "../in/\x1b[31m.tif",
            "../in/line\u2028.tif", "../in/\x1c.tif", "@/dev/null", "/dev/null", "/"]
    lines = [pool[int(rng.integers(0, len(pool)))] for _ in range(int(rng.integers(0, 7)))]
    return lines, "list lines: " + repr(lines)[:150]


def _mutate_list(rng) -> tuple[bytes, str, bytes | None]:
    """A list file (and maybe a second list it refers to)."""
    choice = int(rng.integers(0, 4))
    other = b"../in/a.tif\n../in/b.tif\n" if rng.random() < 0.5 else None
    if choice == 0:
        lines, what = _list_lines(rng)
        newline = "\r\n" if rng.random() < 0.3 else "\n"
        text = newline.join(lines) + (newline if rng.random() < 0.7 else "")
        data = os.fsencode(text) if not any("\x00" in line for line in lines) else text.encode("utf-8", "surrogateescape")
        return data, what, other
    if choice == 1:
        encoding = _ENCODINGS[int(rng.integers(0, len(_ENCODINGS)))]
        text = "# déjà\n../in/a.tif\n../in/c.tif\n"
        return text.encode(encoding), f"list encoding: {encoding}", other
    if choice == 2:
        data, what = _mutate_bytes(b"../in/a.tif\n../in/b.tif\n../in/caf\xe9.tif\n", rng)
        return data, "list " + what, other
    data = bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8))
    return data, "list: random bytes", other


MUTATORS = ("value", "key", "nesting", "bytes", "encoding", "list")


def make_text_case(root: str | os.PathLike, case_seed: int) -> TextCase:
    """Write one fuzzed batch or list file into the project at ``root``; build its command line."""
    rng = np.random.default_rng(case_seed)
    root = Path(root)
    mutator = MUTATORS[int(rng.integers(0, len(MUTATORS)))]
    (root / LIST).write_text(VALID_LIST)
    files = [str(root / BATCH), str(root / LIST)]
    if mutator == "value":
        data, description = _mutate_value(rng)
    elif mutator == "key":
        data, description = _mutate_key(rng)
    elif mutator == "nesting":
        data, description = _mutate_nesting(rng)
    elif mutator == "bytes":
        data, description = _mutate_bytes(VALID_BATCH.encode(), rng)
    elif mutator == "encoding":
        data, description = _mutate_encoding(VALID_BATCH, rng)
    else:
        listing, description, other = _mutate_list(rng)
        (root / LIST).write_bytes(listing)
        if other is not None:
            (root / "lists" / "other.txt").write_bytes(other)
            files.append(str(root / "lists" / "other.txt"))
        data = VALID_BATCH.encode()
    (root / BATCH).write_bytes(data)
    for name in ("out/mean.tif", "out/list.tif"):
        (root / name).write_bytes(b"previous output\n")
    if mutator == "list" and rng.random() < 0.5:
        argv = ["-o", str(root / "out" / "list.tif"), f"@{root / LIST}"]
        kind = "list"
    else:
        argv = ["--batch", str(root / BATCH)]
        kind = "batch"
        if rng.random() < 0.3:
            argv.append("--force")
    return TextCase(kind, case_seed, f"{mutator}: {description}", argv, files)


# -- running and judging ---------------------------------------------------------------------


def _temp_files_anywhere(root: Path) -> list[str]:
    found = []
    for folder, _, names in os.walk(os.fsencode(root)):
        found += [os.fsdecode(os.path.join(folder, n)) for n in names if b".avgstack-" in n and n.endswith(b".tmp")]
    return found


def text_case_problems(case: TextCase, root: Path, frames: Snapshot, strays, time_limit: float) -> list[str]:
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
    lines = [line for line in case.stderr.split("\n") if line]
    odd = [line for line in lines if not line.startswith(("avgstack: error: ", "avgstack: warning: "))]
    if odd or strays:
        problems.append(f"stray output on stderr: {(odd + list(strays))[0][:120]!r}")
    if any(_RAW_CONTROL.search(line) for line in lines):
        problems.append("raw control character on stderr")
    errors = [line for line in lines if line.startswith("avgstack: error: ")]
    if case.kind == "list" or case.code == 2:
        if case.code and len(errors) != 1:
            problems.append(f"{len(errors)} error lines (one expected)")
    if case.kind == "batch" and case.code == 1:
        match = _SUMMARY.match(lines[-1]) if lines else None
        if match is None:
            problems.append("a failed batch does not end with its summary")
        elif int(match.group(2)) != len(errors) - 1:
            problems.append("summary counts differ from the error lines")
        if any(not e.startswith("avgstack: error: job ") for e in errors[:-1]):
            problems.append("a job's error line does not name its job")
    if case.code == 0 and errors:
        problems.append("exit 0 with an error line")
    if case.stdout:
        problems.append(f"output on stdout: {case.stdout[:80]!r}")
    temps = _temp_files_anywhere(root)
    if temps:
        problems.append(f"temporary file left: {temps[:2]}")
    try:
        frames.assert_unchanged()
    except AssertionError as err:
        problems.append(f"input changed: {err}")
    return problems


def _frames_snapshot(root: Path) -> Snapshot:
    return Snapshot([str(root / name) for name in FRAMES])


def run_text_case_in_process(case: TextCase, root: str | os.PathLike, time_limit: float = 10.0) -> TextCase:
    """Run ``avgstack.cli.main(case.argv)`` in this process; fill in the outcome."""
    root = Path(root)
    frames = _frames_snapshot(root)
    case.code, case.stderr, case.stdout, strays, case.seconds = run_main_captured(case.argv, time_limit)
    case.problems = text_case_problems(case, root, frames, strays, time_limit)
    return case


def run_text_case_subprocess(case: TextCase, root: str | os.PathLike, time_limit: float = 20.0) -> TextCase:
    """Run the case as ``python -m avgstack``; fill in the outcome."""
    root = Path(root)
    frames = _frames_snapshot(root)
    start = time.perf_counter()
    try:
        proc = run_cli(case.argv, timeout=time_limit * 3)
        case.code, case.stderr, case.stdout = proc.returncode, proc.stderr, proc.stdout
    except subprocess.TimeoutExpired:
        case.code, case.stderr, case.stdout = None, "fuzz: timed out", ""
    case.seconds = time.perf_counter() - start
    case.problems = text_case_problems(case, root, frames, (), time_limit)
    return case
