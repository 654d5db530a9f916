"""A tqdm progress bar fed by the library's progress callback."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..engine import Progress

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable progress sink that draws a tqdm bar on ``stream``.

    Usable as ``progress=`` for :func:`avgstack.average_to_file`; close it when
    the job ends.
    """

    def __init__(self, stream: TextIO | None = None, desc: str | None = None) -> None:
        self.stream = stream or sys.stderr
        self.desc = desc
        self._bar: Any = None

    def __call__(self, event: Progress) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=event.total, unit="step", desc=self.desc, file=self.stream,
                dynamic_ncols=True, leave=False,
            )
        self._bar.update(event.done - self._bar.n)
        self._bar.set_postfix_str(
            f"band {event.band + 1}/{event.bands}, {event.bytes_read / 1e6:.0f} MB read", refresh=False
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
