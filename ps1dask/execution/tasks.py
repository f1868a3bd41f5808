"""What runs inside one Dask task: fetch a work unit, write its chunks, report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ps1dask.client import PS1Service
from ps1dask.execution.store_ready import wait_for_store
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.stack import StackUnitFetcher
from ps1dask.fetch.strategies import FetchStrategy, strategies_for
from ps1dask.fetch.warp import WarpUnit, WarpUnitFetcher
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage import STATUS_NAMES, write_unit_chunks, write_warp_chunks
from ps1dask.storage.location import StoreLocation


@dataclass(frozen=True)
class StackTaskSpec:
    """Everything a task needs besides its unit (small and picklable)."""

    store: StoreLocation  # a path or URL with its storage options
    service: PS1Service  # pickles to URL, settings and throttle name/limit only
    filters: str
    types: tuple[str, ...]
    width: int
    height: int
    strategy: str
    profile: ServiceProfile
    cache_dir: str | None
    cache_bytes: int | None
    #: The strategies ``strategy`` may use, resolved from the client's registry: they
    #: travel with the task, so a strategy registered only in the client works on workers.
    strategies: Mapping[str, FetchStrategy] = field(default_factory=dict)
    #: The event a unit waits on before writing while the store is created (None: it exists).
    store_ready: str | None = None


@dataclass
class UnitReport:
    """A unit's outcome, sent back to the client for progress and the summary."""

    index: int
    n_positions: int
    statuses: dict[str, int]
    requests: dict[str, Any]
    strategies: dict[str, int]
    seconds: float
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False


def fetch_context(spec: Any) -> tuple[PS1Service, LocalFileCache | None, dict[str, Any]]:
    """A per-task service (own counters), the file cache if a strategy may need it, and the
    fetcher arguments every kind of unit shares.

    Called on the task's own thread: the service's throttle is pinned there to this
    worker's scheduler, because the fetch engine's threads have no distributed context of
    their own (and must stop, not fall back to a local limit, if the scheduler is lost).
    """
    service = spec.service.with_stats().bound()
    strategies = spec.strategies or strategies_for(spec.strategy)
    needs_cache = any(s.needs_file_cache for s in strategies.values())
    cache = LocalFileCache(spec.cache_dir, spec.cache_bytes) if needs_cache else None
    common = {
        "filters": spec.filters,
        "types": spec.types,
        "width": spec.width,
        "height": spec.height,
        "strategy": spec.strategy,
        "service": service,
        "cache": cache,
        "profile": spec.profile,
        "strategies": strategies,
    }
    return service, cache, common


def _report(unit: WorkUnit, service: PS1Service, result: Any, status: np.ndarray) -> UnitReport:
    codes, counts = np.unique(status, return_counts=True)
    return UnitReport(
        index=unit.index,
        n_positions=unit.n_positions,
        statuses={STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)},
        requests=service.stats.snapshot(),
        strategies=result.strategies,
        seconds=result.seconds,
        errors=result.errors[:5],
        unavailable=result.unavailable,
    )


def run_stack_unit(unit: WorkUnit, spec: StackTaskSpec) -> UnitReport:
    """Fetch, linearise and cut every cutout of ``unit``, then write its chunks."""
    service, _, common = fetch_context(spec)
    result = StackUnitFetcher(unit, **common).run()
    wait_for_store(spec.store_ready)
    write_unit_chunks(spec.store, unit.start, unit.stop, result.images, result.status, result.meta)
    return _report(unit, service, result, result.status)


@dataclass(frozen=True)
class WarpTaskSpec:
    """Everything a warp task needs besides its unit (small and picklable)."""

    store: StoreLocation
    service: PS1Service
    filters: str
    types: tuple[str, ...]
    n_epochs_max: int
    width: int
    height: int
    strategy: str
    profile: ServiceProfile
    cache_dir: str | None
    cache_bytes: int | None
    #: The strategies ``strategy`` may use, resolved from the client's registry: they
    #: travel with the task, so a strategy registered only in the client works on workers.
    strategies: Mapping[str, FetchStrategy] = field(default_factory=dict)
    #: The event a unit waits on before writing while the store is created (None: it exists).
    store_ready: str | None = None


def run_warp_unit(work: WarpUnit, spec: WarpTaskSpec) -> UnitReport:
    """Fetch every warp cutout of a unit (all filters and epochs), then write its chunks."""
    service, _, common = fetch_context(spec)
    result = WarpUnitFetcher(work, n_epochs_max=spec.n_epochs_max, **common).run()
    unit = work.unit
    wait_for_store(spec.store_ready)
    write_warp_chunks(spec.store, unit.start, unit.stop, result.images, result.meta, result.status)
    # status 0 also pads the epoch axis: count only real outcomes
    return _report(unit, service, result, result.status[result.status > 0])
