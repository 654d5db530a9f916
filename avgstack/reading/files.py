"""A pool of open file descriptors, bounded by the process's open-file limit.

Readers never keep their own descriptors: stacks can have more inputs than
``ulimit -n`` allows open at once, so the pool keeps the most recently used
ones open and closes the oldest when it is full.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

__all__ = ["FilePool", "default_capacity"]


def default_capacity() -> int:
    """Descriptors the pool may hold: half of what the soft limit leaves free."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 4096
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        soft = 512
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no procfs
        in_use = 16
    return max(1, min(1024, (soft - in_use - 8) // 2))


class FilePool:
    """Open files on demand and keep at most ``capacity`` of them open.

    Parameters
    ----------
    capacity : int, optional
        Maximum descriptors held; defaults to :func:`default_capacity`.
    """

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or default_capacity()
        self._open: OrderedDict[str, int] = OrderedDict()
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, path: str) -> int:
        """Return an open descriptor for ``path``; pair with :meth:`release`."""
        with self._lock:
            fd = self._open.pop(path, None)
            if fd is None:
                self._evict()
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._open[path] = fd
            self._busy[path] = self._busy.get(path, 0) + 1
            return fd

    def release(self, path: str) -> None:
        """Mark ``path`` as no longer in use by the caller."""
        with self._lock:
            n = self._busy.get(path, 0) - 1
            if n <= 0:
                self._busy.pop(path, None)
            else:
                self._busy[path] = n

    def _evict(self) -> None:
        while len(self._open) >= self.capacity:
            victim = next((p for p in self._open if p not in self._busy), None)
            if victim is None:
                return
            os.close(self._open.pop(victim))

    def close(self) -> None:
        """Close every descriptor."""
        with self._lock:
            while self._open:
                _, fd = self._open.popitem()
                os.close(fd)
            self._busy.clear()

    def __enter__(self) -> "FilePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
