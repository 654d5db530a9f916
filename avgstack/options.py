"""Job options as one validated value, shared by the command line, batch files and the API.

:class:`JobOptions` checks every option once, where it is made; everything
downstream takes the value as it is. Messages name the API parameter and the
command-line flag, so they read right from either door.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import UsageError
from .methods import (  # re-exported: options are where callers look for them
    METHOD_PARAMS,
    METHODS,
    PARAMS,
    check_method,
    default_dtype,
    describe_method,
)
from .planning import DEFAULT_MAX_MEMORY, parse_size

__all__ = [
    "JobOptions", "DTYPES", "COMPRESSIONS", "MAX_THREADS", "METHODS", "METHOD_PARAMS", "PARAMS",
    "parse_dtype", "check_weights", "check_method", "default_dtype", "describe_method", "default_threads",
    "parse_frames",
]

log = logging.getLogger("avgstack")

#: Output types accepted by ``dtype=`` / ``--dtype``.
DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32", "float64")

#: Compression names accepted by ``compression=`` / ``--compression`` and their TIFF codes.
COMPRESSIONS = {"none": 1, "lzw": 5, "deflate": 8, "zstd": 50000, "packbits": 32773, "lzma": 34925}

#: More worker threads than this never help a stack (they only add buffers); more are capped with a note.
MAX_THREADS = 64

#: Values of ``alpha=`` / ``--alpha``.
ALPHA_MODES = ("channel", "coverage")

#: Largest tile side accepted (TIFF tiles are 32-bit sizes; a 65536-square tile is already 16 GiB of RGBA).
MAX_TILE = 65536


def default_threads() -> int:
    """Worker threads by default: the machine's cores, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))


def parse_dtype(dtype: str | np.dtype | type | None) -> np.dtype | None:
    """Validate an output dtype name (``'uint8'``, ``np.float32``, ...)."""
    if dtype is None:
        return None
    try:
        parsed = np.dtype(dtype)
    except TypeError:
        parsed = None
    if parsed is None or parsed.name not in DTYPES:
        raise UsageError(f"unsupported output dtype {dtype!r} (dtype / --dtype); choose from {', '.join(DTYPES)}")
    return parsed


def check_weights(weights: Iterable[Any] | None, count: int | None = None) -> tuple[float, ...] | None:
    """Validate weights: finite numbers, one per input when ``count`` is known."""
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)):
        raise UsageError(f"weights must be numbers, got {weights!r}")
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise UsageError(f"weights must be numbers, got {weights!r}") from None
    bad = [w for w in values if not math.isfinite(w)]
    if bad:
        raise UsageError(f"weights must be finite numbers, got {bad[0]}")
    if count is not None and len(values) != count:
        raise UsageError(f"{len(values)} weight(s) given for {count} input(s); give one weight per input")
    return values


def _check_threads(threads: Any) -> int:
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise UsageError(f"threads (--threads) must be a whole number, got {threads!r}")
    if threads < 1:
        raise UsageError(f"threads (--threads) must be at least 1, got {threads}")
    if threads > MAX_THREADS:
        log.warning("%d threads asked for; using at most %d", threads, MAX_THREADS)
        return MAX_THREADS
    return int(threads)


def _check_tile(tile: Any) -> int | None:
    if tile is None:
        return None
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        raise UsageError(f"tile (--tile) must be a whole number, got {tile!r}")
    if tile <= 0 or tile % 16 or tile > MAX_TILE:
        raise UsageError(f"tile size (tile / --tile) must be a positive multiple of 16 up to {MAX_TILE}, got {tile}")
    return int(tile)


def _check_scheduler(address: Any, path: Any, client: Any) -> dict[str, Any]:
    given = [name for name, value in (("scheduler_address", address), ("scheduler_file", path), ("client", client))
             if value is not None]
    if len(given) > 1:
        raise UsageError(
            f"give at most one of {' and '.join(given)} (client / --scheduler-address / --scheduler-file)"
        )
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise UsageError(f"scheduler_address (--scheduler-address) must be an address such as "
                         f"tcp://host:8786, got {address!r}")
    if path is not None:
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise UsageError(f"scheduler_file (--scheduler-file) must be a path, got {path!r}")
        path = os.fspath(path)
    if client is not None and not (hasattr(client, "submit") and hasattr(client, "scheduler_info")):
        raise UsageError(f"client must be a distributed.Client, got {type(client).__name__}")
    return {"scheduler_address": address, "scheduler_file": path, "client": client}
