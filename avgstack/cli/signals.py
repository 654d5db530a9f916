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
    """Within the block, SIGTERM raises :class:`Terminated`; SIGINT raises KeyboardInterrupt.

    A signal the process was started with ignored (``nohup``, ``cmd &`` in a
    script) stays ignored.
    """
    previous_term = signal.getsignal(signal.SIGTERM)
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_term != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _raise)
    if previous_int != signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
