"""Exceptions raised by avgstack.

Every error avgstack raises derives from :class:`AvgstackError`, so callers can
catch one type. Each class carries the process exit code the command line uses
for it: 2 for problems found before any pixel is processed (bad usage, invalid
or incompatible inputs, a budget that cannot fit), 1 for failures during
processing.
"""

from __future__ import annotations

__all__ = [
    "AvgstackError",
    "UsageError",
    "InputError",
    "UnsupportedInputError",
    "IncompatibleInputsError",
    "OutputError",
    "BudgetError",
    "ProcessingError",
    "ReadError",
    "WriteError",
    "ClusterError",
]


class AvgstackError(Exception):
    """Root of all avgstack errors."""

    exit_code = 1


class UsageError(AvgstackError, ValueError):
    """An argument is invalid (weights, dtype, sizes, options)."""

    exit_code = 2


class InputError(AvgstackError):
    """An input cannot be used: missing, unreadable or not an image."""

    exit_code = 2


class UnsupportedInputError(InputError):
    """An input is a valid image of a kind avgstack refuses to average."""


class IncompatibleInputsError(InputError):
    """Inputs disagree in shape, channels, dtype or colour meaning."""


class OutputError(AvgstackError):
    """The output cannot be written where or how it was asked for."""

    exit_code = 2


class BudgetError(AvgstackError):
    """The job cannot be done within the memory budget."""

    exit_code = 2
    #: How much memory the job needs, for messages ("at least 26.9 MiB").
    needed_text: str = "more memory"


class ProcessingError(AvgstackError):
    """A failure after processing started."""

    exit_code = 1


class ReadError(ProcessingError):
    """Pixel data of an input could not be read or decoded."""


class WriteError(ProcessingError):
    """The output could not be written (disk full, I/O error)."""


class ClusterError(AvgstackError):
    """The Dask cluster cannot be used: no scheduler, no workers, workers that cannot see the inputs
    or import avgstack, or the ``avgstack[dask]`` extra is missing (found before processing)."""

    exit_code = 2
