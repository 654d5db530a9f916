"""Batch files: several stacks in one run, for cron.

A batch file is TOML. Top-level keys set defaults; each ``[[jobs]]`` table
names an ``output`` and its ``inputs`` and may override any default::

    max_memory = "1GiB"
    compression = "zstd"

    [[jobs]]
    output = "out/mean.tif"
    inputs = ["night/*.tif"]

    [[jobs]]
    output = "out/diff.tif"
    inputs = ["@lists/diff.txt"]
    weights = [1.0, -1.0]
    dtype = "float32"

Relative paths are resolved against the batch file's folder. The whole file is
validated before any job runs.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..engine import DTYPES
from ..errors import UsageError
from ..options import MAX_TILE as OPTIONS_MAX_TILE
from ..options import PARAMS, JobOptions
from ..planning import parse_size
from ..writing.tiff import COMPRESSIONS

__all__ = ["BatchJob", "load_batch", "is_up_to_date"]

_METHOD_KEYS = {"method", *PARAMS}
_OPTION_KEYS = {
    "weights", "dtype", "compression", "tile", "max_memory", "threads", "nodata", "renormalize", "min_count", "alpha",
} | _METHOD_KEYS
#: Where the jobs run (a Dask scheduler); at most one of them, for the file or for a job.
_SCHEDULER_KEYS = {"scheduler_address", "scheduler_file"}
_JOB_KEYS = _OPTION_KEYS | _SCHEDULER_KEYS | {"output", "inputs"}
#: Largest tile side taken (as the API takes it).
MAX_TILE = OPTIONS_MAX_TILE
#: Batch files are small; a bigger file is not one.
MAX_BATCH_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch file, with defaults applied and paths resolved."""

    number: int
    output: str
    inputs: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"job {self.number} ({self.output})"


def _show(value: Any) -> str:
    """A TOML value for a message: short, one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return names.get(type(value), "a date or time")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_options(where: str, table: dict[str, Any], folder: str = ".") -> dict[str, Any]:
    options: dict[str, Any] = {}
    if _SCHEDULER_KEYS <= set(table):
        raise UsageError(f"{where}: give scheduler_address or scheduler_file, not both")
    for key, value in table.items():
        if key == "weights":
            if not isinstance(value, list) or not value or not all(_is_number(w) for w in value):
                raise UsageError(f"{where}: weights must be a non-empty array of numbers, got {_kind(value)}")
            try:
                weights = [float(w) for w in value]
            except OverflowError:
                raise UsageError(f"{where}: weights must be finite numbers; one is too large") from None
            bad = next((w for w in weights if not math.isfinite(w)), None)
            if bad is not None:
                raise UsageError(f"{where}: weights must be finite numbers, got {bad}")
            options[key] = weights
        elif key == "dtype":
            if not isinstance(value, str) or value not in DTYPES:
                raise UsageError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {_show(value)}")
            options[key] = value
        elif key == "compression":
            if not isinstance(value, str) or value not in COMPRESSIONS:
                raise UsageError(
                    f"{where}: compression must be one of {', '.join(COMPRESSIONS)}, got {_show(value)}"
                )
            options[key] = value
        elif key == "tile":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_TILE:
                raise UsageError(f"{where}: tile must be an integer from 1 to {MAX_TILE}, got {_show(value)}")
            if value % 16:
                raise UsageError(f"{where}: tile must be a multiple of 16, got {value}")
            options[key] = value
        elif key == "threads":  # any positive count: more than avgstack uses is capped with a note
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UsageError(f"{where}: threads must be a positive integer, got {_show(value)}")
            options[key] = value
        elif key in _SCHEDULER_KEYS:
            if not isinstance(value, str) or not value:
                raise UsageError(f"{where}: {key} must be a string such as \"tcp://head:8786\" or a path")
            options.update(dict.fromkeys(_SCHEDULER_KEYS))  # a job's scheduler replaces the default one
            options[key] = os.path.join(folder, value) if key == "scheduler_file" else value
        elif key in _METHOD_KEYS:
            options[key] = value  # checked with the job's other method keys (_check_method)
        elif key == "max_memory":
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise UsageError(f"{where}: max_memory must be a size such as \"512MiB\", got {_kind(value)}")
            try:
                options[key] = parse_size(value)
            except UsageError as err:
                raise UsageError(f"{where}: max_memory: {err}") from None
        else:  # nodata, renormalize, min_count, alpha: checked as the API checks them
            try:
                JobOptions.create(**{key: value})
            except UsageError as err:
                raise UsageError(f"{where}: {err}") from None
            options[key] = value
    return options


def _check_method(where: str, options: dict[str, Any]) -> None:
    """The job's method, its parameters and weights, checked together."""
    try:
        JobOptions.from_mapping({k: v for k, v in options.items() if k in _METHOD_KEYS or k == "weights"})
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None


