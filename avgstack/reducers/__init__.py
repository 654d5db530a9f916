"""Reducers: what is computed over the frames of a band, behind one contract (see :mod:`.base`).

:func:`reducer_class` is the one place that maps a :class:`~.base.ReduceSpec`
to its reducer; a new method adds an entry to :data:`METHODS` and a class.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import CUBE, FRAME, Reducer, ReduceSpec

__all__ = ["CUBE", "FRAME", "METHODS", "ReduceSpec", "Reducer", "reducer_class"]


def _mean(spec: ReduceSpec) -> type[Reducer]:
    from ..arithmetic import reducer_class as arithmetic_reducer

    return arithmetic_reducer(spec)


def _sum(spec: ReduceSpec) -> type[Reducer]:
    from .extrema import sum_class

    return sum_class(spec)


def _minimum(spec: ReduceSpec) -> type[Reducer]:
    from .extrema import Minimum

    return Minimum


def _maximum(spec: ReduceSpec) -> type[Reducer]:
    from .extrema import Maximum

    return Maximum


def _median(spec: ReduceSpec) -> type[Reducer]:
    from .order import Median

    return Median


def _percentile(spec: ReduceSpec) -> type[Reducer]:
    from .order import Percentile

    return Percentile


def _moments(spec: ReduceSpec) -> type[Reducer]:
    from .moments import Moments

    return Moments


def _sigma_clip(spec: ReduceSpec) -> type[Reducer]:
    from .clipping import SigmaClip

    return SigmaClip


def _minmax(spec: ReduceSpec) -> type[Reducer]:
    from .clipping import MinMax

    return MinMax


#: Method name -> function choosing the reducer class for a spec. ``weighted`` is the
#: weighted sum that ``mean`` and ``sum`` become with weights.
METHODS: dict[str, Callable[[ReduceSpec], type[Reducer]]] = {
    "mean": _mean,
    "weighted": _mean,
    "sum": _sum,
    "min": _minimum,
    "max": _maximum,
    "median": _median,
    "percentile": _percentile,
    "std": _moments,
    "var": _moments,
    "sigma-clip": _sigma_clip,
    "minmax": _minmax,
}


def reducer_class(spec: ReduceSpec) -> type[Reducer]:
    """The reducer class that computes ``spec``."""
    try:
        choose = METHODS[spec.method]
    except KeyError:
        raise ValueError(f"unknown method {spec.method!r}") from None
    return choose(spec)
