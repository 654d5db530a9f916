"""Connecting to a Dask scheduler and checking what its workers see."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ClusterError, InputError

__all__ = ["EXTRA", "check_workers", "open_client", "require_distributed", "wait_for_workers"]

log = logging.getLogger(__name__)

#: How to install what a cluster run needs.
EXTRA = "pip install 'avgstack[dask]'"

#: Seconds to wait for the scheduler to answer, and for a first worker to join it.
CONNECT_TIMEOUT = 30
WORKER_TIMEOUT = 60


def require_distributed() -> Any:
    """The ``distributed`` module, or a :class:`ClusterError` naming the extra to install."""
    try:
        import distributed
    except ImportError as err:
        raise ClusterError(
            f"running on a Dask cluster needs dask and distributed, the avgstack[dask] extra: {EXTRA}"
        ) from err
    return distributed


@contextlib.contextmanager
def open_client(options: Any) -> Iterator[Any | None]:
    """The Dask client a job runs on, or None for a local run.

    A client given in ``options.client`` is used as it is and left open; one
    made from ``scheduler_address`` or ``scheduler_file`` is closed on exit.
    It is never made the process's default client.

    Raises
    ------
    ClusterError
        Dask missing, a missing scheduler file, or a scheduler that does not answer.
    """
    if options.client is not None:
        yield options.client
        return
    address, path = options.scheduler_address, options.scheduler_file
    if address is None and path is None:
        yield None
        return
    distributed = require_distributed()
    where = address or path
    if path is not None and not os.path.isfile(path):
        raise ClusterError(f"{path}: no such scheduler file (--scheduler-file)")
    try:
        client = distributed.Client(
            address, scheduler_file=path, timeout=CONNECT_TIMEOUT, set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"{where}: cannot connect to the Dask scheduler ({err})") from err
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


def scheduler_name(client: Any) -> str:
    """The scheduler's address, for messages."""
    try:
        return str(client.scheduler.address)
    except AttributeError:  # pragma: no cover - a client without a scheduler
        return "Dask scheduler"


def wait_for_workers(client: Any, timeout: float = WORKER_TIMEOUT) -> dict[str, int]:
    """``{worker address: threads}`` once at least one worker has joined.

    Raises
    ------
    ClusterError
        No worker joined within ``timeout`` seconds, or the scheduler is gone.
    """
    where = scheduler_name(client)
    try:
        nthreads = client.nthreads()
        if not nthreads:
            log.info("%s: waiting up to %d s for a Dask worker", where, timeout)
            client.wait_for_workers(1, timeout=timeout)
            nthreads = client.nthreads()
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"{where}: no Dask worker joined within {timeout} s ({err})") from err
    return {str(k): int(v) for k, v in nthreads.items()}


def check_workers(client: Any, paths: Sequence[str], names: Sequence[str]) -> None:
    """Check that the scheduler and every worker run this avgstack, and workers see each input at its path
    with its size.

    ``paths`` are absolute (page suffixes removed), ``names`` as given, for messages.

    Raises
    ------
    ClusterError
        A worker cannot import avgstack, or runs another version.
    InputError
        A worker does not see an input, or sees another size (no shared storage).
    """
    from .. import __version__
    from .remote import look

    where = scheduler_name(client)
    sizes = [os.stat(p).st_size for p in paths]
    try:
        seen = client.run(look, list(paths), on_error="return")
        try:  # the scheduler unpickles the tasks, so it needs avgstack too
            seen["the scheduler"] = client.run_on_scheduler(look, [])
        except Exception as err:  # noqa: BLE001 - whatever failed there, it is reported as it is
            seen["the scheduler"] = err
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"{where}: lost the Dask scheduler ({err})") from err
    for worker, answer in sorted(seen.items()):
        who = worker if worker == "the scheduler" else f"Dask worker {worker}"
        if isinstance(answer, BaseException):
            raise ClusterError(
                f"{where}: {who} cannot run avgstack ({answer}); "
                f"install the same avgstack on the scheduler and the workers ({EXTRA})"
            )
        version, theirs = answer
        if version != __version__:
            raise ClusterError(
                f"{where}: {who} runs avgstack {version}, this machine {__version__}; "
                "install the same version everywhere"
            )
        # the scheduler is asked about no file: zip stops at its empty answer
        for name, size, their in zip(names, sizes, theirs, strict=False):
            if their != size:
                problem = their if isinstance(their, str) else f"{their} bytes, not {size}"
                raise InputError(
                    f"{name}: Dask worker {worker} sees {problem}; workers must see every input at the "
                    "same path as this machine (shared storage)"
                )
