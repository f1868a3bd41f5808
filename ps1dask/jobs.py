"""The public jobs: ``ps1dask.cutouts`` (stacks) and ``ps1dask.warps`` (single epochs) into one Zarr store."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import distributed
import numpy as np
import pandas as pd

from ps1dask.client import PS1Service
from ps1dask.conventions import parse_filters, parse_size, part_types
from ps1dask.conventions.cutrule import SizeLike
from ps1dask.exceptions import InvalidParameterError, StoreMismatchError
from ps1dask.execution import (
    JobCluster,
    JobHandle,
    JobSummary,
    StackTaskSpec,
    WarpTaskSpec,
    run_stack_unit,
    run_warp_unit,
)
from ps1dask.execution.job_steps import (
    configured_strategies,
    count_statuses,
    open_job,
    run_job,
    summarised_run,
)
from ps1dask.fetch.warp import WarpUnit
from ps1dask.mosaic.job import is_mosaic_store, mosaic_cutouts
from ps1dask.planning import ServiceProfile, plan_stack_job
from ps1dask.planning.plan import PositionPlan, plan_positions
from ps1dask.positions import PositionTable
from ps1dask.storage import (
    FINAL_STATUSES,
    WarpRequest,
    check_compatible,
    create_stack_store,
    create_warp_store,
    read_status,
    store_chunk,
)
from ps1dask.storage.layout import position_chunk_size, read_array_of
from ps1dask.storage.location import StoreLocation

logger = logging.getLogger("ps1dask")


def cutouts(
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
    max_unit_positions: int = 64,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    compute: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    mosaic: bool = False,
    s3_endpoint: str | None = None,
) -> JobSummary | JobHandle:
    """Fetch PS1 stack cutouts for every position into one Zarr store.

    Parameters
    ----------
    positions
        Anything :func:`ps1dask.read_positions` reads: a CSV/Parquet/FITS/VOTable path, a
        pandas or dask DataFrame, an astropy Table, or a PositionTable. RA/Dec in degrees or
        sexagesimal, or skycell ids.
    store
        Output Zarr (v3) store: a directory, or an object-store URL (``s3://bucket/x.zarr``,
        ``gs://``, ``az://``, ``file://``; ``memory://`` only with workers in this process).
        Opens with :func:`ps1dask.open_store`.
    filters
        Subset of ``grizy``.
    size
        Cutout side in pixels (0.25 arcsec each, at most 6000): ``N``; an astropy
        ``Quantity`` in pixels or as an angle (``30 * u.arcsec`` = 120 pixels); a pair in
        **(ny, nx) order, as astropy's Cutout2D and numpy shapes** (``(100, 200)`` is 200
        wide, 100 high); or the string ``"W,H"``, **width first** as the CLI's ``--size``.
    types
        Stack image types: ``stack`` (always included) plus any of ``stack.wt``,
        ``stack.mask``, ``stack.exp``, ``stack.num``, ``stack.expwt``.
    strategy
        A registered fetch strategy (:func:`ps1dask.fetch.strategies.strategy_choices`):
        built in, ``cutout`` (server cutouts), ``skycell`` (whole files, cut locally),
        ``range`` (HTTP Range reads of the needed row tiles), or ``auto`` (a cost model per
        skycell group). All give identical pixels; other names raise
        :class:`~ps1dask.exceptions.UnknownStrategyError`.
    service
        Service URL or :class:`~ps1dask.client.PS1Service`; default ``ps1dask.service.url``
        (the real STScI service).
    client
        A ``distributed.Client`` or scheduler address; default the current client, else a
        new LocalCluster of ``n_workers`` processes.
    resume
        Keep what an existing store of the same request holds and fetch only the rest. With
        ``False`` an existing store at ``store`` is deleted and made anew.
    n_workers
        Worker processes of the LocalCluster started when there is no client (default
        Dask's choice for this machine).
    max_unit_positions
        Positions per task (bounds a task's memory and time).
    cache_dir
        Whole-file cache of the ``skycell`` strategy (default ``ps1dask.cache.directory`` or
        the user's cache directory, ``~/.cache/ps1dask``); bounded by
        ``ps1dask.cache.max-bytes`` (bytes). See ``ps1dask cache info|clear``.
    progress
        Show a progress bar (default: in a terminal or a notebook, and not when
        ``ps1dask.progress`` is false; with ``compute=False`` only when ``True``).
    quiet
        Do not print the Dask dashboard link.
    compute
        ``False``: return a :class:`JobHandle` as soon as the work is submitted, and let
        the job run in the background (``handle.result()`` gives the summary).
    storage_options
        For a store URL: fsspec's options, as pandas and xarray take them (``endpoint_url``,
        ``key``, ``secret``, ``anon``, ``client_kwargs``, ...). S3 credentials may instead
        come from the standard ``AWS_*`` environment variables (on the workers too).
    mosaic
        Complete cutouts of any size up to 14400 pixels (1 degree), filled from every
        skycell that covers them (:mod:`ps1dask.mosaic`): on the position's projection-cell
        grid, pixels of that cell's skycells copied exactly, those of other projection cells
        reprojected and rescaled to the output's zero point; ``mosaic_skycell`` gives each
        pixel's source. Not with ``strategy="cutout"`` (``auto`` never picks it then);
        ``max_unit_positions`` does not apply (one task per position and filter).
    s3_endpoint
        Endpoint (http(s) URL) of the S3 copy the ``s3`` strategy reads, for S3-compatible
        mirrors and the emulator; default ``ps1dask.s3.endpoint-url`` (null: AWS). Setting
        it also lets ``auto`` choose ``s3``.

    Returns
    -------
    JobSummary
        Counts per status, requests, bytes, seconds (``print(summary)`` for a report); a
        :class:`JobHandle` with ``compute=False``.
    """
    if mosaic:
        return mosaic_cutouts(
            positions,
            store,
            filters=filters,
            size=size,
            types=types,
            strategy=strategy,
            service=service,
            client=client,
            resume=resume,
            n_workers=n_workers,
            cache_dir=cache_dir,
            progress=progress,
            quiet=quiet,
            compute=compute,
            storage_options=storage_options,
            s3_endpoint=s3_endpoint,
        )
    table, svc, store_path = open_job(positions, store, service, strategy, resume, storage_options)
    if is_mosaic_store(store_path):
        raise StoreMismatchError(
            f"{store_path} holds mosaics (mosaic=True, --mosaic); rerun with mosaic=True, "
            "or choose another output path"
        )
    plan = plan_stack_job(
        table,
        filters=filters,
        size=size,
        types=types,
        service_url=svc.url,
        max_unit_positions=max_unit_positions,
        chunk=store_chunk(store_path),
    )
    create: Callable[[], None] | None = None
    if check_compatible(store_path, plan.request):
        status = read_status(store_path)
    else:
        # a new store (or part): created while the first units fetch (they wait for it
        # before writing), or now if the job runs in the background
        create = functools.partial(
            create_stack_store,
            store_path,
            plan.request,
            plan.positions,
            plan.chunk,
            plan.initial_status,
        )
        status = plan.initial_status
        if not compute:
            create()
            create = None
    final = np.isin(status, list(FINAL_STATUSES))
    todo = [u for u in plan.units if not final[u.start : u.stop].all()]
    # Configured (the s3 source probed) before any cluster starts: a source that does not
    # answer is one clear error, not a cluster torn down mid-start; a finished store is not
    # probed at all.
    strategies = configured_strategies(strategy, s3_endpoint) if todo else {}

    def make_spec(profile: ServiceProfile) -> StackTaskSpec:
        return StackTaskSpec(
            store=store_path,
            service=svc,
            filters=plan.filters,
            types=plan.types,
            width=plan.request.width,
            height=plan.request.height,
            strategy=strategy,
            profile=profile,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            cache_bytes=None,
            strategies=strategies,
        )

    cluster = JobCluster(client, n_workers, quiet, svc.throttle)

    run = summarised_run(
        run_stack_unit,
        todo,
        make_spec,
        svc=svc,
        store_path=store_path,
        cluster=cluster,
        strategy=strategy,
        progress=progress,
        probe=(plan.units[0] if plan.units else None, plan.filters[0]),
        n_positions=plan.request.n_positions,
        filters=plan.filters,
        units_total=len(plan.units),
        create=create,
    )
    return run_job(run, cluster, store=store_path, compute=compute, starts_cluster=bool(todo))


def _list_warp_epochs(
    svc: PS1Service, base: PositionPlan, bands: str, mjd_range: tuple[float, float] | None
) -> dict[tuple[int, int, str], np.ndarray]:
    """Warp epochs of every skycell the job needs, from batched ``ps1filenames.py`` POSTs.

    One representative position per skycell is listed (the service answers with that
    position's best skycell, the same one :func:`ps1dask.locate` finds).
    """
    inside = np.flatnonzero(base.inside)
    pc = np.array([int(s[8:12]) for s in base.positions.skycell[inside]], dtype=np.int64)
    sc = np.array([int(s[13:16]) for s in base.positions.skycell[inside]], dtype=np.int64)
    keys, first = np.unique(pc * 1000 + sc, return_index=True)
    reps = inside[first]
    if reps.size == 0:
        return {}
    listing = svc.list_images_many(
        base.positions.ra[reps], base.positions.dec[reps], filters=bands, types=("warp",)
    )
    epochs: dict[tuple[int, int, str], np.ndarray] = {}
    if len(listing):
        rep_key = keys[listing["position"].to_numpy(dtype=np.int64)]
        mjd = listing["mjd"].to_numpy(dtype=np.float64)
        keep = np.ones(len(listing), dtype=bool)
        if mjd_range is not None:
            keep = (mjd >= mjd_range[0]) & (mjd <= mjd_range[1])
        frame = pd.DataFrame(
            {"key": rep_key[keep], "band": listing["filter"].to_numpy()[keep], "mjd": mjd[keep]}
        )
        for (key, band), rows in frame.groupby(["key", "band"]):
            epochs[(int(key) // 1000, int(key) % 1000, str(band))] = np.unique(
                rows["mjd"].to_numpy()
            )
    return epochs


def _epochs_from_store(
    path: StoreLocation, base: PositionPlan, bands: str
) -> dict[tuple[int, int, str], np.ndarray]:
    """The epoch lists a previous run stored (a resumed job lists nothing again)."""
    listed = read_array_of(path, "warp_mjd_listed")
    n_epochs = read_array_of(path, "n_epochs")
    epochs: dict[tuple[int, int, str], np.ndarray] = {}
    for i in np.flatnonzero(base.inside).tolist():
        cell = base.positions.skycell[i]
        pc, sc = int(cell[8:12]), int(cell[13:16])
        for bi, band in enumerate(bands):
            epochs.setdefault((pc, sc, band), listed[i, bi, : n_epochs[i, bi]])
    return epochs


def warps(
    positions: Any,
    store: str | os.PathLike[str],
    *,
    filters: str = "grizy",
    size: SizeLike = 64,
    types: str | tuple[str, ...] = ("warp",),
    mjd_range: tuple[float, float] | None = None,
    strategy: str = "auto",
    service: str | PS1Service | None = None,
    client: distributed.Client | str | None = None,
    resume: bool = True,
    n_workers: int | None = None,
    max_unit_positions: int = 16,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    compute: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    s3_endpoint: str | None = None,
) -> JobSummary | JobHandle:
    """Fetch every single-epoch PS1 warp cutout of every position into a Zarr store.

    Same planning, request limit, strategies, progress and resume as :func:`cutouts`. The
    warps of each (position, filter) are sorted by time along the ``epoch`` axis and padded
    with NaN (``n_epochs`` says how many are real). Per epoch the store keeps ``warp_mjd``
    (UTC at mid-exposure; PS1 headers give MJD-OBS in TAI at the start, kept as
    ``warp_mjd_obs_tai``), ``warp_exptime``, ``warp_zeropoint`` (AB), ``warp_coverage`` and
    ``warp_status`` (``blank`` where the warp has no pixel near the position: recorded, and
    never fetched again on reruns).

    Parameters
    ----------
    positions
        The positions, in any form :func:`cutouts` takes.
    store
        Output Zarr (v3) store, a directory or a URL as for :func:`cutouts`; may already
        hold stack cutouts of the same positions.
    filters
        Subset of ``grizy``.
    size
        Cutout side in pixels (default 64 = 16 arcsec), in the forms :func:`cutouts` takes
        (a pair is (ny, nx)). To put warps into a store that holds stack cutouts, use the
        same positions, filters and size.
    types
        ``warp`` (always included) plus any of ``warp.wt`` (variance) and ``warp.mask``.
    mjd_range
        Only warps whose listed MJD (TAI, exposure start) is within ``(start, end)``, days.
    strategy
        A registered fetch strategy, as for :func:`cutouts`.
    service
        Service URL or :class:`~ps1dask.client.PS1Service`, as for :func:`cutouts`.
    client
        A ``distributed.Client`` or scheduler address, as for :func:`cutouts`.
    resume
        Keep the warps an existing store of the same request holds, as for :func:`cutouts`.
    n_workers
        Worker processes of the LocalCluster started when there is no client.
    max_unit_positions
        Positions per task; a task fetches all their epochs (default 16).
    cache_dir
        Whole-file cache of the ``skycell`` strategy, as for :func:`cutouts`.
    progress
        Show a progress bar, as for :func:`cutouts`.
    quiet
        Do not print the Dask dashboard link.
    compute
        ``False``: return a :class:`JobHandle` at once and run the job in the background.
    storage_options
        For a store URL: fsspec's options, as for :func:`cutouts`.
    s3_endpoint
        Endpoint of the S3 copy the ``s3`` strategy reads, as for :func:`cutouts`.

    Returns
    -------
    JobSummary
        Counts per status, requests, bytes, seconds; a :class:`JobHandle` with
        ``compute=False``.
    """
    bands = parse_filters(filters)
    width, height = parse_size(size, pair_order="yx")  # the Python API's pairs: (ny, nx)
    kinds = part_types(types, "warp")
    if mjd_range is not None:
        mjd_range = (float(mjd_range[0]), float(mjd_range[1]))
        if not mjd_range[0] <= mjd_range[1]:
            raise InvalidParameterError(f"mjd_range {mjd_range}: start must not be after end")
    table, svc, store_path = open_job(positions, store, service, strategy, resume, storage_options)
    if is_mosaic_store(store_path):
        raise StoreMismatchError(
            f"{store_path} holds mosaics (mosaic=True, --mosaic); put warps in another store"
        )
    # One cluster for the whole job: the listing (it takes cluster-wide request slots) and
    # the units; closed at the end, or on an error before the units run.
    cluster = JobCluster(client, n_workers, quiet, svc.throttle)
    try:
        return _warps_with(
            cluster,
            table,
            svc,
            store_path,
            bands,
            width,
            height,
            kinds,
            mjd_range,
            strategy=strategy,
            max_unit_positions=max_unit_positions,
            cache_dir=cache_dir,
            progress=progress,
            compute=compute,
            s3_endpoint=s3_endpoint,
        )
    except BaseException:
        cluster.close()
        raise


def _warps_with(
    cluster: JobCluster,
    table: PositionTable,
    svc: PS1Service,
    store_path: StoreLocation,
    bands: str,
    width: int,
    height: int,
    kinds: tuple[str, ...],
    mjd_range: tuple[float, float] | None,
    *,
    strategy: str,
    max_unit_positions: int,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool | None,
    compute: bool,
    s3_endpoint: str | None = None,
) -> JobSummary | JobHandle:
    """The rest of :func:`warps`, after its arguments are checked."""
    chunk = store_chunk(store_path) or min(
        position_chunk_size(len(bands) * 30, width, height), max_unit_positions
    )
    base = plan_positions(table, width, height, chunk=chunk, max_unit_positions=max_unit_positions)
    request = WarpRequest(
        filters=bands,
        width=width,
        height=height,
        types=kinds,
        n_positions=base.n_positions,
        positions_digest=base.digest,
        service_url=svc.url,
        mjd_range=mjd_range,
    )
    create: Callable[[], None] | None = None
    if check_compatible(store_path, request, part="warp"):
        epochs = _epochs_from_store(store_path, base, bands)
        n_epochs = read_array_of(store_path, "n_epochs")
        status = read_array_of(store_path, "warp_status")
    else:
        with cluster.get().as_current():
            epochs = _list_warp_epochs(svc, base, bands, mjd_range)
        n = base.n_positions
        counts = np.zeros((n, len(bands)), dtype=np.int64)
        cells = base.positions.skycell
        for i in np.flatnonzero(base.inside).tolist():
            pc, sc = int(cells[i][8:12]), int(cells[i][13:16])
            for bi, band in enumerate(bands):
                counts[i, bi] = len(epochs.get((pc, sc, band), ()))
        n_max = max(int(counts.max(initial=0)), 1)
        listed = np.full((n, len(bands), n_max), np.nan)
        for i in np.flatnonzero(base.inside).tolist():
            pc, sc = int(cells[i][8:12]), int(cells[i][13:16])
            for bi, band in enumerate(bands):
                values = epochs.get((pc, sc, band), np.empty(0))
                listed[i, bi, : len(values)] = values
        # created while the first units fetch (they wait for it before writing), or now if
        # the job runs in the background
        create = functools.partial(
            create_warp_store, store_path, request, base.positions, base.chunk, listed, counts
        )
        n_epochs = counts.astype("int16")
        status = np.zeros(listed.shape, dtype=np.uint8)
        if not compute:
            create()
            create = None
    n_max = status.shape[2]
    real = np.arange(n_max)[None, None, :] < n_epochs[:, :, None]
    done = ~real | np.isin(status, list(FINAL_STATUSES))
    todo = []
    for unit in base.units:
        if done[unit.start : unit.stop].all():
            continue
        keys = {(pc, sc) for (pc, sc), _ in unit.skycell_groups()}
        unit_epochs = {
            (pc, sc, b): epochs.get((pc, sc, b), np.empty(0)) for pc, sc in keys for b in bands
        }
        todo.append(WarpUnit(unit, unit_epochs))

    def make_spec(profile: ServiceProfile) -> WarpTaskSpec:
        return WarpTaskSpec(
            store=store_path,
            service=svc,
            filters=bands,
            types=kinds,
            n_epochs_max=n_max,
            width=width,
            height=height,
            strategy=strategy,
            profile=profile,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            cache_bytes=None,
            strategies=configured_strategies(strategy, s3_endpoint),
        )

    def warp_statuses() -> dict[str, int]:
        status = read_array_of(store_path, "warp_status")
        real = np.arange(n_max)[None, None, :] < n_epochs[:, :, None]
        return count_statuses(status[real])

    run = summarised_run(
        run_warp_unit,
        todo,
        make_spec,
        svc=svc,
        store_path=store_path,
        cluster=cluster,
        strategy=strategy,
        progress=progress,
        probe=(todo[0].unit if todo else None, bands[0]),
        n_positions=base.n_positions,
        filters=bands,
        units_total=len(base.units),
        statuses=warp_statuses,
        create=create,
    )
    return run_job(run, cluster, store=store_path, compute=compute, starts_cluster=bool(todo))
