"""Ctrl-C or SIGTERM while the command starts: one line and the documented exit code.

``python -m avgstack`` and the ``avgstack`` script import numpy and tifffile
before the command line's own handlers are in place (0.1 to 0.3 s). A Ctrl-C
then would end in a KeyboardInterrupt traceback. The package imports this
module first; when, and only when, the process is the avgstack command, it
installs handlers for that window that print one line and exit 130 or 143.
Nothing has been read or written yet at that point. ``avgstack.cli.main``
puts its own handlers in place for the run and restores these afterwards.
Signals that were ignored when the process started stay ignored.
"""

from __future__ import annotations

import os
import signal
import sys

_MESSAGES = {
    signal.SIGINT: (130, b"avgstack: error: interrupted; output left as it was\n"),
    signal.SIGTERM: (143, b"avgstack: error: terminated by SIGTERM; output left as it was\n"),
}


def is_command() -> bool:
    """True when this process is ``python -m avgstack`` or the installed ``avgstack`` script."""
    argv = list(getattr(sys, "orig_argv", None) or [])
    for i, arg in enumerate(argv[1:], 1):
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] in ("avgstack", "avgstack.__main__")
        if arg.startswith("-m"):
            return arg[2:] in ("avgstack", "avgstack.__main__")
        if arg in ("-c", "-") or not arg.startswith("-"):
            break
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return script in ("avgstack", "avgstack.exe", "avgstack-script.py")


def exit_now(signum, frame):  # noqa: ARG001
    code, message = _MESSAGES[signum]
    try:
        os.write(2, message)
    except OSError:
        pass
    os._exit(code)


def install() -> None:
    """Install the start-up handlers (main thread only; ignored signals stay ignored)."""
    for signum in _MESSAGES:
        try:
            current = signal.getsignal(signum)
            if current in (signal.default_int_handler, signal.SIG_DFL):
                signal.signal(signum, exit_now)
        except (ValueError, OSError):  # pragma: no cover - not the main thread
            pass


if is_command():
    install()
