"""The methods a job can compute and their parameters, checked once (``method=`` / ``--method``).

What each method computes lives in :mod:`avgstack.reducers`; this module only
validates names and parameters and words them for plans and reports.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from .errors import UsageError

__all__ = [
    "METHOD_PARAMS", "METHODS", "PARAMS", "WEIGHTED_METHODS", "check_method", "default_dtype", "describe_method",
]


#: What ``method=`` / ``--method`` accepts, and the parameters each takes with their defaults
#: (None: required).
METHOD_PARAMS: dict[str, dict[str, Any]] = {
    "mean": {},
    "sum": {},
    "min": {},
    "max": {},
    "median": {},
    "percentile": {"percentile": None},
    "std": {"ddof": 0},
    "var": {"ddof": 0},
    "sigma-clip": {"sigma_low": 3.0, "sigma_high": 3.0, "max_iters": 5},
    "minmax": {"nlow": 1, "nhigh": 1},
}
METHODS = tuple(METHOD_PARAMS)
#: Every method parameter, as the API spells it (the flag is ``--`` + the name with dashes).
PARAMS = ("percentile", "sigma_low", "sigma_high", "max_iters", "nlow", "nhigh", "ddof")
#: Methods that take weights.
WEIGHTED_METHODS = ("mean", "sum", "sigma-clip", "minmax")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(name: str, value: Any, *, whole: bool, low: float, high: float | None = None) -> float | int:
    what = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UsageError(f"{name} ({_flag(name)}) must be {what}, got {value!r}")
    if whole and not float(value).is_integer():
        raise UsageError(f"{name} ({_flag(name)}) must be {what}, got {value!r}")
    if not math.isfinite(float(value)) or value < low or (high is not None and value > high):
        span = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise UsageError(f"{name} ({_flag(name)}) must be {span}, got {value!r}")
    return int(value) if whole else float(value)


def check_method(method: Any, params: Mapping[str, Any], weighted: bool = False) -> tuple[str, dict[str, Any]]:
    """Validate a method name and its parameters; return them with defaults filled in.

    Parameters given as None count as not given.
    """
    if method is None:
        method = "mean"
    if not isinstance(method, str) or method not in METHOD_PARAMS:
        raise UsageError(f"unknown method {method!r} (method / --method); choose from {', '.join(METHODS)}")
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(PARAMS))
    if unknown:
        raise UsageError(f"unknown method parameter(s): {', '.join(unknown)}")
    takes = METHOD_PARAMS[method]
    for name in given:
        if name not in takes:
            users = [m for m, p in METHOD_PARAMS.items() if name in p]
            raise UsageError(
                f"{name} ({_flag(name)}) applies only to method {' and '.join(users)}, not {method}"
            )
    if weighted and method not in WEIGHTED_METHODS:
        raise UsageError(
            f"method {method} takes no weights (weights / --weights); weights apply to "
            f"{', '.join(WEIGHTED_METHODS)}"
        )
    values: dict[str, Any] = {}
    for name, default in takes.items():
        value = given.get(name, default)
        if value is None:
            raise UsageError(f"method {method} needs {name} ({_flag(name)} P, from 0 to 100)")
        if name == "percentile":
            values[name] = _number(name, value, whole=False, low=0, high=100)
        elif name in ("sigma_low", "sigma_high"):
            values[name] = _number(name, value, whole=False, low=0)
        elif name == "max_iters":
            values[name] = _number(name, value, whole=True, low=1)
        else:  # nlow, nhigh, ddof
            values[name] = _number(name, value, whole=True, low=0)
    return method, values


def default_dtype(method: str, in_dtype: np.dtype) -> np.dtype:
    """Output type of ``method`` when none is asked for: the inputs', but float for std/var.

    std and var give float32 for integer inputs of 16 bits or less, float64 otherwise.
    """
    in_dtype = np.dtype(in_dtype)
    if method in ("std", "var"):
        small = in_dtype.kind in "uib" and in_dtype.itemsize <= 2
        return np.dtype(np.float32 if small else np.float64)
    return in_dtype


def describe_method(method: str, params: Mapping[str, Any], weighted: bool = False) -> str:
    """Words for plans and reports: ``'median'``, ``'sigma-clip (sigma_low=3, ...)'``."""
    if method == "mean":
        return "weighted sum" if weighted else "exact mean"
    if method == "sum" and weighted:
        return "weighted sum"
    text = method + (" (" + ", ".join(f"{k}={v:g}" for k, v in sorted(params.items())) + ")" if params else "")
    return text + (", weighted" if weighted else "")
