"""Write to a temporary file beside the target; rename over it only on success.

A failed, interrupted or killed run leaves the previous output untouched. The
temporary name carries the writer's process id, so a later run can tell a
stale file left by a killed process from one still being written, and remove
it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import secrets
from typing import BinaryIO, Iterable, Iterator

from ..errors import OutputError, WriteError

__all__ = ["check_output", "atomic_output", "remove_stale"]

log = logging.getLogger(__name__)


def _temp_pattern(target: str) -> str:
    folder, base = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{glob.escape(base)}.avgstack-*.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(target: str) -> int:
    """Remove temporary files of ``target`` left by processes that no longer run."""
    removed = 0
    for path in glob.glob(_temp_pattern(target)):
        try:
            pid = int(os.path.basename(path).rsplit(".avgstack-", 1)[1].split("-", 1)[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                os.unlink(path)
                removed += 1
                log.info("removed stale temporary file %s", path)
    return removed


def check_output(target: str, inputs: Iterable[str]) -> None:
    """Fail early if ``target`` cannot be written or would overwrite an input.

    Inputs are compared by identity (device and inode), so symbolic and hard
    links to an input are caught too.

    Raises
    ------
    OutputError
        Missing or read-only folder, target is a folder, or target is an input.
    """
    folder = os.path.dirname(os.path.abspath(target)) or "."
    if os.path.isdir(target):
        raise OutputError(f"{target}: is a directory; give a file name for the output")
    if not os.path.isdir(folder):
        raise OutputError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: output folder {folder} is not writable")
    if os.path.exists(target):
        target_stat = os.stat(target)
        for path in inputs:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == (target_stat.st_dev, target_stat.st_ino):
                    raise OutputError(
                        f"{target}: is the same file as input {path}; inputs are never overwritten"
                    )


@contextlib.contextmanager
def atomic_output(target: str) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target`` for writing; rename it over ``target`` on success.

    On any exception (including KeyboardInterrupt and SystemExit) the
    temporary file is removed and ``target`` is left as it was.
    """
    folder, base = os.path.split(os.path.abspath(target))
    remove_stale(target)
    temp = os.path.join(folder, f".{base}.avgstack-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fh = None
    try:
        try:
            fh = open(temp, "xb")  # noqa: SIM115 - closed below, renamed or removed
        except OSError as err:
            raise OutputError(f"{target}: cannot create a file in {folder} ({err.strerror})") from err
    except BaseException:
        # also a signal arriving just after the file was created
        if fh is not None:
            fh.close()
        _unlink(temp)
        raise
    try:
        try:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        os.replace(temp, target)
    except OSError as err:
        _unlink(temp)
        reason = "disk full" if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else err.strerror
        raise WriteError(f"{target}: write failed ({reason or err})") from err
    except BaseException:
        _unlink(temp)
        raise


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
