"""avgstack: average stacks of images of any size, exactly, within a memory budget.

>>> import avgstack
>>> result = avgstack.average(["a.tif", "b.tif"])            # doctest: +SKIP
>>> avgstack.average_to_file(["a.tif", "b.tif"], "avg.tif")  # doctest: +SKIP
"""

from . import _startup  # noqa: F401, I001 - first: Ctrl-C while the command starts gives one line, not a traceback

import logging

from .accumulator import Accumulator
from .api import average, average_to_file, plan_to_file
from .job import JobPlan, Report
from .executor import Progress
from .errors import (
    AvgstackError,
    BudgetError,
    ClusterError,
    IncompatibleInputsError,
    InputError,
    OutputError,
    ProcessingError,
    ReadError,
    UnsupportedInputError,
    UsageError,
    WriteError,
)

__version__ = "0.1.0"

__all__ = [
    "average",
    "Accumulator",
    "average_to_file",
    "plan_to_file",
    "Report",
    "JobPlan",
    "Progress",
    "AvgstackError",
    "UsageError",
    "InputError",
    "UnsupportedInputError",
    "IncompatibleInputsError",
    "OutputError",
    "BudgetError",
    "ClusterError",
    "ProcessingError",
    "ReadError",
    "WriteError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
