"""Reducers: what is computed over the frames of a band, behind one contract (see :mod:`.base`).

:func:`reducer_class` is the one place that maps a :class:`~.base.ReduceSpec`
to its reducer; a new method adds an entry to :data:`METHODS` and a class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from .base import CUBE, FRAME, Reducer, ReduceSpec

__all__ = ["CUBE", "FRAME", "METHODS", "ReduceSpec", "Reducer", "reducer_class"]


def _mean(spec: ReduceSpec) -> type[Reducer]:
    from ..arithmetic import reducer_class as arithmetic_reducer

    return arithmetic_reducer(spec)


def _sum(spec: ReduceSpec) -> type[Reducer]:
    from .extrema import sum_class

    return sum_class(spec)


def _class(module: str, name: str) -> Callable[[ReduceSpec], type[Reducer]]:
    """A chooser that imports ``name`` from ``reducers.<module>`` when first asked (start-up stays light)."""

    def choose(spec: ReduceSpec) -> type[Reducer]:
        return cast("type[Reducer]", getattr(importlib.import_module(f"{__name__}.{module}"), name))

    return choose


#: Method name -> function choosing the reducer class for a spec. ``weighted`` is the
#: weighted sum that ``mean`` and ``sum`` become with weights.
METHODS: dict[str, Callable[[ReduceSpec], type[Reducer]]] = {
    "mean": _mean,
    "weighted": _mean,
    "sum": _sum,
    "min": _class("extrema", "Minimum"),
    "max": _class("extrema", "Maximum"),
    "median": _class("order", "Median"),
    "percentile": _class("order", "Percentile"),
    "std": _class("moments", "Moments"),
    "var": _class("moments", "Moments"),
    "sigma-clip": _class("clipping", "SigmaClip"),
    "minmax": _class("clipping", "MinMax"),
}


def reducer_class(spec: ReduceSpec) -> type[Reducer]:
    """The reducer class that computes ``spec``."""
    try:
        choose = METHODS[spec.method]
    except KeyError:
        raise ValueError(f"unknown method {spec.method!r}") from None
    return choose(spec)
