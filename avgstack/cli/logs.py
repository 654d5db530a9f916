"""Logging for the command line: terse lines on stderr, timestamped lines in --log-file."""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


class _Terse(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"avgstack: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"avgstack: warning: {message}"
        return f"avgstack: {message}"


def setup_logging(*, verbose: bool, quiet: bool, debug: bool, log_file: str | None) -> logging.Logger:
    """Configure the ``avgstack`` logger; return it.

    stderr gets errors always, warnings unless ``quiet``, info with
    ``verbose``, debug with ``debug``. ``log_file`` gets info and above,
    timestamped, whatever ``quiet`` says.
    """
    logger = logging.getLogger("avgstack")
    for handler in list(logger.handlers):
        if not isinstance(handler, logging.NullHandler):
            logger.removeHandler(handler)
            handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_Terse())
    stderr.setLevel(logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING)
    logger.addHandler(stderr)
    level = stderr.level
    if log_file:
        handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
        level = min(level, logging.INFO)
    logger.setLevel(level)
    logger.propagate = False
    # tifffile warns about oddities it works around; those are details, not errors: debug lines
    tiff_logger = logging.getLogger("tifffile")
    tiff_logger.handlers[:] = [_Forward(logger)]
    tiff_logger.propagate = False
    return logger


class _Forward(logging.Handler):
    """Re-log another library's records on the avgstack logger at debug level."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__(logging.DEBUG)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.debug("tifffile: %s", record.getMessage())
