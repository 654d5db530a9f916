"""Reader adapters: one per backend, chosen from a file's first bytes, never its name."""

from __future__ import annotations

import os
import stat
from typing import Union

import numpy as np

from ..errors import InputError, UsageError
from .base import ALPHA_KINDS, ImageInfo, Source
from .files import FilePool

__all__ = ["open_source", "ImageInfo", "Source", "FilePool", "ALPHA_KINDS", "InputSpec"]

InputSpec = Union[str, "os.PathLike[str]", np.ndarray]


def open_source(spec: InputSpec, pool: FilePool, index: int = 0, *, budget: int | None = None) -> Source:
    """Open one input from headers only.

    Parameters
    ----------
    spec : str, path-like or ndarray
        A file path (``'scan.tif[2]'`` selects a TIFF page) or an array in
        OpenCV's layout.
    pool : FilePool
        Descriptor pool that TIFF band reads draw from.
    index : int
        Position in the stack, used to name arrays in messages.
    budget : int, optional
        Memory budget in bytes; TIFF strip/tile tables larger than half of it
        are refused before they are read (BudgetError).

    Raises
    ------
    InputError
        Missing, unreadable, empty or unrecognised file.
    """
    if isinstance(spec, np.ndarray):
        from .arrays import ArraySource

        return ArraySource(spec, f"array #{index}")
    if not isinstance(spec, (str, os.PathLike)) or isinstance(os.fspath(spec), bytes):
        raise UsageError(
            f"input #{index}: expected a path (str or os.PathLike) or a numpy array, got {type(spec).__name__}"
        )
    from .headers import sniff_format
    from .tiff import split_page_suffix

    path, page = split_page_suffix(os.fspath(spec))
    name = os.fspath(spec)
    if not os.path.exists(path):
        raise InputError(f"{name}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{name}: is a directory, not an image")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError(f"{name}: not a regular file")
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError as err:
        raise InputError(f"{name}: cannot read ({err.strerror or err})") from err
    if not head:
        raise InputError(f"{name}: empty file (0 bytes)")
    fmt = sniff_format(head)
    if fmt == "tiff":
        from .tiff import TiffSource

        return TiffSource(path, page, pool, name=name, budget=budget)
    if page:
        raise InputError(f"{name}: pages can only be selected in TIFF files")
    if fmt is None:
        from .video import sniff_video

        if sniff_video(head) is not None:
            from ..errors import UnsupportedInputError

            raise UnsupportedInputError(
                f"{name}: a video; videos are read frame by frame by average(), average_to_file() and the "
                "command line without --state, not as one frame of a stack"
            )
        raise InputError(f"{name}: not an image avgstack can read (unknown format)")
    from .opencv import OpenCVSource

    return OpenCVSource(path, fmt, name=name)
