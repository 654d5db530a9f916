"""SIGTERM as an exception, so that every ``finally`` and ``with`` cleans up."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

__all__ = ["Terminated", "terminate_raises"]


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives (a BaseException, like KeyboardInterrupt)."""


def _raise(signum, frame):  # noqa: ARG001
    raise Terminated()


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated`; SIGINT raises KeyboardInterrupt."""
    previous_term = signal.signal(signal.SIGTERM, _raise)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
