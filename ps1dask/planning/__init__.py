"""Planning: positions to skycells to work units, and the fetch-strategy cost model (no I/O)."""

from ps1dask.planning.cost import ServiceProfile, choose_strategy
from ps1dask.planning.plan import (
    StackPlan,
    WorkUnit,
    fitscut_boxes,
    plan_stack_job,
    unit_work_pixels,
)

__all__ = [
    "ServiceProfile",
    "StackPlan",
    "WorkUnit",
    "choose_strategy",
    "fitscut_boxes",
    "plan_stack_job",
    "unit_work_pixels",
]
