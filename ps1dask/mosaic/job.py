"""The mosaic job: ``ps1dask.cutouts(..., mosaic=True)`` (CLI ``ps1dask cutouts --mosaic``).

Planned like a stack job (the same positions, store order and per-position WCS), with one
task per position and filter and store chunks of one position, one filter and at most
``ps1dask.mosaic.chunk`` pixels in y and x: a task owns every chunk it writes (the
provenance array is written by the first filter's task), and holds one band of rows at a
time (see :mod:`ps1dask.mosaic.assemble`). Statuses are written last, so
a killed job resumes where it stopped and reruns fetch nothing already stored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dask.config
import distributed
import numpy as np
import xarray as xr
import zarr

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.client import PS1Service
from ps1dask.conventions import parse_filters, part_types
from ps1dask.conventions.cutrule import SizeLike, parse_size
from ps1dask.exceptions import InvalidParameterError, StoreMismatchError
from ps1dask.execution import JobCluster, JobHandle, JobSummary
from ps1dask.execution.job_steps import (
    configured_strategies,
    open_job,
    run_job,
    summarised_run,
)
from ps1dask.execution.tasks import UnitReport, fetch_context
from ps1dask.fetch.strategies import FetchStrategy, strategies_for
from ps1dask.mosaic._core import MAX_MOSAIC_SIZE, NO_SOURCE, mosaic_grid, mosaic_sources
from ps1dask.mosaic.assemble import (
    MosaicAssembler,
    PieceFetcher,
    check_mosaic_strategy,
    mosaic_strategies,
)
from ps1dask.planning import ServiceProfile
from ps1dask.planning.plan import PositionPlan, WorkUnit, plan_positions
from ps1dask.positions import PositionTable
from ps1dask.storage import (
    FINAL_STATUSES,
    STACK_FILTER_VARIABLES,
    STACK_VARIABLES,
    STATUS,
    STATUS_NAMES,
    StackRequest,
    check_compatible,
    quiet_zarr_warnings,
    read_status,
)
from ps1dask.storage.layout import (
    MASK_OFF_IMAGE,
    status_attrs,
    store_variable,
    write_store_part,
)
from ps1dask.storage.location import StoreLike, StoreLocation

#: Store attribute marking a mosaic store (its JSON: the y/x chunk), checked on reruns.
MOSAIC_ATTR = "ps1dask_mosaic"
#: Provenance variable: ``projcell * 1000 + subcell`` of each pixel's source skycell.
PROVENANCE = "mosaic_skycell"


def mosaic_chunk() -> int:
    """The y/x chunk side of mosaic stores (``ps1dask.mosaic.chunk``, pixels)."""
    side = int(dask.config.get("ps1dask.mosaic.chunk"))
    if side < 64:
        raise InvalidParameterError(f"ps1dask.mosaic.chunk must be >= 64 pixels, got {side}")
    return side


def is_mosaic_store(path: StoreLike) -> bool:
    """Whether the store at ``path`` (a path, URL or :class:`StoreLocation`) was made by a
    mosaic job."""
    where = StoreLocation.of(path)
    if not where.has("zarr.json"):
        return False
    with where.errors("read"):
        return MOSAIC_ATTR in zarr.open_group(where.zarr_store(), mode="r").attrs


def create_mosaic_store(
    path: StoreLocation, request: StackRequest, plan: PositionPlan, initial: np.ndarray, side: int
) -> None:
    """Create a mosaic store: the stack variables chunked (1, 1, side, side), the provenance
    array, and the statuses and zero points per (position, filter). Client only."""
    n, nf = request.n_positions, len(request.filters)
    h, w = request.height, request.width
    cy, cx = min(h, side), min(w, side)
    data_vars: dict[str, xr.Variable] = {}
    encoding: dict[str, dict[str, Any]] = {}
    for image_type in request.types:
        name, dtype, units, desc = STACK_VARIABLES[image_type]
        fill = MASK_OFF_IMAGE if dtype == "uint16" else np.nan
        data_vars[name], encoding[name] = store_variable(
            ("position", "filter", "y", "x"),
            (n, nf, h, w),
            (1, 1, cy, cx),
            dtype,
            fill,
            {"units": units, "long_name": desc},
            pixels=True,
        )
    data_vars[PROVENANCE], encoding[PROVENANCE] = store_variable(
        ("position", "y", "x"),
        (n, h, w),
        (1, cy, cx),
        "int32",
        NO_SOURCE,
        {
            "long_name": "source skycell of each pixel: projcell * 1000 + subcell (-1: none)",
            "comment": "pixels whose projcell differs from the position's were resampled "
            "from another projection cell (reproject) and rescaled to stack_zeropoint",
        },
        pixels=True,
    )
    # one chunk per (position, filter): each filter of a mosaic is its own task
    data_vars["stack_status"], encoding["stack_status"] = store_variable(
        ("position", "filter"), (n, nf), (1, 1), "uint8", 0, status_attrs("outcome")
    )
    for name, (dtype, fill, attrs) in STACK_FILTER_VARIABLES.items():
        data_vars[name], encoding[name] = store_variable(
            ("position", "filter"), (n, nf), (1, 1), dtype, fill, attrs
        )
    write_store_part(
        path,
        "stack",
        request,
        plan.positions,
        1,
        data_vars,
        encoding,
        {"stack_status": initial},
        # with the creation marker: a store is a mosaic store from the moment it is created
        extra_attrs={MOSAIC_ATTR: json.dumps({"chunk": [cy, cx]})},
    )


@dataclass(frozen=True)
class MosaicTaskSpec:
    """Everything a mosaic task needs besides its unit (small and picklable)."""

    store: StoreLocation
    service: PS1Service
    filters: str
    types: tuple[str, ...]
    width: int
    height: int
    band_rows: int
    strategy: str
    profile: ServiceProfile
    cache_dir: str | None
    cache_bytes: int | None
    strategies: Mapping[str, FetchStrategy] = field(default_factory=dict)


@dataclass(frozen=True)
class MosaicUnit:
    """One Dask task: the mosaics of a work unit's positions in one filter (``band``, an
    index into the job's filters). Filters are separate tasks so that one large mosaic
    keeps several cores busy; each owns its chunks (the store's are one filter deep)."""

    index: int
    unit: WorkUnit
    band: int

    @property
    def n_positions(self) -> int:
        return self.unit.n_positions

    def work_pixels(self, width: int, height: int, profile: ServiceProfile) -> float:
        """Its CPU work, in output pixels: resampling them dominates a mosaic's work, and
        every mosaic of a job has the same size (``profile`` is not needed)."""
        return float(np.count_nonzero(self.unit.fetch)) * width * height


def run_mosaic_unit(work: MosaicUnit, spec: MosaicTaskSpec) -> UnitReport:
    """Assemble the mosaics of a unit's positions in one filter, write their chunks and the
    provenance (with the first filter), statuses last."""
    t0 = time.perf_counter()
    unit, band = work.unit, work.band
    service, cache, _ = fetch_context(spec)
    fetcher = PieceFetcher(service, cache, spec.profile, spec.strategy, spec.strategies)
    status = np.where(unit.fetch, STATUS["pending"], STATUS["outside_footprint"])[:, None]
    status = status.astype(np.uint8)
    zeropoint = np.full((unit.n_positions, 1), np.nan, dtype=np.float32)
    errors: list[str] = []
    root = spec.store.zarr_store()
    with quiet_zarr_warnings(), spec.store.errors("write"):
        arrays = {
            t: zarr.open_array(root, path=STACK_VARIABLES[t][0], mode="r+") for t in spec.types
        }
        provenance = zarr.open_array(root, path=PROVENANCE, mode="r+")
        for i in np.flatnonzero(unit.fetch).tolist():
            p = unit.start + i
            grid = mosaic_grid(float(unit.ra[i]), float(unit.dec[i]), spec.width, spec.height)

            def write(name: str, rows: slice, values: np.ndarray, bi: int = 0, p: int = p) -> None:
                if name == PROVENANCE:
                    if band == 0:  # the same in every filter: one writer
                        provenance[p, rows, :] = values
                else:
                    arrays[name][p, band, rows, :] = values

            outcome = MosaicAssembler(
                grid,
                mosaic_sources(grid),
                filters=spec.filters[band],
                types=spec.types,
                band_rows=spec.band_rows,
                fetcher=fetcher,
            ).run(write)
            status[i] = outcome.status
            zeropoint[i] = outcome.zeropoint
            errors.extend(outcome.errors)
        rows = slice(unit.start, unit.stop)
        cols = slice(band, band + 1)
        zarr.open_array(root, path="stack_zeropoint", mode="r+")[rows, cols] = zeropoint
        zarr.open_array(root, path="stack_status", mode="r+")[rows, cols] = status
    codes, counts = np.unique(status, return_counts=True)
    return UnitReport(
        index=work.index,
        n_positions=unit.n_positions,
        statuses={STATUS_NAMES[int(c)]: int(k) for c, k in zip(codes, counts)},
        requests=service.stats.snapshot(),
        strategies=dict(fetcher.used),
        seconds=time.perf_counter() - t0,
        errors=errors[:5],
    )


def mosaic_cutouts(
    positions: Any,
    store: str | os.PathLike[str],
    *,
    filters: str = "grizy",
    size: SizeLike = 240,
    types: str | tuple[str, ...] = ("stack",),
    strategy: str = "auto",
    service: str | PS1Service | None = None,
    client: distributed.Client | str | None = None,
    resume: bool = True,
    n_workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    compute: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    s3_endpoint: str | None = None,
) -> JobSummary | JobHandle:
    """Complete stack cutouts of any size up to 1 degree (14400 pixels), across skycell and
    projection-cell edges. Called by :func:`ps1dask.cutouts` with ``mosaic=True``, whose
    parameters these are."""

    bands = parse_filters(filters)
    width, height = parse_size(size, pair_order="yx", max_side=MAX_MOSAIC_SIZE)
    kinds = part_types(types, "stack")
    check_mosaic_strategy(strategy, strategies_for(strategy))
    table, svc, store_path = open_job(positions, store, service, strategy, resume, storage_options)
    if not isinstance(table, PositionTable):  # pragma: no cover - open_job's contract
        raise InvalidParameterError("positions could not be read")
    side = mosaic_chunk()
    plan = plan_positions(table, width, height, chunk=1, max_unit_positions=1)
    request = StackRequest(
        filters=bands,
        width=width,
        height=height,
        types=kinds,
        n_positions=plan.n_positions,
        positions_digest=plan.digest,
        service_url=svc.url,
    )
    if check_compatible(store_path, request):
        if not is_mosaic_store(store_path):
            raise StoreMismatchError(
                f"{store_path} holds plain cutouts, not mosaics; use another output path, "
                "or resume=False / --no-resume to overwrite it"
            )
    else:
        initial = np.zeros((plan.n_positions, len(bands)), dtype=np.uint8)
        initial[~plan.inside] = STATUS["outside_footprint"]
        create_mosaic_store(store_path, request, plan, initial, side)
    status = read_status(store_path)
    final = np.isin(status, list(FINAL_STATUSES))
    work = [
        MosaicUnit(len(bands) * u.index + b, u, b) for u in plan.units for b in range(len(bands))
    ]
    todo = [w for w in work if not final[w.unit.start : w.unit.stop, w.band].all()]
    # configured (the s3 source probed) only when there is something to fetch
    usable = mosaic_strategies(configured_strategies(strategy, s3_endpoint)) if todo else {}

    def make_spec(profile: ServiceProfile) -> MosaicTaskSpec:
        return MosaicTaskSpec(
            store=store_path,
            service=svc,
            filters=bands,
            types=kinds,
            width=width,
            height=height,
            band_rows=side,
            strategy=strategy,
            profile=profile,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            cache_bytes=None,
            strategies=usable,
        )

    cluster = JobCluster(client, n_workers, quiet, svc.throttle)

    run = summarised_run(
        run_mosaic_unit,
        todo,
        make_spec,
        svc=svc,
        store_path=store_path,
        cluster=cluster,
        strategy=strategy,
        progress=progress,
        probe=(plan.units[0] if plan.units else None, bands[0]),
        n_positions=plan.n_positions,
        filters=bands,
        units_total=len(work),
    )
    return run_job(run, cluster, store=store_path, compute=compute, starts_cluster=bool(todo))
