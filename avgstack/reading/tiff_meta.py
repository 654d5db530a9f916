"""TIFF pages on their word: the page syntax, opening one page after checking its IFDs, and the
metadata an output carries from it (ICC profile, resolution, GeoTIFF and GDAL tags), each capped.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

from ..errors import BudgetError, InputError
from .tiff_checks import PageMissing, TableTooLarge, TagTooLarge, scan_ifd

if TYPE_CHECKING:
    import tifffile

__all__ = ["split_page_suffix", "open_page", "carried", "CARRIED_TAG_LIMIT", "DEFAULT_TABLE_LIMIT"]

log = logging.getLogger("avgstack.reading.tiff")

#: Tags copied verbatim to the output: orientation, GeoTIFF and GDAL metadata.
_CARRIED_TAGS = (
    274,  # Orientation
    301, 318, 319,  # TransferFunction, WhitePoint, PrimaryChromaticities
    332, 333, 334, 336,  # InkSet, InkNames, NumberOfInks, DotRange
    33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113,  # GeoTIFF, GDAL
)
#: Carried tags (ICC profile, GeoTIFF, GDAL metadata, ...) larger than this are dropped with a warning.
CARRIED_TAG_LIMIT = 16 * 2**20
#: Strip/tile tables may hold this much when no budget is given.
DEFAULT_TABLE_LIMIT = 64 * 2**20
_PAGE_SUFFIX = re.compile(r"^(?P<path>.*)\[(?P<page>\d+)\]$")


def split_page_suffix(spec: str) -> tuple[str, int]:
    """Split ``'scan.tif[2]'`` into ``('scan.tif', 2)``; a plain path gets page 0.

    A path that exists as written is never split, so files whose names end in
    brackets still work.
    """
    match = _PAGE_SUFFIX.match(spec)
    if match is None or os.path.exists(spec):
        return spec, 0
    return match.group("path"), int(match.group("page"))


def open_page(path: str, page: int, name: str, table_limit: int) -> tifffile.TiffPage:
    """Check the IFDs of page 0 and ``page`` on their word, then parse ``page`` with tifffile.

    The returned page's file stays open: close it with ``page.parent.close()``
    (or ``with page.parent:``).
    """
    try:
        scan_ifd(path, page, table_limit)
    except PageMissing as err:
        raise InputError(f"{name}: has {err.args[0]} page(s), page {page} was asked for") from None
    except TableTooLarge as err:
        raise BudgetError(
            f"{name}: its strip/tile table of {err.args[0]} entries needs {err.args[1] / 2**20:.1f} MiB, "
            f"more than the {table_limit / 2**20:.1f} MiB allowed for it; raise --max-memory "
            "or re-save it with fewer, larger strips or tiles"
        ) from None
    except TagTooLarge as err:
        raise InputError(
            f"{name}: damaged TIFF: tag {err.args[0]} declares {err.args[1]} bytes, more than the "
            f"{CARRIED_TAG_LIMIT // 2**20} MiB avgstack reads for a tag"
        ) from None
    import tifffile

    tif = tifffile.TiffFile(path)
    try:
        try:
            p = tif.pages[page]  # follows the chain up to this page only
        except IndexError:
            raise InputError(f"{name}: has fewer than {page + 1} page(s), page {page} was asked for") from None
        if not isinstance(p, tifffile.TiffPage):  # pragma: no cover - useframes off
            p = p.aspage()
    except BaseException:
        tif.close()
        raise
    return p


def carried(p: tifffile.TiffPage, name: str) -> dict[str, Any]:
    """What the output TIFF carries from page ``p``: ICC profile, resolution and copied tags, each capped."""
    metadata: dict[str, Any] = {"extratags": []}
    tags = p.tags
    dropped = []
    icc = tags.get(34675)
    if icc is not None:
        if icc.valuebytecount > CARRIED_TAG_LIMIT:
            dropped.append(f"ICC profile ({icc.valuebytecount} bytes)")
        elif icc.value is not None:
            metadata["iccprofile"] = bytes(icc.value)
    resolution = _resolution(tags.valueof(282), tags.valueof(283), tags.valueof(296))
    if resolution is not None:
        metadata["resolution"], metadata["resolutionunit"] = resolution
    for code in _CARRIED_TAGS:
        tag = tags.get(code)
        if tag is None or tag.count <= 0:
            continue
        if tag.valuebytecount > CARRIED_TAG_LIMIT:
            dropped.append(f"tag {code} ({tag.valuebytecount} bytes)")
        elif tag.value is not None:
            metadata["extratags"].append((code, int(tag.dtype), tag.count, tag.value, True))
    if dropped:
        log.warning(
            "%s: %s not carried to the output (larger than %d MiB)",
            name, ", ".join(dropped), CARRIED_TAG_LIMIT // 2**20,
        )
    return metadata


def _resolution(xres: Any, yres: Any, unit: Any) -> tuple[tuple, int] | None:
    """Return ``((xnum, xden), (ynum, yden)), unit`` if the tags are usable, else None (dropped)."""
    def rational(value: Any) -> tuple[int, int] | None:
        if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return value if value[1] > 0 and value[0] >= 0 else None
        return None

    x, y = rational(xres), rational(yres)
    if x is None or y is None:
        return None
    unit = int(unit) if isinstance(unit, int) and unit in (1, 2, 3) else 2
    return (x, y), unit
