"""Expanding command-line inputs: ``@list.txt`` files and quoted glob patterns."""

from __future__ import annotations

import glob
import os
import stat
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


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode_list(data: bytes, list_file: str) -> str:
    """The text of a list file.

    A byte-order mark says the encoding (UTF-8, UTF-16 or UTF-32, as Windows
    editors save). Otherwise the bytes are names as the file system stores
    them: decoded like command-line arguments (the file-system encoding with
    surrogateescape), so a Latin-1 name in the list opens the file whose name
    has those bytes. NUL bytes (UTF-16 without a mark, or not a text file) are
    refused.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as err:
                raise InputError(
                    f"@{list_file}: not a text list file (not valid {encoding.upper()} at byte {err.start + len(bom)})"
                ) from err
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise InputError(
            f"@{list_file}: not a text list file (a NUL byte on line {line}); save it as UTF-8, one path per line"
        )
    return os.fsdecode(data)


#: List files larger than this are refused (a million paths take about 64 MiB).
MAX_LIST_BYTES = 256 * 1024 * 1024


def _read_list(list_file: str) -> list[str]:
    try:
        with open(list_file, "rb") as fh:
            data = fh.read(MAX_LIST_BYTES + 1)
            piped = not stat.S_ISREG(os.fstat(fh.fileno()).st_mode)
    except OSError as err:
        raise InputError(f"@{list_file}: cannot read list file ({err.strerror or err})") from err
    except (ValueError, MemoryError) as err:
        raise InputError(f"@{list_file}: cannot read list file ({type(err).__name__}: {err})") from err
    if len(data) > MAX_LIST_BYTES:
        raise InputError(f"@{list_file}: not a list file (larger than {MAX_LIST_BYTES // 2**20} MiB)")
    # only newlines end lines: other line breaks str.splitlines knows (\x1c, \x85, \u2028) may be in names
    lines = decode_list(data, list_file).split("\n")
    # a list from a pipe (@/dev/stdin, @<(ls *.tif)) names paths relative to the current folder
    folder = os.getcwd() if piped else os.path.dirname(os.path.abspath(list_file))
    items = []
    for number, line in enumerate(lines, 1):
        line = line.strip(" \t\r\f\v")
        if not line or line.startswith("#"):
            continue
        if "\0" in line:
            raise InputError(f"@{list_file}: line {number} holds a NUL character, which no file name can")
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
