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
from .planning import DEFAULT_MAX_MEMORY, parse_size

__all__ = [
    "JobOptions", "DTYPES", "COMPRESSIONS", "MAX_THREADS", "parse_dtype", "check_weights", "default_threads",
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
    """

    weights: tuple[float, ...] | None = None
    dtype: np.dtype | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    threads: int = field(default_factory=default_threads)
    compression: str = "none"
    tile: int | None = None
    method: str = "mean"
    params: Mapping[str, Any] = field(default_factory=dict)
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
        nodata: Any = None,
        renormalize: Any = False,
        min_count: Any = None,
        alpha: Any = None,
        count_map: Any = None,
        **params: Any,
    ) -> "JobOptions":
        """Validate raw option values (as given to the API) into options."""
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
        return cls(
            weights=check_weights(weights),
            dtype=parse_dtype(dtype),
            max_memory=DEFAULT_MAX_MEMORY if max_memory is None else parse_size(max_memory),
            threads=_check_threads(threads),
            compression=compression,
            tile=_check_tile(tile),
            method=method or "mean",
            params=dict(params),
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
            "weights", "dtype", "max_memory", "threads", "compression", "tile", "method",
            "nodata", "renormalize", "min_count", "alpha", "count_map",
        }
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return cls.create(**{k: v for k, v in values.items() if v is not None})

    def with_count(self, count: int) -> "JobOptions":
        """Check the weights against the number of inputs."""
        check_weights(self.weights, count)
        return self

    def replace(self, **changes: Any) -> "JobOptions":
        """A copy with some fields changed (already validated values)."""
        return replace(self, **changes)

    @property
    def weighted(self) -> bool:
        """Whether a weighted sum is asked for."""
        return self.weights is not None

    def sequence_weights(self) -> Sequence[float] | None:
        """Weights as a list, or None."""
        return None if self.weights is None else list(self.weights)
