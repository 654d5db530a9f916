"""Reducers: what is computed over the frames of a band, behind one contract (see :mod:`.base`).

:func:`reducer_class` is the one place that maps a :class:`~.base.ReduceSpec`
to its reducer; a new method adds an entry to :data:`METHODS` and a class.
"""

from __future__ import annotations

from typing import Callable

from .base import CUBE, FRAME, ReduceSpec, Reducer

__all__ = ["ReduceSpec", "Reducer", "FRAME", "CUBE", "METHODS", "reducer_class"]


def _mean(spec: ReduceSpec) -> type[Reducer]:
    from ..arithmetic import reducer_class as arithmetic_reducer

    return arithmetic_reducer(spec)


#: Method name -> function choosing the reducer class for a spec.
METHODS: dict[str, Callable[[ReduceSpec], type[Reducer]]] = {
    "mean": _mean,
    "weighted": _mean,
}


def reducer_class(spec: ReduceSpec) -> type[Reducer]:
    """The reducer class that computes ``spec``."""
    try:
        choose = METHODS[spec.method]
    except KeyError:
        raise ValueError(f"unknown method {spec.method!r}") from None
    return choose(spec)
