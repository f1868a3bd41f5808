"""Execution on Dask: one task per work unit, progress, summaries."""

from ps1dask.exceptions import JobAbortedError
from ps1dask.execution.job import JobCluster, JobHandle, JobProgress, JobSummary
from ps1dask.execution.runner import RunControl, RunOutcome, cluster_client, run_units
from ps1dask.execution.tasks import (
    StackTaskSpec,
    UnitReport,
    WarpTaskSpec,
    run_stack_unit,
    run_warp_unit,
)

__all__ = [
    "JobAbortedError",
    "JobCluster",
    "JobHandle",
    "JobProgress",
    "JobSummary",
    "RunControl",
    "RunOutcome",
    "StackTaskSpec",
    "UnitReport",
    "WarpTaskSpec",
    "cluster_client",
    "run_stack_unit",
    "run_units",
    "run_warp_unit",
]