def _path(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: {key} must be a non-empty string (a path), got {_show(value)}")
    if "\0" in value:
        raise UsageError(f"{where}: {key} holds a NUL character, which no file name can")
    return value


#: Deepest nesting of arrays and inline tables taken (a batch file needs 2; the parser recurses).
MAX_NESTING = 64


def _nesting(text: str) -> int:
    """How deep arrays and inline tables nest in TOML ``text`` (strings and comments skipped)."""
    depth = deepest = i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif char in "\"'":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if char == '"' and text[i] == "\\":
                    i += 1
                elif len(quote) == 1 and text[i] == "\n":
                    break
                i += 1
            i += len(quote)
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
        i += 1
    return deepest


def _read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):  # imported here: only --batch needs it (start-up time)
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BATCH_BYTES + 1)
    except OSError as err:
        raise UsageError(f"{path}: cannot read batch file ({err.strerror or err})") from err
    except ValueError as err:
        raise UsageError(f"{path}: cannot read batch file ({err})") from err
    if len(raw) > MAX_BATCH_BYTES:
        raise UsageError(f"{path}: not a batch file (larger than {MAX_BATCH_BYTES // 2**20} MiB)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UsageError(
            f"{path}: not valid TOML (line {line} is not UTF-8 text; TOML files are UTF-8)"
        ) from err
    if _nesting(text) > MAX_NESTING:
        raise UsageError(f"{path}: not valid TOML for avgstack (arrays or tables nest more than {MAX_NESTING} deep)")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"{path}: not valid TOML ({err})") from err
    except RecursionError as err:
        raise UsageError(f"{path}: not valid TOML (arrays or tables nest too deep)") from err
    except (ValueError, MemoryError) as err:  # e.g. an integer with too many digits
        raise UsageError(f"{path}: not valid TOML ({type(err).__name__}: {str(err)[:100]})") from err


def load_batch(path: str) -> list[BatchJob]:
    """Read and fully validate a batch file.

    Raises
    ------
    UsageError
        The file cannot be read, is not TOML, or has an invalid key or value.
    """
    data = _read_toml(path)
    folder = os.path.dirname(os.path.abspath(path))
    unknown = set(data) - _OPTION_KEYS - _SCHEDULER_KEYS - {"jobs"}
    if unknown:
        raise UsageError(f"{path}: unknown top-level key(s): {', '.join(map(_show, sorted(unknown)))}")
    defaults = _check_options(f"{path}: defaults", {k: v for k, v in data.items() if k != "jobs"}, folder)
    tables = data.get("jobs")
    if not isinstance(tables, list) or not tables:
        raise UsageError(f"{path}: no [[jobs]] tables")
    jobs: list[BatchJob] = []
    outputs: set[str] = set()
    for number, table in enumerate(tables, 1):
        where = f"{path}: job {number}"
        if not isinstance(table, dict):
            raise UsageError(f"{where}: must be a table")
        unknown = set(table) - _JOB_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown key(s): {', '.join(map(_show, sorted(unknown)))}")
        if "output" not in table:
            raise UsageError(f"{where}: 'output' (a file path) is required")
        output = _path(where, "output", table["output"])
        inputs = table.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise UsageError(f"{where}: 'inputs' must be a non-empty array of paths, globs or @lists")
        for i, item in enumerate(inputs, 1):
            _path(where, f"inputs[{i}]", item)
        output = output if os.path.isabs(output) else os.path.join(folder, output)
        if os.path.abspath(output) in outputs:
            raise UsageError(f"{where}: output {output} is already written by an earlier job")
        outputs.add(os.path.abspath(output))
        options = dict(defaults)
        keys = _OPTION_KEYS | _SCHEDULER_KEYS
        options.update(_check_options(where, {k: v for k, v in table.items() if k in keys}, folder))
        _check_method(where, options)
        jobs.append(BatchJob(number, output, tuple(inputs), options))
    return jobs


def is_up_to_date(output: str, inputs: list[str], batch_file: str) -> bool:
    """True if ``output`` exists and is newer than every input and the batch file."""
    from ..reading.tiff import split_page_suffix

    try:
        done = os.stat(output).st_mtime
        newest = max(os.stat(split_page_suffix(p)[0]).st_mtime for p in [*inputs, batch_file])
    except (OSError, ValueError):
        return False
    return done > newest
