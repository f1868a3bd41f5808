"""The steps every job takes, whatever it fetches: normalise its inputs, configure its
strategies, measure the service for ``auto``, run its units on the cluster, count the
outcome, and return a summary or a background handle. :mod:`ps1dask.jobs` (stacks and
warps) and :mod:`ps1dask.mosaic.job` are built from them."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.config
import distributed
import numpy as np

from ps1dask.client import PS1Service, RequestStats
from ps1dask.conventions import image_filename
from ps1dask.exceptions import InvalidParameterError, JobAbortedError, ServiceError
from ps1dask.execution.job import JobCluster, JobHandle, JobSummary
from ps1dask.execution.runner import RunControl, run_units
from ps1dask.execution.store_ready import StoreCreation, store_created
from ps1dask.fetch.decoded_rows import begin_sharing, end_sharing
from ps1dask.fetch.strategies import job_strategies, strategies_for
from ps1dask.planning import ServiceProfile, WorkUnit
from ps1dask.positions import PositionTable, read_positions
from ps1dask.storage import STATUS_NAMES, read_status
from ps1dask.storage.layout import remove_store
from ps1dask.storage.location import StoreLocation
from ps1dask.tessellation import SkycellId, skycell_geometry_of

logger = logging.getLogger("ps1dask")

__all__ = [
    "check_store_shared",
    "configured_strategies",
    "count_statuses",
    "execute_units",
    "job_key",
    "measure_profile",
    "open_job",
    "run_job",
    "summarised_run",
]


def open_job(
    positions: Any,
    store: str | os.PathLike[str],
    service: str | PS1Service | None,
    strategy: str,
    resume: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> tuple[PositionTable, PS1Service, StoreLocation]:
    """Check and normalise what every job takes: strategy, positions, service, output store."""
    strategies_for(strategy)  # UnknownStrategyError (an InvalidParameterError) names the choices
    store_path = StoreLocation.of(store, storage_options)
    table = positions if isinstance(positions, PositionTable) else read_positions(positions)
    svc = service if isinstance(service, PS1Service) else PS1Service(service)
    store_path.check(replace=not resume)
    if not resume:
        remove_store(store_path)
    if not store_path.exists() and store_path.occupied():
        raise InvalidParameterError(
            f"{store_path} exists and is not a ps1dask store; choose a new path"
        )
    return table, svc, store_path


def configured_strategies(strategy: str, s3_endpoint: str | None) -> dict[str, Any]:
    """The job's strategies, configured once in this process (the s3 source probed)."""
    settings = {} if s3_endpoint is None else {"ps1dask.s3.endpoint-url": s3_endpoint}
    with dask.config.set(settings):
        return job_strategies(strategy)


def measure_profile(service: PS1Service, unit: WorkUnit, band: str, cores: int) -> ServiceProfile:
    """Measure the service with three small requests on a stack image the job needs.

    A 4x4 FITS cutout times a cutout (server work included), a 64 kB Range read the time to
    a file's first byte, and a 1 MB Range read the bandwidth.
    """
    first = int(np.flatnonzero(unit.fetch)[0])
    sid = SkycellId(int(unit.projcell[first]), int(unit.subcell[first]))
    filename = image_filename(sid, band, "stack")
    geo = skycell_geometry_of(sid)

    def timed(call: Any) -> float:
        t0 = time.perf_counter()
        call()
        return time.perf_counter() - t0

    small, large = 1 << 16, 1 << 20
    probes = [
        lambda: service.cutout_fits(filename, float(unit.ra[first]), float(unit.dec[first]), 4),
        lambda: service.read_range(filename, 0, small),
        lambda: service.read_range(filename, small, small + large),
    ]
    # At once (the job waits for them), each in a copy of this context so that the
    # cluster's current Client, hence its request slots, applies in the pool's threads too.
    with ThreadPoolExecutor(len(probes), thread_name_prefix="ps1dask-probe") as pool:
        futures = [pool.submit(contextvars.copy_context().run, timed, probe) for probe in probes]
        cutout_latency, file_latency, large_read = (f.result() for f in futures)
    transfer = max(large_read - file_latency, 1e-4)
    return ServiceProfile(
        latency_s=file_latency,
        cutout_latency_s=cutout_latency,
        bandwidth_bps=max(large / transfer, 1e5),
        concurrency=service.throttle.max_concurrency,
        cores=max(cores, 1),
        image_rows=geo.naxis2,
        image_cols=geo.naxis1,
    )


