"""Sorting and selection networks run on rows of samples.

A column of a ``(N, chunk)`` slab holds one sample's N values; a
compare-exchange ``(a, b)`` puts ``min`` in row ``a`` and ``max`` in row ``b``
of every column at once, with two vectorised numpy calls. Batcher's
merge-exchange network sorts any N; pruned backwards from the output positions
a method needs, it becomes a selection network (the median of 11 values needs
31 compare-exchanges of the 37 that sort them). A network permutes values, so
the rows outside the selected positions still hold the other values, unsorted:
minmax rejection uses that to find its survivors with only the extremes placed.

For large N the networks grow as N log^2 N and numpy's ``partition`` /
``sort`` along axis 0 take over (:data:`NETWORK_MAX`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["NETWORK_MAX", "merge_exchange", "network", "order_rows", "prune"]

#: Largest N sorted with a network; above it numpy's partition/sort along axis 0 is faster
#: (measured on (N, 16Ki) uint8..float64 slabs: the network wins by 3-80x at N = 11 and 25).
NETWORK_MAX = 64


def merge_exchange(n: int) -> list[tuple[int, int]]:
    """Batcher's merge-exchange sorting network for ``n`` inputs (Knuth, TAOCP 5.2.2, Algorithm M)."""
    pairs: list[tuple[int, int]] = []
    if n < 2:
        return pairs
    t = (n - 1).bit_length()
    p = 1 << (t - 1)
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            pairs.extend((i, i + d) for i in range(n - d) if i & p == r)
            if q == p:
                break
            d, q, r = q - p, q >> 1, p
        p >>= 1
    return pairs


def prune(pairs: Sequence[tuple[int, int]], needed: Iterable[int]) -> list[tuple[int, int]]:
    """The compare-exchanges of ``pairs`` that can change the values at positions ``needed``."""
    want = set(needed)
    kept = []
    for a, b in reversed(pairs):
        if a in want or b in want:
            kept.append((a, b))
            want.update((a, b))
    return kept[::-1]


@functools.lru_cache(maxsize=64)
def network(n: int, needed: tuple[int, ...] | None = None) -> tuple[tuple[int, int], ...]:
    """A network placing the sorted values of positions ``needed`` (all when None) among ``n`` rows."""
    pairs = merge_exchange(n)
    return tuple(pairs if needed is None else prune(pairs, needed))


def order_rows(
    rows: Sequence[np.ndarray], scratch: np.ndarray, needed: tuple[int, ...] | None = None
) -> list[np.ndarray]:
    """Rows whose positions ``needed`` hold those order statistics of every column of ``rows``.

    Parameters
    ----------
    rows : sequence of ndarray
        N equally long 1-D arrays (one per frame); they are only read.
    scratch : ndarray
        ``(N + 2, len)`` or larger, of the rows' dtype: where results are written.
    needed : tuple of int, optional
        Sorted positions wanted (all when None). Other positions hold the
        remaining values in some order.

    Returns
    -------
    list of ndarray
        N rows, each either one of ``rows`` or a row of ``scratch``.
    """
    n = len(rows)
    k = len(rows[0]) if n else 0
    if n > NETWORK_MAX:
        slab = scratch[:n, :k]
        for i, r in enumerate(rows):
            slab[i] = r
        if needed is None or len(needed) > 8:
            slab.sort(axis=0)
        else:
            slab.partition(list(needed), axis=0)
        return list(slab)
    out = list(rows)
    owned = [False] * n
    free = [scratch[i, :k] for i in range(scratch.shape[0])]
    minimum, maximum = np.minimum, np.maximum
    for a, b in network(n, needed):
        x, y = out[a], out[b]
        lo, hi = free.pop(), free.pop()
        minimum(x, y, out=lo)
        maximum(x, y, out=hi)
        if owned[a]:
            free.append(x)
        if owned[b]:
            free.append(y)
        out[a], out[b] = lo, hi
        owned[a] = owned[b] = True
    return out