def parse_frames(frames: Any) -> slice | None:
    """Validate a frame selection: a ``slice``, or ``'START:STOP:STEP'`` (Python slice notation)."""
    if frames is None or isinstance(frames, slice):
        if isinstance(frames, slice):
            for part in (frames.start, frames.stop, frames.step):
                if part is not None and (isinstance(part, bool) or not isinstance(part, (int, np.integer))):
                    raise UsageError(f"frames (--frames) must be a slice of whole numbers, got {frames!r}")
            if frames.step == 0:
                raise UsageError("frames (--frames): the step cannot be zero")
        return frames
    if not isinstance(frames, str) or frames.count(":") not in (1, 2):
        raise UsageError(f"frames (--frames) must be START:STOP or START:STOP:STEP, got {frames!r}")
    try:
        parts = [int(p) if p.strip() else None for p in frames.split(":")]
    except ValueError:
        raise UsageError(f"frames (--frames) must be START:STOP:STEP of whole numbers, got {frames!r}") from None
    return parse_frames(slice(*parts))


def _check_sample(sample: Any) -> int | None:
    if sample is None:
        return None
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1:
        raise UsageError(f"sample (--sample) must be a whole number of frames, at least 1, got {sample!r}")
    return int(sample)


@dataclass(frozen=True)
class JobOptions:
    """Everything a job is asked to do besides its inputs and output, validated once.

    Build it with :meth:`create` (which checks and normalises raw values) or
    :meth:`from_mapping` (batch files, command lines).

    Attributes
    ----------
    weights : tuple of float or None
        One weight per input, or None for the plain mean.
    dtype : numpy.dtype or None
        Output sample type; None for the inputs'.
    max_memory : int
        Budget in bytes.
    threads : int
        Worker threads asked for (at most :data:`MAX_THREADS`).
    compression : str
        TIFF output compression.
    tile : int or None
        TIFF output tile size.
    method : str
        What to compute (``'mean'``).
    params : mapping
        Method parameters.
    scheduler_address : str or None
        Dask scheduler to run on (``tcp://host:8786``), or None.
    scheduler_file : str or None
        Dask scheduler file (written by ``dask scheduler --scheduler-file``), or None.
    client : distributed.Client or None
        A connected Dask client (API only); at most one of the three is set.
    state : str or None
        State file a run resumes from and saves to (``--state``).
    frames : slice or None
        Frames of video inputs to use (``--frames START:STOP:STEP``).
    sample : int or None
        Use this many evenly spaced frames of video inputs (``--sample N``).
    """

    weights: tuple[float, ...] | None = None
    dtype: np.dtype | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    threads: int = field(default_factory=default_threads)
    compression: str = "none"
    tile: int | None = None
    method: str = "mean"
    params: Mapping[str, Any] = field(default_factory=dict)
    scheduler_address: str | None = None
    scheduler_file: str | None = None
    client: Any = field(default=None, compare=False, repr=False)
    state: str | None = None
    frames: slice | None = None
    sample: int | None = None
    #: Missing data (avgstack/missing.py): a number, 'none', or None for the inputs' GDAL_NODATA tag.
    nodata: float | str | None = None
    renormalize: bool = False
    min_count: int | None = None
    #: 'channel' (alpha averaged like any channel) or 'coverage' (colour weighted by alpha).
    alpha: str = "channel"
    #: Where to write the count map (TIFF), or None.
    count_map: str | None = None

    @classmethod
    def create(
        cls,
        weights: Iterable[Any] | None = None,
        *,
        dtype: Any = None,
        max_memory: int | str | None = None,
        threads: Any = None,
        compression: str | None = None,
        tile: Any = None,
        method: str | None = None,
        scheduler_address: str | None = None,
        scheduler_file: str | os.PathLike[str] | None = None,
        client: Any = None,
        state: str | os.PathLike[str] | None = None,
        frames: Any = None,
        sample: Any = None,
        nodata: Any = None,
        renormalize: Any = False,
        min_count: Any = None,
        alpha: Any = None,
        count_map: Any = None,
        **params: Any,
    ) -> "JobOptions":
        """Validate raw option values (as given to the API) into options.

        ``params`` are the method's parameters (:data:`PARAMS`); None means not given.
        """
        from .missing import check_min_count, parse_nodata

        if not isinstance(renormalize, (bool, np.bool_)):
            raise UsageError(f"renormalize (--renormalize) must be True or False, got {renormalize!r}")
        if alpha is None:
            alpha = "channel"
        if alpha not in ALPHA_MODES:
            raise UsageError(f"alpha (--alpha) must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
        if count_map is not None and not isinstance(count_map, (str, os.PathLike)):
            raise UsageError(f"count_map (--count-map) must be a path, got {type(count_map).__name__}")
        if compression is None:
            compression = "none"
        if not isinstance(compression, str) or compression not in COMPRESSIONS:
            raise UsageError(
                f"unknown compression {compression!r} (compression / --compression); "
                f"choose from {', '.join(COMPRESSIONS)}"
            )
        checked_weights = check_weights(weights)
        method, values = check_method(method, params, checked_weights is not None)
        return cls(
            weights=checked_weights,
            dtype=parse_dtype(dtype),
            max_memory=DEFAULT_MAX_MEMORY if max_memory is None else parse_size(max_memory),
            threads=_check_threads(threads),
            compression=compression,
            tile=_check_tile(tile),
            method=method,
            params=values,
            **_check_scheduler(scheduler_address, scheduler_file, client),
            state=None if state is None else os.fspath(state),
            frames=parse_frames(frames),
            sample=_check_sample(sample),
            nodata=parse_nodata(nodata),
            renormalize=bool(renormalize),
            min_count=check_min_count(min_count),
            alpha=alpha,
            count_map=None if count_map is None else os.fspath(count_map),
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "JobOptions":
        """Options from a mapping of option names (absent or None means default)."""
        known = {
            "weights", "dtype", "max_memory", "threads", "compression", "tile", "method", *PARAMS,
            "scheduler_address", "scheduler_file", "client", "state", "frames", "sample",
            "nodata", "renormalize", "min_count", "alpha", "count_map",
        }
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls.create(**{k: v for k, v in values.items() if v is not None})

    def with_count(self, count: int) -> "JobOptions":
        """Check the weights, and the method's parameters, against the number of inputs."""
        check_weights(self.weights, count)
        p = self.params
        if self.method == "minmax" and p["nlow"] + p["nhigh"] >= count:
            raise UsageError(
                f"minmax rejection of {p['nlow']} low and {p['nhigh']} high values (--nlow, --nhigh) "
                f"leaves nothing of {count} input(s); give more inputs or reject fewer"
            )
        if self.method in ("std", "var") and p["ddof"] >= count:
            raise UsageError(f"ddof (--ddof) must be smaller than the number of inputs ({count}), got {p['ddof']}")
        return self

    def out_dtype(self, in_dtype: np.dtype) -> np.dtype:
        """The output type for inputs of ``in_dtype``: ``dtype`` if given, else the method's default."""
        return self.dtype if self.dtype is not None else default_dtype(self.method, in_dtype)

    def describe(self) -> str:
        """The method and its parameters, in words."""
        return describe_method(self.method, self.params, self.weighted)

    def replace(self, **changes: Any) -> "JobOptions":
        """A copy with some fields changed (already validated values)."""
        return replace(self, **changes)

    @property
    def weighted(self) -> bool:
        """Whether a weighted sum is asked for."""
        return self.weights is not None

    @property
    def distributed(self) -> bool:
        """Whether the job runs on a Dask cluster."""
        return self.client is not None or self.scheduler_address is not None or self.scheduler_file is not None

    def sequence_weights(self) -> Sequence[float] | None:
        """Weights as a list, or None."""
        return None if self.weights is None else list(self.weights)
