"""Sizing bands of rows from a memory budget.

Pure functions, no I/O: the engine describes every buffer it will allocate as
either a fixed number of bytes or a number of bytes per band row, and
:func:`plan_bands` picks the tallest band that fits the budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .buffers import Buffer, breakdown, opaque, total
from .errors import BudgetError, UsageError
from .windows import Band, cover

__all__ = ["Plan", "plan_bands", "plan_declared", "parse_size", "format_size", "DEFAULT_MAX_MEMORY"]

#: Default budget for pixel buffers: enough for tall bands on large images,
#: small enough for a shared server or a laptop.
DEFAULT_MAX_MEMORY = 512 * 2**20

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
    "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int) -> int:
    """Parse a memory size such as ``"512MiB"``, ``"2GB"`` or ``"1e9"`` into bytes.

    Decimal units (kB, MB, GB) are powers of 1000, binary units (KiB, MiB,
    GiB) powers of 1024; a bare number is bytes.

    Raises
    ------
    UsageError
        If the text is not a positive size.
    """
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_RE.match(str(text))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            try:
                value = int(float(text))
            except (ValueError, OverflowError):
                raise UsageError(
                    f"invalid size {text!r}: use a number with a unit such as 512MiB or 2GB"
                ) from None
        else:
            number = float(match.group(1)) * _UNITS[unit]
            if not math.isfinite(number) or number >= 2**63:
                raise UsageError(f"invalid size {text!r}: too large")
            value = int(number)
    if value <= 0:
        raise UsageError(f"invalid size {text!r}: must be positive")
    return value


def format_size(nbytes: float) -> str:
    """Format a byte count for people: ``format_size(3 * 2**20) == '3.0 MiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(nbytes) < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Plan:
    """How an image of ``height`` rows is processed.

    Attributes
    ----------
    band_height : int
        Rows per band (the last band may be shorter).
    bands : tuple of Band
        Consecutive bands covering every row exactly once.
    memory : int
        Bytes of buffers the plan allocates at most.
    breakdown : dict
        Bytes per named buffer at ``band_height``.
    buffers : tuple of Buffer
        The declarations at ``band_height``, which the executor allocates.
    """

    band_height: int
    bands: tuple[Band, ...]
    memory: int
    breakdown: Mapping[str, int] = field(default_factory=dict)
    buffers: tuple[Buffer, ...] = ()


def plan_declared(
    height: int,
    *,
    budget: int,
    declare: Callable[[int], Sequence[Buffer]],
    align: int = 1,
    prefer_align: int = 1,
    max_rows: int | None = None,
    what: str = "this stack",
) -> Plan:
    """Choose the tallest band whose declared buffers fit ``budget``.

    ``declare(rows)`` returns every buffer a band of ``rows`` rows needs; its
    total must not decrease as ``rows`` grows. The other parameters are those
    of :func:`plan_bands`.

    Raises
    ------
    BudgetError
        If not even one aligned band fits the budget.
    """
    if align <= 0 or prefer_align <= 0:
        raise ValueError("alignment must be positive")

    def cost(rows: int) -> int:
        return total(declare(rows))

    # the tallest band that fits, by bisection over a monotone cost
    lo, hi = 0, height
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    rows = lo
    lcm = math.lcm(align, prefer_align)
    if max_rows is not None:
        # the cap is a preference: never below one aligned band, nor below the preferred alignment if it fits
        rows = min(rows, max(max_rows, align, lcm if lcm <= rows else 1))
    rows = min(rows, height)
    step = lcm if rows >= lcm or rows >= height else align
    band_height = height if rows >= height else (rows // step) * step
    if align <= band_height < min(lcm, height) and lcm % band_height:
        # bands shorter than the input segments: a height dividing them decodes each segment
        # lcm / h times, where any other height decodes some one time more
        divisor = max(d for d in range(align, band_height + 1, align) if lcm % d == 0)
        if 2 * divisor >= band_height:
            band_height = divisor
    if band_height <= 0:
        least = min(align, height)
        fixed, at_least = cost(0), cost(least)
        error = BudgetError(
            f"{what} needs at least {format_size(at_least)} of memory "
            f"({format_size(fixed)} fixed + {format_size((at_least - fixed) / least)} per row, "
            f"{least} rows at least) but the budget is {format_size(budget)}; "
            "raise max_memory (--max-memory), or use tiled or striped TIFF inputs and output"
        )
        error.needed_text = f"at least {format_size(at_least)}"
        raise error
    buffers = tuple(declare(band_height))
    return Plan(
        band_height=band_height,
        bands=tuple(cover(height, band_height)),
        memory=total(buffers),
        breakdown=breakdown(buffers),
        buffers=buffers,
    )


def plan_bands(
    height: int,
    *,
    budget: int,
    per_row: Mapping[str, int],
    fixed: Mapping[str, int] | None = None,
    align: int = 1,
    prefer_align: int = 1,
    max_rows: int | None = None,
    what: str = "this stack",
) -> Plan:
    """Choose the tallest band of rows whose buffers fit ``budget``.

    Parameters
    ----------
    height : int
        Image height in rows.
    budget : int
        Bytes available for pixel buffers.
    per_row : mapping of str to int
        Buffers whose size grows with the band: bytes per band row.
    fixed : mapping of str to int, optional
        Buffers of a fixed size, in bytes.
    align : int
        Band heights must be a multiple of this (output strip or tile height);
        the last band is exempt.
    prefer_align : int
        A multiple of ``align`` to prefer when it fits (input strip or tile
        height, so that no input segment is decoded twice).
    max_rows : int, optional
        Do not make bands taller than this, even if the budget allows.
    what : str
        Named in the error message.

    Raises
    ------
    BudgetError
        If not even one aligned band fits the budget.
    """
    fixed_buffers = [opaque(name, n) for name, n in (fixed or {}).items()]

    def declare(rows: int) -> list[Buffer]:
        return [*(opaque(name, n * rows) for name, n in per_row.items()), *fixed_buffers]

    return plan_declared(
        height, budget=budget, declare=declare, align=align, prefer_align=prefer_align,
        max_rows=max_rows, what=what,
    )
