"""Write to a temporary file beside the target; rename over it only on success.

A failed, interrupted or killed run leaves the previous output untouched.

Temporary files are named ``.BASE.avgstack-HOST-KERNEL-PID-TOKEN.tmp``:

- ``BASE`` is the output's file name, shortened when needed so that the whole
  name fits the folder's name limit (255 bytes on most file systems);
- ``HOST`` is the writer's short host name (letters, digits and hyphens, at
  most 32), ``KERNEL`` 8 hex digits identifying the running kernel (its boot
  id, shared by the containers of one machine), ``PID`` the writer's process id
  as its own PID namespace sees it (for people; never used to decide anything);
- ``TOKEN`` is 8 random hex digits and 8 hex digits of a keyed hash of the rest
  of the name, so that a file that merely looks like one of ours is not taken
  for one.

The writer holds an exclusive ``flock`` on its temporary file from creation
until it is renamed or removed. That lock, not a process-id lookup, tells a
live file from a stale one: it works across PID namespaces (containers sharing
a folder) and, on file systems that share locks between hosts (NFS), across
machines. Before writing, a run removes the stale temporary files of its
output: only files whose name is in the exact format above with a valid hash,
that are regular files with a single link, are not an input of the job, were
made on this machine (same host name) or under the same running kernel (a
container of this machine), and whose lock nobody holds. Files made by other
machines are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import threading
from typing import BinaryIO, Iterable, Iterator, NamedTuple

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, so stale files are never removed
    fcntl = None  # type: ignore[assignment]

from ..errors import OutputError, WriteError

__all__ = [
    "check_output", "atomic_output", "remove_stale", "output_path", "temp_name", "parse_temp_name", "TempName",
]

log = logging.getLogger(__name__)

_KEY = b"avgstack temporary file v2"
_TEMP_RE = re.compile(
    r"\.(?P<base>.+)\.avgstack-(?P<host>[A-Za-z0-9-]{1,32})-(?P<kernel>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})"
    r"-(?P<nonce>[0-9a-f]{8})(?P<check>[0-9a-f]{8})\.tmp",
    re.DOTALL,
)
#: Temporary files this process is writing now (absolute paths): never stale, whatever a lock test says.
_LIVE: set[str] = set()
_LIVE_LOCK = threading.Lock()


def _host() -> str:
    try:
        name = socket.gethostname().split(".")[0]
    except OSError:  # pragma: no cover
        name = ""
    name = re.sub(r"[^A-Za-z0-9-]", "-", name).strip("-")[:32].strip("-")
    return name or "host"


def _kernel(host: str) -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as fh:
            boot = fh.read(64).strip()
    except OSError:
        boot = b""
    if not boot:  # no boot id (not Linux): the host name stands for the kernel
        boot = host.encode()
    return hashlib.blake2s(boot, digest_size=4).hexdigest()


#: This process's host name and kernel identity, as they appear in temporary names.
HOST = _host()
KERNEL = _kernel(HOST)


class TempName(NamedTuple):
    """The fields of a temporary file name."""

    base: str
    host: str
    kernel: str
    pid: int
    nonce: str


def _check(base: str, host: str, kernel: str, pid: int, nonce: str) -> str:
    digest = hashlib.blake2s(key=_KEY, digest_size=4)
    digest.update(os.fsencode(base) + b"\0" + f"{host}\0{kernel}\0{pid}\0{nonce}".encode())
    return digest.hexdigest()


def parse_temp_name(name: str) -> TempName | None:
    """The fields of ``name`` if it is an avgstack temporary file name with a valid hash, else None."""
    match = _TEMP_RE.fullmatch(name)
    if match is None:
        return None
    fields = TempName(match["base"], match["host"], match["kernel"], int(match["pid"]), match["nonce"])
    if _check(*fields) != match["check"]:
        return None
    return fields


def _name_max(folder: str) -> int:
    try:
        return max(14, min(255, os.pathconf(folder, "PC_NAME_MAX")))
    except (OSError, ValueError, AttributeError):
        return 255


def temp_name(target: str, *, host: str | None = None, kernel: str | None = None, pid: int | None = None) -> str:
    """A new temporary path beside ``target`` (a real file path, not a link), fitting the folder's name limit."""
    folder, base = os.path.split(os.path.abspath(target))
    host = host or HOST
    kernel = kernel or KERNEL
    pid = os.getpid() if pid is None else pid
    nonce = secrets.token_hex(4)
    tail = f".avgstack-{host}-{kernel}-{pid}-{nonce}{'0' * 8}.tmp"
    room = _name_max(folder) - 1 - len(tail.encode())
    kept: list[str] = []
    used = 0
    for char in base:
        size = len(os.fsencode(char))
        if used + size > room and kept:
            break
        kept.append(char)
        used += size
    short = "".join(kept)
    check = _check(short, host, kernel, pid, nonce)
    return os.path.join(folder, f".{short}.avgstack-{host}-{kernel}-{pid}-{nonce}{check}.tmp")


