"""Missing data: nodata values, NaN as nodata, per-sample counts of valid frames.

A job's missing-data rules are a :class:`Missing` value, resolved once from the
options and the inputs' ``GDAL_NODATA`` tags (:func:`resolve`), and carried to
the reducers in the :class:`~avgstack.reducers.base.ReduceSpec` params
(:meth:`Missing.params`, read back with :func:`from_spec`). The reducer base
class turns them into a boolean mask of valid samples per frame and a count
of valid frames per sample (see :mod:`avgstack.reducers.base`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import IncompatibleInputsError, UsageError

__all__ = [
    "Missing", "NONE", "parse_nodata", "parse_tag", "resolve", "from_spec", "count_dtype", "valid_mask",
    "with_nodata_tag", "GDAL_NODATA",
]

#: TIFF tag GDAL writes the nodata value to (ASCII).
GDAL_NODATA = 42113
#: ``nodata='none'`` / ``--nodata none``: average every sample as a number, write no nodata tag.
NONE = "none"


@dataclass(frozen=True)
class Missing:
    """What counts as missing and what becomes of pixels with too few valid frames.

    Attributes
    ----------
    nodata : float or None
        Samples equal to it (NaN: NaN samples) are missing; None: nothing is.
    renormalize : bool
        Weighted sums are scaled by ``sum(w) / sum(valid w)`` per sample.
    min_count : int
        Samples with fewer valid frames than this become ``nodata`` (at least 1).
    """

    nodata: float | None = None
    renormalize: bool = False
    min_count: int = 1

    @property
    def active(self) -> bool:
        """Whether any sample can be missing."""
        return self.nodata is not None

    def params(self) -> dict[str, Any]:
        """The ReduceSpec params describing these rules (none when nothing is missing)."""
        if not self.active:
            return {}
        return {"nodata": self.nodata, "renormalize": self.renormalize, "min_count": self.min_count}

    def describe(self) -> str:
        """For plans: ``nodata -9999 (from GDAL_NODATA), at least 2 valid frames``."""
        if not self.active:
            return "no nodata value: every sample is averaged"
        text = f"nodata {format_nodata(self.nodata)}"
        if self.min_count > 1:
            text += f", at least {self.min_count} valid frames"
        if self.renormalize:
            text += ", weights renormalized over valid frames"
        return text


def format_nodata(value: float | None) -> str:
    """``-9999``, ``nan`` or ``1.5``: as GDAL writes it."""
    if value is None:
        return NONE
    if math.isnan(value):
        return "nan"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def parse_nodata(value: Any) -> float | str | None:
    """Validate ``nodata=`` / ``--nodata``: a number, ``'nan'``, ``'none'`` or None (from the inputs' tags)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NONE:
            return NONE
        try:
            number = float(text)
        except ValueError:
            raise UsageError(
                f"nodata (--nodata) must be a number, 'nan' or 'none', got {value!r}"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UsageError(f"nodata (--nodata) must be a number, 'nan' or 'none', got {value!r}")
    else:
        number = float(value)
    if math.isinf(number):
        raise UsageError(f"nodata (--nodata) must be finite or nan, got {value!r}")
    return number


def parse_tag(text: Any) -> float | None:
    """The value of a ``GDAL_NODATA`` tag, or None when it is not a number."""
    if isinstance(text, (int, float)):
        return float(text)
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        return None
    try:
        return float(text.strip().strip("\x00"))
    except ValueError:
        return None


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def resolve(
    option: float | str | None,
    infos: Sequence[Any],
    out_dtype: np.dtype,
    *,
    weighted: bool,
    renormalize: bool = False,
    min_count: int | None = None,
) -> Missing:
    """The job's rules from the ``nodata`` option and the inputs' declared values.

    Raises
    ------
    IncompatibleInputsError
        Inputs declare different nodata values and ``nodata`` was not given.
    UsageError
        A nodata value the output type cannot hold, ``min_count`` or
        ``renormalize`` without a nodata value, ``renormalize`` without weights.
    """
    if option == NONE:
        nodata = None
    elif option is not None:
        nodata = float(option)
    else:
        nodata, first = None, infos[0]
        for info in infos:
            declared = info.metadata.get("nodata")
            if declared is None:
                continue
            if nodata is None:
                nodata, first = declared, info
            elif not _same(declared, nodata):
                raise IncompatibleInputsError(
                    f"{info.name}: declares nodata {format_nodata(declared)}, {first.name} declares "
                    f"{format_nodata(nodata)}; choose one with nodata (--nodata VALUE), or --nodata none"
                )
    if nodata is None:
        if min_count is not None and min_count > 1:
            raise UsageError("min_count (--min-count) needs a nodata value (nodata / --nodata VALUE)")
        if renormalize:
            raise UsageError("renormalize (--renormalize) needs a nodata value (nodata / --nodata VALUE)")
        return Missing()
    if renormalize and not weighted:
        raise UsageError("renormalize (--renormalize) applies to weighted sums (weights / --weights)")
    out_dtype = np.dtype(out_dtype)
    if out_dtype.kind in "ui":
        info = np.iinfo(out_dtype)
        if math.isnan(nodata) or not nodata.is_integer() or not info.min <= nodata <= info.max:
            raise UsageError(
                f"nodata {format_nodata(nodata)} cannot be stored as {out_dtype.name}: choose another "
                "nodata (--nodata) or output type (dtype / --dtype)"
            )
    elif out_dtype.kind == "f" and not math.isnan(nodata) and abs(nodata) > float(np.finfo(out_dtype).max):
        raise UsageError(f"nodata {format_nodata(nodata)} does not fit {out_dtype.name}")
    return Missing(nodata, renormalize, max(1, int(min_count or 1)))


def from_spec(spec: Any) -> Missing:
    """The rules a ReduceSpec carries."""
    nodata = spec.param("nodata")
    if nodata is None:
        return Missing()
    return Missing(float(nodata), bool(spec.param("renormalize", False)), int(spec.param("min_count", 1)))


def check_min_count(value: Any) -> int | None:
    """Validate ``min_count=`` / ``--min-count``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"min_count (--min-count) must be a whole number of at least 1, got {value!r}")
    return int(value)


def count_dtype(frames: int) -> np.dtype:
    """Type of per-sample frame counts: uint16, or uint32 beyond 65535 frames."""
    return np.dtype(np.uint16 if frames <= 0xFFFF else np.uint32)


def valid_mask(flat: np.ndarray, nodata: float, out: np.ndarray) -> np.ndarray:
    """Write into bool ``out`` where ``flat`` holds a valid (not nodata) sample; return ``out``."""
    if math.isnan(nodata):
        if flat.dtype.kind == "f":
            np.isnan(flat, out=out)
            np.logical_not(out, out=out)
        else:
            out[...] = True
        return out
    if flat.dtype.kind in "uib":
        info = np.iinfo(np.uint8 if flat.dtype == np.bool_ else flat.dtype)
        if not (nodata.is_integer() and info.min <= nodata <= info.max):
            out[...] = True  # no stored sample can equal it
            return out
        np.not_equal(flat, flat.dtype.type(int(nodata)), out=out)
        return out
    np.not_equal(flat, flat.dtype.type(nodata), out=out)  # compared in the samples' own type, as stored
    return out


def with_nodata_tag(
    metadata: Callable[[], dict[str, Any]] | None, missing: Missing
) -> Callable[[], dict[str, Any]] | None:
    """Carried metadata with the ``GDAL_NODATA`` tag the output needs: the job's value, or none at all."""
    if metadata is None and not missing.active:
        return None

    def carried() -> dict[str, Any]:
        values = dict(metadata()) if metadata is not None else {}
        tags: Iterable[tuple] = values.get("extratags") or ()
        kept = [t for t in tags if t[0] != GDAL_NODATA]
        if missing.active:
            kept.append((GDAL_NODATA, "s", 0, format_nodata(missing.nodata), True))
        values["extratags"] = kept
        return values

    return carried


def rules_for(stack: Any, options: Any) -> Missing:
    """The missing-data rules of a job over an open :class:`~avgstack.stack.Stack` with its options."""
    return resolve(
        options.nodata, stack.infos, stack.out_dtype, weighted=options.weights is not None,
        renormalize=options.renormalize, min_count=options.min_count,
    )


def spec_params(options: Any, missing: Missing) -> dict[str, Any]:
    """ReduceSpec params for the job's missing data and count map."""
    params = missing.params()
    if getattr(options, "count_map", None):
        params["counts"] = True
    return params


def with_missing(layout: Any, missing: Missing) -> Any:
    """A sink layout whose carried metadata has the job's ``GDAL_NODATA`` tag (or none)."""
    from dataclasses import replace

    return replace(layout, metadata=with_nodata_tag(layout.metadata, missing))
