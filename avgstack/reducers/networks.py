"""Sorting and selection networks run on rows of samples.

A column of a ``(N, chunk)`` slab holds one sample's N values; a
compare-exchange ``(a, b)`` puts ``min`` in row ``a`` and ``max`` in row ``b``
of every column at once, with two vectorised numpy calls. Batcher's
merge-exchange network sorts any N; pruned backwards from the output positions
a method needs, it becomes a selection network (the median of 11 values needs
31 compare-exchanges of the 37 that sort them). A network permutes values, so
the rows outside the selected positions still hold the other values, unsorted:
minmax rejection uses that to find its survivors with only the extremes placed.

For large N the networks grow as N log^2 N: above :data:`NETWORK_MAX` frames
numpy's ``partition`` / ``sort`` along contiguous rows of N values take over,
and 8-bit medians and percentiles count instead (8 passes, one per bit).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["NETWORK_MAX", "merge_exchange", "network", "order_rows", "prune"]

#: Largest N sorted with a network. Measured (ns per sample, median, uint8 / float32): N = 25:
#: network 11 / 30, np.partition 560 / 80; N = 64: 42 / 200 against 1100 / 200; N = 100 (chunks of
#: 2 Ki): 320 / 430 against 1300 / 150 (partition of contiguous rows) and 120 by counting (uint8).
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
    rows: Sequence[np.ndarray], scratch: np.ndarray, needed: tuple[int, ...] | None = None, *, others: bool = True
) -> list[np.ndarray]:
    """Rows whose positions ``needed`` hold those order statistics of every column of ``rows``.

    Parameters
    ----------
    rows : sequence of ndarray
        N equally long 1-D arrays (one per frame); they are only read.
    scratch : ndarray
        The declared ``(N + 2, chunk)`` C-contiguous buffer of the rows' dtype, ``chunk >= len(rows[0])``:
        where results are written.
    needed : tuple of int, optional
        Sorted positions wanted (all when None).
    others : bool
        Whether the positions not ``needed`` must hold the remaining values (in some order), as
        minmax rejection needs; when False they may hold anything.

    Returns
    -------
    list of ndarray
        N rows (views of ``rows`` or of ``scratch``); only ``needed`` positions are meaningful
        when ``others`` is False.
    """
    n = len(rows)
    k = len(rows[0]) if n else 0
    if n > NETWORK_MAX:
        if not others and needed is not None and len(needed) <= 2 and rows[0].dtype.itemsize == 1:
            return _select_by_bits(rows, scratch, needed)
        # numpy's selection along contiguous rows of N values (SIMD introselect for 16-bit and wider)
        block = scratch.reshape(-1)[: k * n].reshape(k, n)
        for i, r in enumerate(rows):
            block[:, i] = r
        if needed is None or len(needed) > 8:
            block.sort(axis=1)
        else:
            block.partition(list(needed), axis=1)
        return [block[:, i] for i in range(n)]
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


def _select_by_bits(rows: Sequence[np.ndarray], scratch: np.ndarray, needed: tuple[int, ...]) -> list[np.ndarray]:
    """8-bit order statistics by counting: 8 passes, each fixing one bit of the answer.

    The answer's next bit is 1 when at most ``position`` values lie below the candidate with
    that bit set. Costs 16 N cheap byte operations per sample, against N log^2 N for a network.
    """
    n, k = len(rows), len(rows[0])
    out = list(rows)
    count_type = np.uint16 if n < 2**16 else np.uint32
    counts = np.empty(k, count_type)
    below = np.empty(k, np.bool_)
    for j, position in enumerate(needed):
        result = scratch[j, :k]
        candidate = scratch[-1, :k]
        result[...] = 0
        for bit in range(7, -1, -1):
            np.bitwise_or(result, 1 << bit, out=candidate)
            counts[...] = 0
            for r in rows:
                np.less(r, candidate, out=below)
                np.add(counts, below, out=counts, casting="unsafe")
            np.copyto(result, candidate, where=np.less_equal(counts, position))
        out[position] = result
    return out