def output_path(target: str) -> str:
    """The file that writing ``target`` replaces: ``target``, or the file a symbolic link there points to.

    Raises
    ------
    OutputError
        ``target`` is a symbolic link to nothing, or a loop of links.
    """
    if not os.path.islink(target):
        return target
    real = os.path.realpath(target)
    try:
        os.stat(target)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OutputError(f"{target}: is a loop of symbolic links") from err
        raise OutputError(
            f"{target}: is a symbolic link to {real}, which does not exist; avgstack writes through links "
            "only to existing files (create the file, or remove the link)"
        ) from err
    return real


def _identities(paths: Iterable[str]) -> set[tuple[int, int]]:
    out = set()
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            st = os.stat(path)
            out.add((st.st_dev, st.st_ino))
    return out


def remove_stale(target: str, protect: Iterable[str] = ()) -> int:
    """Remove stale temporary files of ``target`` (see the module's docstring); return how many.

    ``protect`` lists files never to remove (the job's inputs), compared by
    identity so that links to them are caught too.
    """
    if fcntl is None:  # pragma: no cover
        return 0
    folder, base = os.path.split(os.path.abspath(target))
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    protected: set[tuple[int, int]] | None = None
    removed = 0
    for name in names:
        if not name.endswith(".tmp") or ".avgstack-" not in name:
            continue
        fields = parse_temp_name(name)
        if fields is None or not base.startswith(fields.base):
            continue
        if fields.kernel != KERNEL and fields.host != HOST:
            log.debug("left %s: made on another machine", name)
            continue
        path = os.path.join(folder, name)
        with _LIVE_LOCK:
            if path in _LIVE:
                continue
        if protected is None:
            protected = _identities(protect)
        if _remove_if_unlocked(path, protected):
            removed += 1
            log.info("removed stale temporary file %s", path)
    return removed


