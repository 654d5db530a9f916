"""The state file of an :class:`avgstack.Accumulator`: a versioned ``.npz``, written atomically, never pickled.

Layout (format ``avgstack-accumulator``, version 1): an uncompressed zip of
``.npy`` members, readable with ``numpy.load(path, allow_pickle=False)``:

* ``meta.npy`` -- a 0-d unicode array holding a JSON object: ``format``,
  ``version``, ``method``, ``weighted``, ``params``, ``in_dtype``,
  ``out_dtype``, ``shape`` (rows, columns, channels), ``gray`` (2-D frames),
  ``count`` (frames added) and ``capacity`` (frames the sums are sized for).
* ``state/NAME.npy`` -- the reducer's exact state, one array per name
  (:meth:`avgstack.reducers.Reducer.state`): integer sums in their integer
  type, double-double float sums (high and low parts), the weights given,
  overflow flags, ... in OpenCV's channel order (BGR/BGRA).

Members are streamed to and from disk in chunks of :data:`CHUNK_BYTES`, so
saving or loading needs no copy of the state.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np

from .errors import InputError

__all__ = ["FORMAT", "VERSION", "CHUNK_BYTES", "write_state", "StateFile"]

FORMAT = "avgstack-accumulator"
VERSION = 1
#: Bytes copied at a time while saving or loading.
CHUNK_BYTES = 1 << 20
_PREFIX = "state/"


def _write_array(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    array = np.asarray(array)
    if not array.flags.c_contiguous:  # state arrays are views of contiguous buffers
        raise ValueError(f"state {name!r} is not contiguous")
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(fh, np.lib.format.header_data_from_array_1_0(array))
        raw = memoryview(array.reshape(-1).view(np.uint8)) if array.ndim else memoryview(array.tobytes())  # type: ignore[arg-type]
        for start in range(0, len(raw), CHUNK_BYTES):
            fh.write(raw[start : start + CHUNK_BYTES])


def write_state(fh: BinaryIO, meta: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> None:
    """Write ``meta`` and the ``state`` arrays to the open binary file ``fh``."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        _write_array(zf, "meta", np.array(json.dumps({"format": FORMAT, "version": VERSION, **meta})))
        for name, array in state.items():
            _write_array(zf, _PREFIX + name, array)


class StateFile(Mapping[str, np.ndarray]):
    """A state file opened for reading: :attr:`meta`, and the state arrays read one at a time on access.

    Raises
    ------
    InputError
        Not a state file, another format version, or damaged.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as err:
            raise InputError(f"{path}: not an avgstack state file ({err})") from err
        try:
            names = self._zip.namelist()
            if "meta.npy" not in names:
                raise InputError(f"{path}: not an avgstack state file (no meta.npy)")
            self._names = [n[len(_PREFIX) : -4] for n in names if n.startswith(_PREFIX) and n.endswith(".npy")]
            text = self._read("meta.npy", limit=1 << 20)
            try:
                meta = json.loads(str(text[()]))
            except ValueError as err:
                raise InputError(f"{path}: damaged avgstack state file (meta: {err})") from err
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise InputError(f"{path}: not an avgstack state file")
            if meta.get("version") != VERSION:
                raise InputError(
                    f"{path}: state file version {meta.get('version')}, this avgstack reads version {VERSION}"
                )
            self.meta: dict[str, Any] = meta
        except BaseException:
            self._zip.close()
            raise

    def _read(self, member: str, limit: int | None = None) -> np.ndarray:
        """Read one ``.npy`` member in chunks into a new array (at most ``limit`` bytes of data)."""
        try:
            with self._zip.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version in ((2, 0), (3, 0)):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                else:  # pragma: no cover - numpy refuses other versions in read_magic
                    raise ValueError(f"npy version {version}")
                if dtype.hasobject or fortran:
                    raise ValueError("object or Fortran-ordered arrays are not state")
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                declared = self._zip.getinfo(member).file_size
                if nbytes > declared or (limit is not None and nbytes > limit):
                    raise ValueError(f"{member} declares {nbytes} bytes of data in {declared}")
                array = np.empty(shape, dtype)
                raw = memoryview(array.reshape(-1).view(np.uint8)) if array.ndim else None  # type: ignore[arg-type]
                if raw is None:
                    array[()] = np.frombuffer(fh.read(dtype.itemsize), dtype)[0]
                    return array
                for start in range(0, nbytes, CHUNK_BYTES):
                    got = fh.readinto(raw[start : start + CHUNK_BYTES])  # type: ignore[attr-defined]
                    if got != min(CHUNK_BYTES, nbytes - start):
                        raise ValueError(f"{member} is truncated")
                return array
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise InputError(f"{self.path}: damaged avgstack state file ({err})") from err

    def largest(self) -> int:
        """Bytes of the largest state member (what reading one at a time holds besides the state)."""
        return max((self._zip.getinfo(_PREFIX + n + ".npy").file_size for n in self._names), default=0)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        return self._read(_PREFIX + name + ".npy")

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def close(self) -> None:
        """Close the file."""
        self._zip.close()

    def __enter__(self) -> "StateFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
