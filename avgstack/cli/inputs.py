"""Expanding command-line inputs: ``@list.txt`` files and quoted glob patterns."""

from __future__ import annotations

import glob
import os
from typing import Iterable

from ..errors import InputError
from ..reading.pages import split_page_range
from ..reading.tiff import split_page_suffix

__all__ = ["expand_inputs"]

_GLOB_CHARS = set("*?[")


def _is_glob(item: str) -> bool:
    if not _GLOB_CHARS & set(item) or os.path.exists(item):
        return False
    ranged = split_page_range(item)
    if ranged is not None and not _GLOB_CHARS & set(ranged[0]):
        return False  # 'scan.tif[:]' selects pages of scan.tif
    path, _ = split_page_suffix(item)
    # 'scan.tif[2]' selects page 2 of an existing scan.tif: not a pattern
    return path == item or not os.path.exists(path)


def _read_list(list_file: str) -> list[str]:
    try:
        with open(list_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as err:
        raise InputError(f"@{list_file}: cannot read list file ({err.strerror or err})") from err
    folder = os.path.dirname(os.path.abspath(list_file))
    items = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items.append(line if os.path.isabs(line) else os.path.join(folder, line))
    return items


def expand_inputs(
    items: Iterable[str], base: str | None = None, lists: list[str] | None = None, _depth: int = 0
) -> list[str]:
    """Expand ``@list`` files and glob patterns, keeping order; globs are sorted.

    Parameters
    ----------
    items : iterable of str
        Paths, ``@list.txt`` entries and patterns.
    base : str, optional
        Folder that relative items are resolved against (a batch file's folder).
    lists : list of str, optional
        Receives the paths of the list files read.

    Raises
    ------
    InputError
        A list file cannot be read, or a pattern matches nothing.
    """
    out: list[str] = []
    for item in items:
        if item.startswith("@") and len(item) > 1:
            list_file = item[1:]
            if base and not os.path.isabs(list_file):
                list_file = os.path.join(base, list_file)
            if _depth > 8:
                raise InputError(f"{item}: list files nest too deeply")
            if lists is not None:
                lists.append(list_file)
            out.extend(expand_inputs(_read_list(list_file), None, lists, _depth + 1))
            continue
        if base and not os.path.isabs(item):
            item = os.path.join(base, item)
        if _is_glob(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"{item}: pattern matches no file")
            out.extend(matches)
        else:
            out.append(item)
    return out