def _remove_if_unlocked(path: str, protected: set[tuple[int, int]]) -> bool:
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        # read-write where allowed: NFS emulates flock with write locks
        fd = os.open(path, os.O_RDWR | flags)
    except OSError:
        try:
            fd = os.open(path, os.O_RDONLY | flags)
        except OSError:
            return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or (st.st_dev, st.st_ino) in protected:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held by a live writer, or locks not supported here: leave it
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def check_output(target: str, inputs: Iterable[str]) -> None:
    """Fail early if ``target`` cannot be written or would overwrite an input.

    A symbolic link at ``target`` is written through (see :func:`output_path`).
    Inputs are compared by identity (device and inode), so symbolic and hard
    links to an input are caught too.

    Raises
    ------
    OutputError
        Missing or read-only folder, target is a folder or not a regular file,
        a dangling link, or target is an input.
    """
    if os.path.isdir(target):
        raise OutputError(f"{target}: is a directory; give a file name for the output")
    real = output_path(target)
    folder = os.path.dirname(os.path.abspath(real)) or "."
    if not os.path.isdir(folder):
        raise OutputError(f"{target}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{target}: output folder {folder} is not writable")
    try:
        target_stat = os.stat(real)
    except FileNotFoundError:
        return
    except OSError as err:
        raise OutputError(f"{target}: cannot check the existing output ({err.strerror or err})") from err
    if not stat.S_ISREG(target_stat.st_mode):
        raise OutputError(
            f"{target}: is not a regular file; avgstack replaces its output by renaming a new file over it, "
            "so give the path of a file"
        )
    for path in inputs:
        with contextlib.suppress(OSError, ValueError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == (target_stat.st_dev, target_stat.st_ino):
                raise OutputError(f"{target}: is the same file as input {path}; inputs are never overwritten")


def _keep_owner_and_mode(fd: int, previous: os.stat_result | None) -> None:
    """Give the new file the previous output's permission bits, and its owner and group where allowed."""
    if previous is None:
        return
    with contextlib.suppress(OSError):
        if (previous.st_uid, previous.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, previous.st_uid, previous.st_gid)
            except OSError:
                os.fchown(fd, -1, previous.st_gid)
    os.fchmod(fd, stat.S_IMODE(previous.st_mode) & 0o777)


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


@contextlib.contextmanager
def atomic_output(target: str, protect: Iterable[str] = ()) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``target`` for writing; rename it over ``target`` on success.

    A symbolic link at ``target`` is written through: the new file is made in
    the folder of the file it points to and renamed over that file, so the link
    stays. The new file keeps the previous output's permission bits (and owner
    and group, where allowed); while it is written it is readable by its owner
    only. On any exception (including KeyboardInterrupt and SystemExit) the
    temporary file is removed and ``target`` is left as it was. ``protect``
    lists the job's inputs, which the stale-file cleanup never removes.
    """
    real = output_path(target)
    folder = os.path.dirname(os.path.abspath(real))
    remove_stale(real, protect)
    try:
        previous: os.stat_result | None = os.stat(real)
    except OSError:
        previous = None
    fh, created = _create_locked(target, real, folder, previous)
    temp: str | None = created  # None once renamed
    live = os.path.abspath(created)
    try:
        try:
            yield fh
            fh.flush()
            _keep_owner_and_mode(fh.fileno(), previous)
            os.fsync(fh.fileno())
            # renamed while still open and locked: no instant in which the file looks stale
            os.replace(created, real)
            temp = None
        finally:
            if temp is not None:
                _unlink(temp)
            fh.close()
            with _LIVE_LOCK:
                _LIVE.discard(live)
        _sync_folder(folder)
    except OSError as err:
        reason = "disk full" if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) else err.strerror
        raise WriteError(f"{target}: write failed ({reason or err})") from err


def _create_locked(
    target: str, real: str, folder: str, previous: os.stat_result | None
) -> tuple[BinaryIO, str]:
    """Create and lock a new temporary file; a cleaner that removed it before it was locked makes us retry."""
    for _ in range(20):
        name = temp_name(real)
        temp: str | None = name  # None once it is known not to be ours
        live = os.path.abspath(name)
        with _LIVE_LOCK:
            _LIVE.add(live)
        fh = None
        try:
            try:
                # private while written when replacing a file; a new output gets the usual umask mode
                fh = open(name, "xb", opener=_open_private if previous is not None else None)  # noqa: SIM115
            except OSError as err:
                temp = None  # not created (or someone else's): never remove it
                raise OutputError(f"{target}: cannot create a file in {folder} ({err.strerror})") from err
            if fcntl is None:  # pragma: no cover
                return fh, name
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except OSError:
                return fh, name  # no locks on this file system: cleaners cannot lock it either
            try:
                same = os.path.samestat(os.fstat(fh.fileno()), os.lstat(name))
            except OSError:
                same = False
            if same:
                return fh, name
            fh.close()  # removed by a cleaner before we locked it: make another
        except BaseException:
            # also a signal arriving just after the file was created (then fh may still be None)
            if temp is not None:
                _unlink(temp)
            if fh is not None:
                fh.close()
            with _LIVE_LOCK:
                _LIVE.discard(live)
            raise
        with _LIVE_LOCK:
            _LIVE.discard(live)
    raise OutputError(f"{target}: cannot create a temporary file in {folder} (it keeps disappearing)")


def _sync_folder(folder: str) -> None:
    """Make the rename durable (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
