"""The public jobs: ``ps1dask.cutouts`` (stack cutouts into one Zarr store)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import distributed
import numpy as np

from ps1dask.client import PS1Service, RequestStats
from ps1dask.conventions import image_filename
from ps1dask.exceptions import InvalidParameterError, ServiceError
from ps1dask.execution import JobAbortedError, StackTaskSpec, cluster_client, run_stack_unit, run_units
from ps1dask.planning import ServiceProfile, StackPlan, plan_stack_job
from ps1dask.planning.cost import STRATEGIES
from ps1dask.positions import PositionTable, read_positions
from ps1dask.storage import (
    FINAL_STATUSES,
    STATUS,
    check_compatible,
    create_stack_store,
    read_status,
    store_chunk,
)
from ps1dask.storage.layout import remove_store
from ps1dask.tessellation import SkycellId, skycell_geometry_of

logger = logging.getLogger("ps1dask")


@dataclass
class JobSummary:
    """What a job did: statuses of every (position, filter), requests, time."""

    store: str
    n_positions: int
    filters: str
    statuses: dict[str, int]
    units_total: int
    units_run: int
    requests: dict[str, Any] = field(default_factory=dict)
    strategies: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def cutouts_fetched(self) -> int:
        return int(sum(int(r) for r in self.strategies.values()))

    @property
    def image_requests(self) -> int:
        return int(self.requests.get("requests", 0))

    def __str__(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()) if v)
        rate = self.statuses.get("ok", 0) / self.seconds if self.seconds > 0 else 0.0
        mb = self.requests.get("bytes", 0) / 1e6
        lines = [
            f"store        {self.store}",
            f"positions    {self.n_positions} x filters {self.filters}",
            f"status       {statuses}",
            f"work units   {self.units_run} run of {self.units_total} "
            f"({self.units_total - self.units_run} already complete)",
            f"requests     {self.requests.get('requests', 0)} "
            f"({self.requests.get('retries', 0)} retries), {mb:.1f} MB",
            f"strategies   {', '.join(f'{k} {v}' for k, v in sorted(self.strategies.items())) or '-'}",
            f"time         {self.seconds:.1f} s, {rate:.1f} cutouts/s",
        ]
        if self.errors:
            lines.append("first errors " + "\n             ".join(self.errors[:5]))
        return "\n".join(lines)


def measure_profile(service: PS1Service, plan: StackPlan, cores: int) -> ServiceProfile:
    """Measure latency and bandwidth with two small requests to a file the job needs."""
    unit = plan.units[0]
    first = int(np.flatnonzero(unit.fetch)[0])
    sid = SkycellId(int(unit.projcell[first]), int(unit.subcell[first]))
    filename = image_filename(sid, plan.filters[0], "stack")
    geo = skycell_geometry_of(sid)
    t0 = time.perf_counter()
    size = service.file_size(filename)
    latency = time.perf_counter() - t0
    n = min(size, 1 << 20)
    t0 = time.perf_counter()
    service.read_range(filename, 0, n)
    transfer = max(time.perf_counter() - t0 - latency, 1e-4)
    return ServiceProfile(
        latency_s=latency,
        bandwidth_bps=max(n / transfer, 1e5),
        concurrency=service.throttle.max_concurrency,
        cores=max(cores, 1),
        file_bytes=float(size),
        image_rows=geo.naxis2,
        image_cols=geo.naxis1,
    )


def _refuse_foreign_directory(path: Path) -> None:
    if path.exists() and not (path / "zarr.json").exists():
        if not path.is_dir() or any(path.iterdir()):
            raise InvalidParameterError(f"{path} exists and is not a ps1dask store; choose a new path")


def _job_key(store: Path) -> str:
    return "ps1dask-stack-" + hashlib.sha1(str(store.resolve()).encode()).hexdigest()[:8]


def cutouts(
    positions: Any,
    store: str | os.PathLike[str],
    *,
    filters: str = "grizy",
    size: int | str | tuple[int, int] = 240,
    types: str | tuple[str, ...] = ("stack",),
    strategy: str = "auto",
    service: str | PS1Service | None = None,
    client: distributed.Client | str | None = None,
    resume: bool = True,
    n_workers: int | None = None,
    max_unit_positions: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    quiet: bool = False,
) -> JobSummary:
    """Fetch PS1 stack cutouts for every position into one Zarr store.

    Parameters
    ----------
    positions
        Anything :func:`ps1dask.read_positions` reads: a CSV/Parquet/FITS/VOTable path, a
        pandas or dask DataFrame, an astropy Table, or a PositionTable. RA/Dec in degrees or
        sexagesimal, or skycell ids.
    store
        Output Zarr (v3) directory. Opens with :func:`ps1dask.open_store`.
    filters
        Subset of ``grizy``.
    size
        Cutout side in pixels (0.25 arcsec each), ``N`` or ``"W,H"``; at most 6000.
    types
        Stack image types: ``stack`` (always included) plus any of ``stack.wt``,
        ``stack.mask``, ``stack.exp``, ``stack.num``, ``stack.expwt``.
    strategy
        ``cutout`` (server cutouts), ``skycell`` (whole files, cut locally), ``range`` (HTTP
        Range reads of the needed row tiles) or ``auto`` (a cost model per skycell group).
        All give identical pixels.
    service
        Service URL or :class:`~ps1dask.client.PS1Service`; default ``ps1dask.service.url``
        (the real STScI service).
    client
        A ``distributed.Client`` or scheduler address; default the current client, else a
        new LocalCluster of ``n_workers`` processes.
    resume
        Keep what an existing store of the same request holds and fetch only the rest. With
        ``False`` an existing store at ``store`` is deleted and made anew.
    max_unit_positions
        Positions per task (bounds a task's memory and time).
    cache_dir
        Whole-file cache of the ``skycell`` strategy (default ``ps1dask.cache.directory`` or
        a per-user temp directory); bounded by ``ps1dask.cache.max-bytes``.

    Returns
    -------
    JobSummary
        Counts per status, requests, bytes, seconds (``print(summary)`` for a report).
    """
    if strategy not in (*STRATEGIES, "auto"):
        raise InvalidParameterError(f"strategy {strategy!r}: choose one of auto, {', '.join(STRATEGIES)}")
    table = positions if isinstance(positions, PositionTable) else read_positions(positions)
    svc = service if isinstance(service, PS1Service) else PS1Service(service)
    store_path = Path(store)
    if not resume:
        remove_store(store_path)
    _refuse_foreign_directory(store_path)
    plan = plan_stack_job(
        table, filters=filters, size=size, types=types, service_url=svc.url,
        max_unit_positions=max_unit_positions, chunk=store_chunk(store_path),
    )
    if not check_compatible(store_path, plan.request):
        create_stack_store(store_path, plan.request, plan.positions, plan.chunk, plan.initial_status)
    status = read_status(store_path)
    final = np.isin(status, list(FINAL_STATUSES))
    todo = [u for u in plan.units if not final[u.start : u.stop].all()]

    requests = RequestStats()
    strategies: dict[str, int] = {}
    errors: list[str] = []
    seconds = 0.0
    if todo:
        with cluster_client(client, n_workers=n_workers, quiet=quiet) as dask_client:
            cores = sum(w["nthreads"] for w in dask_client.scheduler_info()["workers"].values())
            profile = ServiceProfile(concurrency=svc.throttle.max_concurrency, cores=cores)
            if strategy == "auto":
                try:
                    # as_current: the client process's own requests take cluster-wide slots too
                    with dask_client.as_current():
                        profile = measure_profile(svc.with_stats(requests), plan, cores)
                except ServiceError as err:
                    logger.warning("could not measure the service (%s); using default costs", err)
            spec = StackTaskSpec(
                store=str(store_path.resolve()),
                service=svc,
                filters=plan.filters,
                types=plan.types,
                width=plan.request.width,
                height=plan.request.height,
                strategy=strategy,
                profile=profile,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                cache_bytes=None,
            )
            outcome = run_units(
                dask_client,
                run_stack_unit,
                todo,
                spec,
                key_prefix=_job_key(store_path),
                progress_total=sum(u.n_positions for u in todo),
                show_progress=progress,
            )
        requests.merge(outcome.requests)
        seconds = outcome.seconds
        for report in outcome.reports:
            for k, v in report.strategies.items():
                strategies[k] = strategies.get(k, 0) + v
            errors.extend(report.errors)
        if outcome.aborted:
            raise JobAbortedError(
                f"stopped: {outcome.aborted}. The store {store_path} is consistent: "
                f"{len(outcome.reports)} of {len(todo)} units finished. Rerun the same command "
                "later to resume where it stopped."
            )
    final_status = read_status(store_path)
    codes, counts = np.unique(final_status, return_counts=True)
    names = {v: k for k, v in STATUS.items()}
    return JobSummary(
        store=str(store_path),
        n_positions=plan.request.n_positions,
        filters=plan.filters,
        statuses={names[int(c)]: int(n) for c, n in zip(codes, counts)},
        units_total=len(plan.units),
        units_run=len(todo),
        requests=requests.snapshot(),
        strategies=strategies,
        seconds=seconds,
        errors=errors,
    )
