"""Logging for the command line: terse lines on stderr, timestamped lines in --log-file.

Every line is one line: file names holding control characters (a newline, an
escape, bytes that are not UTF-8) are shown quoted as bash's ``$'...'`` would
write them, so that a crafted name cannot break a message in two or forge an
``avgstack: error:`` line, and the quoted name can be pasted into a shell.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Iterable

__all__ = ["setup_logging", "quote_name", "clean", "register_names", "log_file_failure"]

#: Characters that never reach a terminal or a log as they are: C0 and C1 controls, DEL, line and
#: paragraph separators, and the lone surrogates that stand for bytes of names that are not UTF-8.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v",
          "\x1b": "\\E"}
_QUOTED = {"\\": "\\\\", "'": "\\'"}

#: Names (paths, list files, batch files) to show quoted when they hold unsafe characters, longest first.
_NAMES: list[str] = []


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape): the byte itself
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8"))


def quote_name(name: str) -> str:
    """``name`` as it is, or bash's ``$'...'`` quoting of it when it holds control characters."""
    if not _UNSAFE.search(name):
        return name
    body = "".join(_QUOTED.get(c) or (_escape(c) if _UNSAFE.match(c) else c) for c in name)
    return f"$'{body}'"


def register_names(names: Iterable[str]) -> None:
    """Remember names to quote in messages (with their absolute forms and folders)."""
    added = False
    for name in names:
        if not isinstance(name, str) or not _UNSAFE.search(name):
            continue
        forms = {name}
        try:
            absolute = os.path.abspath(name)
            forms |= {absolute, os.path.dirname(absolute)}
        except (ValueError, OSError):
            pass
        for form in forms:
            if form and _UNSAFE.search(form) and form not in _NAMES:
                _NAMES.append(form)
                added = True
    if added:
        _NAMES.sort(key=len, reverse=True)


def clean(text: str) -> str:
    """``text`` on one line: registered names quoted, any other unsafe character escaped."""
    if not _UNSAFE.search(text):
        return text
    for name in _NAMES:
        if name in text:
            text = text.replace(name, quote_name(name))
    return _UNSAFE.sub(lambda m: _escape(m.group()), text)


class _OneLine(logging.Filter):
    """Messages at INFO and above become one clean line (debug tracebacks stay as they are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO:
            message = clean(record.getMessage())
            record.msg, record.args = message, None
        return True


class _Terse(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"avgstack: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"avgstack: warning: {message}"
        return f"avgstack: {message}"


class _LogFile(logging.FileHandler):
    """A --log-file that, when a write fails (disk full, /dev/full), stops quietly and remembers why.

    logging's own handling would print a traceback on stderr for every later line.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, mode="a", encoding="utf-8", errors="backslashreplace")
        self.failure: BaseException | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: ARG002
        self.failure = sys.exc_info()[1] or OSError("write failed")
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()  # closes the descriptor even when flushing the lost lines fails
            except Exception:  # noqa: BLE001
                pass


_log_file: _LogFile | None = None


def log_file_failure() -> BaseException | None:
    """Why writing to --log-file failed, or None while it works (or there is none)."""
    return _log_file.failure if _log_file is not None else None


def setup_logging(*, verbose: bool, quiet: bool, debug: bool, log_file: str | None) -> logging.Logger:
    """Configure the ``avgstack`` logger; return it.

    stderr gets errors always, warnings unless ``quiet``, info with
    ``verbose``, debug with ``debug``. ``log_file`` gets info and above,
    timestamped, whatever ``quiet`` says.
    """
    global _log_file
    logger = logging.getLogger("avgstack")
    for handler in list(logger.handlers):
        if not isinstance(handler, logging.NullHandler):
            logger.removeHandler(handler)
            handler.close()
    _log_file = None
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_Terse())
    stderr.addFilter(_OneLine())
    stderr.setLevel(
        logging.DEBUG if debug else logging.INFO if verbose else logging.ERROR if quiet else logging.WARNING
    )
    logger.addHandler(stderr)
    level = stderr.level
    if log_file:
        handler = _LogFile(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.addFilter(_OneLine())
        handler.setLevel(logging.INFO)
        logger.addHandler(handler)
        _log_file = handler
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
