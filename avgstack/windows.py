"""Bands of rows: the unit of work of the streaming engine."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Band", "cover"]


@dataclass(frozen=True)
class Band:
    """A half-open range of image rows ``[start, start + height)``.

    Parameters
    ----------
    start : int
        First row, non-negative.
    height : int
        Number of rows, positive.
    """

    start: int
    height: int

    def __post_init__(self) -> None:
        if self.start < 0:
            raise ValueError(f"band start must be >= 0, got {self.start}")
        if self.height <= 0:
            raise ValueError(f"band height must be > 0, got {self.height}")

    @property
    def stop(self) -> int:
        """One past the last row."""
        return self.start + self.height

    def toslice(self) -> slice:
        """Return the rows as a slice, for indexing the first axis of an image."""
        return slice(self.start, self.stop)

    def intersection(self, start: int, stop: int) -> tuple[int, int] | None:
        """Return the overlap with rows ``[start, stop)``, or None if empty."""
        lo, hi = max(self.start, start), min(self.stop, stop)
        return (lo, hi) if lo < hi else None


def cover(height: int, band_height: int) -> list[Band]:
    """Split ``height`` rows into consecutive bands of ``band_height`` rows.

    The last band may be shorter. Every row belongs to exactly one band.
    """
    if height <= 0:
        raise ValueError(f"image height must be > 0, got {height}")
    if band_height <= 0:
        raise ValueError(f"band height must be > 0, got {band_height}")
    return [Band(s, min(band_height, height - s)) for s in range(0, height, band_height)]
