"""Running a job on a Dask cluster: the same band tasks, the same bits, one output file.

* :mod:`.connect` connects to a scheduler (``--scheduler-address``,
  ``--scheduler-file``, or a ``client=`` given to the API) and checks that the
  workers see the inputs as this machine does.
* :mod:`.remote` is what runs on a worker: :func:`~avgstack.tasks.run_band`
  on one band of output rows, then its strips or tiles encoded.
* :mod:`.engine` plans the tasks within the budget and streams their results
  into the output in row order, a bounded number in flight.

Nothing here imports Dask until a cluster is asked for; the ``avgstack[dask]``
extra installs it.
"""

from __future__ import annotations

from .connect import EXTRA, open_client, require_distributed
from .engine import ClusterEngine

__all__ = ["EXTRA", "ClusterEngine", "open_client", "require_distributed"]