def check_store_shared(store: StoreLocation, dask_client: distributed.Client) -> None:
    """A ``memory://`` store lives in this process only: refuse it unless every worker
    runs here too (``distributed.Client(processes=False)``), or workers would write their
    chunks into memories of their own and the job would read back nothing."""
    if not store.in_process:
        return
    pids = set(dask_client.run(os.getpid).values())
    if pids - {os.getpid()}:
        raise InvalidParameterError(
            f"store {store}: a memory:// store exists only in this process, but the Dask "
            "workers run in other processes; use an object store or a path, or a client "
            "whose workers run in this process (distributed.Client(processes=False))"
        )


def job_key(store: StoreLocation, kind: str) -> str:
    """The prefix of one run's task keys: the store's hash (readable on the dashboard) and
    a part new to every run. Why new: a rerun right after a failed run submitted the same
    keys while the scheduler was still cancelling or forgetting the failed run's tasks, and
    the rerun's units came back cancelled."""
    digest = hashlib.sha1(store.url.encode()).hexdigest()[:8]
    return f"ps1dask-{kind}-{digest}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _rows_shared(dask_client: distributed.Client, share: bool) -> Iterator[None]:
    """Workers share decoded rows while the block runs (:mod:`ps1dask.fetch.decoded_rows`);
    a best effort: a worker that misses the call only shares nothing."""
    if not share:
        yield
        return
    try:
        dask_client.run(begin_sharing, on_error="ignore")
    except (OSError, distributed.TimeoutError) as err:
        logger.warning("workers will not share decoded rows: %s", err)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, distributed.TimeoutError):
            dask_client.run(end_sharing, on_error="ignore")


