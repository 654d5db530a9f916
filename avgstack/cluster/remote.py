"""What runs on a Dask worker: one band task, its result encoded for the output.

Functions here are module-level and take picklable values, so Dask sends
them by reference; workers import the same avgstack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import AvgstackError
from ..reducers.base import ReduceSpec
from ..tasks import BandTask, Geometry, InputRef, run_band
from ..windows import Band

__all__ = ["RemoteStack", "TaskResult", "look", "run_task"]


@dataclass(frozen=True)
class RemoteStack:
    """The inputs as workers open them: absolute paths, and the names messages use.

    Attributes
    ----------
    refs : tuple of InputRef
        Paths made absolute (workers run in other folders) or arrays.
    names : tuple of (str, str)
        ``(absolute path, path as given)`` for each path made absolute.
    """

    refs: tuple[InputRef, ...]
    names: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, refs: Sequence[InputRef]) -> RemoteStack:
        out, names = [], []
        for ref in refs:
            if ref.path is not None and not os.path.isabs(ref.path):
                absolute = os.path.abspath(ref.path)
                names.append((absolute, ref.path))
                ref = InputRef(ref.index, path=absolute)
            out.append(ref)
        return cls(tuple(out), tuple(names))

    def rename(self, err: AvgstackError) -> AvgstackError:
        """The error with the input named as given, as a local run names it."""
        message = str(err)
        for absolute, given in self.names:
            if message.startswith(absolute):
                renamed = type(err)(given + message[len(absolute):])
                renamed.__cause__ = err.__cause__
                return renamed
        return err


@dataclass(frozen=True)
class TaskResult:
    """One band's result: rows, or their encoded strips/tiles, and the statistics.

    Encoded strips/tiles travel as one uint8 array (``encoded``) and their
    sizes, which Dask sends without pickling a copy; :meth:`chunks` cuts them.
    """

    band: Band
    rows: np.ndarray | None
    encoded: np.ndarray | None
    sizes: tuple[int, ...]
    clipped: int
    bytes_read: int

    def chunks(self) -> Iterator[bytes]:
        """The encoded strips or tiles, in file order."""
        assert self.encoded is not None
        start = 0
        for size in self.sizes:
            yield self.encoded[start : start + size].tobytes()
            start += size


def run_task(stack: RemoteStack, band: Band, spec: ReduceSpec, geometry: Geometry, encoding: Any) -> TaskResult:
    """Compute ``band`` of every input where this runs; encode it when ``encoding`` (a TiffEncoding) is given."""
    try:
        result = run_band(BandTask(stack.refs, band, spec, geometry))
    except AvgstackError as err:
        raise stack.rename(err) from None
    stats = (result.clipped, result.bytes_read)
    if encoding is None:
        return TaskResult(band, result.rows, None, (), result.clipped, result.bytes_read)
    from ..writing.tiff import encode_band

    chunks = encode_band(result.rows, encoding)
    del result
    sizes = tuple(len(c) for c in chunks)
    encoded = np.empty(sum(sizes), np.uint8)
    start = 0
    for chunk in chunks:
        encoded[start : start + len(chunk)] = np.frombuffer(chunk, np.uint8)
        start += len(chunk)
    del chunks
    return TaskResult(band, None, encoded, sizes, stats[0], stats[1])


def hold(stack: RemoteStack) -> RemoteStack:
    """The inputs' descriptions, as the result of a task that every band task depends on."""
    return stack


def look(paths: list[str]) -> tuple[str, list[Any]]:
    """On a worker: avgstack's version, and each path's size or what is wrong with it."""
    from .. import __version__

    seen: list[Any] = []
    for path in paths:
        try:
            seen.append(os.stat(path).st_size)
        except FileNotFoundError:
            seen.append("no such file")
        except OSError as err:
            seen.append(f"an unreadable file ({err.strerror or err})")
    return __version__, seen
