"""Multi-page TIFFs as stacks: ``scan.tif[:]`` and ``scan.tif[a:b:c]`` select pages as frames.

``scan.tif[N]`` picks one page (see :func:`~avgstack.reading.tiff.split_page_suffix`);
a slice in Python's notation picks every page it selects, each becoming one
input of the stack, streamed in bands like separate files. The page count
comes from walking the IFD chain with small reads
(:func:`~avgstack.reading.tiff_checks.count_pages`), never from a tag.
"""

from __future__ import annotations

import os
import re
from typing import Any

from ..errors import InputError

__all__ = ["split_page_range", "expand_page_range", "page_names"]

_RANGE_SUFFIX = re.compile(r"^(?P<path>.*)\[(?P<start>-?\d*):(?P<stop>-?\d*)(?::(?P<step>-?\d*))?\]$")


def split_page_range(spec: str) -> tuple[str, slice] | None:
    """Split ``'scan.tif[2:10:2]'`` into ``('scan.tif', slice(2, 10, 2))``; None when ``spec`` has no range.

    A path that exists as written is never split.
    """
    match = _RANGE_SUFFIX.match(spec)
    if match is None or os.path.exists(spec):
        return None

    def part(name: str) -> int | None:
        text = match.group(name)
        return int(text) if text else None

    return match.group("path"), slice(part("start"), part("stop"), part("step"))


def page_names(path: str, pages: slice, count: int) -> list[str]:
    """Inputs ``path[i]`` for the pages ``pages`` selects among ``count``."""
    return [f"{path}[{i}]" for i in range(count)[pages]]


def expand_page_range(spec: Any) -> list[Any]:
    """``[spec]``, or one ``'path[i]'`` per page when ``spec`` is a path with a page range.

    Raises
    ------
    InputError
        The file is missing, not a TIFF, or the range selects no page.
    UsageError
        A step of zero.
    """
    if not isinstance(spec, (str, os.PathLike)):
        return [spec]
    text = os.fspath(spec)
    if not isinstance(text, str):
        return [spec]
    split = split_page_range(text)
    if split is None:
        return [spec]
    path, pages = split
    if pages.step == 0:
        from ..errors import UsageError

        raise UsageError(f"{text}: a page range's step cannot be zero")
    from .headers import sniff_format
    from .tiff_checks import count_pages

    if not os.path.isfile(path):
        raise InputError(f"{text}: no such file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
        if sniff_format(head) != "tiff":
            raise InputError(f"{text}: page ranges can only be selected in TIFF files")
        count = count_pages(path)
    except OSError as err:
        raise InputError(f"{text}: cannot read ({err.strerror or err})") from err
    names = page_names(path, pages, count)
    if not names:
        raise InputError(f"{text}: selects no page of the {count} page(s) in {path}")
    return names