def execute_units(
    func: Any,
    todo: list[Any],
    make_spec: Any,
    *,
    svc: PS1Service,
    store_path: StoreLocation,
    cluster: JobCluster,
    progress: bool | None,
    measure: bool,
    probe: tuple[Any, str],
    control: RunControl | None = None,
    create: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run units on the cluster; returns the summary's requests, strategies, errors, seconds.

    ``create`` (a new store's creation) runs on a client thread while the units are
    submitted and fetch; they wait for it before writing (:mod:`ps1dask.execution.store_ready`).
    """
    requests = RequestStats()
    strategies: dict[str, int] = {}
    errors: list[str] = []
    if not todo:
        if create is not None:
            create()
        return {
            "requests": requests.snapshot(),
            "strategies": strategies,
            "errors": errors,
            "seconds": 0.0,
        }
    store_path.check(write=True)
    dask_client = cluster.get()
    check_store_shared(store_path, dask_client)
    with store_created(create, dask_client) as creation:
        return _execute_on(
            dask_client,
            func,
            todo,
            make_spec,
            svc=svc,
            store_path=store_path,
            progress=progress,
            measure=measure,
            probe=probe,
            control=control,
            creation=creation,
        )


def _execute_on(
    dask_client: distributed.Client,
    func: Any,
    todo: list[Any],
    make_spec: Any,
    *,
    svc: PS1Service,
    store_path: StoreLocation,
    progress: bool | None,
    measure: bool,
    probe: tuple[Any, str],
    control: RunControl | None,
    creation: StoreCreation | None,
) -> dict[str, Any]:
    """:func:`execute_units` once the cluster is known (the store may still be created)."""
    requests = RequestStats()
    strategies: dict[str, int] = {}
    errors: list[str] = []
    cores = sum(w["nthreads"] for w in dask_client.scheduler_info()["workers"].values())
    profile = ServiceProfile(concurrency=svc.throttle.max_concurrency, cores=cores)
    if measure and probe[0] is not None:
        if creation is not None:
            # the probe mostly waits on the service: the store's creation (Python work of a
            # few tenths of a second) costs the job nothing then, and no longer competes
            # with the units once they run
            creation.start()
        try:
            # as_current: the client process's own requests take cluster-wide slots too
            with dask_client.as_current():
                profile = measure_profile(svc.with_stats(requests), probe[0], probe[1], cores)
        except ServiceError as err:
            logger.warning("could not measure the service (%s); using default costs", err)
    spec = make_spec(profile)
    if creation is not None:
        spec = dataclasses.replace(spec, store_ready=creation.event)
    # units cut from whole-file rows share them within a worker process, during this job
    share_rows = getattr(spec, "strategy", "cutout") != "cutout"
    weights = None
    if share_rows:
        # each unit type (WorkUnit, WarpUnit, MosaicUnit) states its own CPU work
        weights = [u.work_pixels(spec.width, spec.height, profile) for u in todo]
    with _rows_shared(dask_client, share_rows):
        outcome = run_units(
            dask_client,
            func,
            todo,
            spec,
            key_prefix=job_key(store_path, func.__name__),
            progress_total=sum(u.n_positions for u in todo),
            show_progress=progress,
            control=control,
            neighbours_together=share_rows,
            weights=weights,
            submitted=None if creation is None else creation.start,
        )
    requests.merge(outcome.requests)
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
    return {
        "requests": requests.snapshot(),
        "strategies": strategies,
        "errors": errors,
        "seconds": outcome.seconds,
    }


def count_statuses(status: np.ndarray) -> dict[str, int]:
    codes, counts = np.unique(status, return_counts=True)
    return {STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)}


def summarised_run(
    func: Any,
    todo: list[Any],
    make_spec: Callable[[ServiceProfile], Any],
    *,
    svc: PS1Service,
    store_path: StoreLocation,
    cluster: JobCluster,
    strategy: str,
    progress: bool | None,
    probe: tuple[Any, str],
    n_positions: int,
    filters: str,
    units_total: int,
    statuses: Callable[[], dict[str, int]] | None = None,
    create: Callable[[], None] | None = None,
) -> Callable[[RunControl | None], JobSummary]:
    """The rest of a job, for :func:`run_job`: run the units ``todo`` (``func`` on each,
    with the spec ``make_spec`` makes from the service profile; measured first when the
    strategy is ``auto``), then summarise the store. ``statuses`` counts the outcome after
    the run (default: the ``stack_status`` array). ``create`` makes a new store while the
    units start (see :func:`execute_units`)."""

    def run(control: RunControl | None) -> JobSummary:
        ran = execute_units(
            func,
            todo,
            make_spec,
            svc=svc,
            store_path=store_path,
            cluster=cluster,
            progress=progress if control is None else bool(progress),
            measure=strategy == "auto",
            probe=probe,
            control=control,
            create=create,
        )
        return JobSummary(
            store=str(store_path),
            n_positions=n_positions,
            filters=filters,
            statuses=count_statuses(read_status(store_path)) if statuses is None else statuses(),
            units_total=units_total,
            units_run=len(todo),
            **ran,
        )

    return run


def run_job(
    run: Callable[[RunControl | None], JobSummary],
    cluster: JobCluster,
    *,
    store: StoreLocation,
    compute: bool,
    starts_cluster: bool,
) -> JobSummary | JobHandle:
    """Run the rest of a job here (``compute=True``) or in a background thread."""
    if compute:
        try:
            return run(None)
        finally:
            cluster.close()
    if starts_cluster:
        cluster.get()  # started in the caller's thread, which lives on

    def in_background(control: RunControl) -> JobSummary:
        try:
            return run(control)
        finally:
            cluster.close()

    return JobHandle(str(store), in_background)
