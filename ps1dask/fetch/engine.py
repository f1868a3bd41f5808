"""The fetch engine shared by stack and warp units: cut boxes out of service images.

A unit hands the engine :class:`ImageGroup` s, one per service image (a file name) with the
positions to cut from it. The engine picks a strategy per group (or uses the one given),
runs the strategies' tasks on thread pools so a unit can keep all the cluster's request
slots busy (the client's throttle caps them), and reports each cutout or failure through
callbacks. The strategies are plug-ins (:mod:`ps1dask.fetch.strategies`): the engine knows
none of them by name, and refuses a name that is not registered.
The engine is built on the task's thread and pins its service's throttle there
(:meth:`PS1Service.bound`): the pools' threads have no distributed context of their own, and
if the scheduler is lost their requests must stop (``SchedulerLostError``, the unit is not
done) rather than go on under a process-local limit.

Every strategy ends in the same two layer-5 functions, :func:`~ps1dask.conventions.linear_pixels`
and :func:`~ps1dask.conventions.cut`, so all give identical pixels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from ps1dask.client import PS1Service
from ps1dask.exceptions import UnknownStrategyError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.group import Destination, ImageGroup, OnCutout, OnFailure
from ps1dask.fetch.strategies import (
    AUTO,
    FetchContext,
    FetchStrategy,
    FetchTask,
    auto_candidates,
    get_strategy,
    has_file_index,
    strategy_choices,
)
from ps1dask.fetch.tiles import ReadRange
from ps1dask.planning.cost import GroupWork, ServiceProfile, cheapest, row_runs

__all__ = [
    "CutoutEngine",
    "ImageGroup",
    "OnCutout",
    "OnFailure",
    "ReadRange",
    "run_strategy_tasks",
]


class CutoutEngine:
    """Fetch groups of cutouts with the chosen strategies (one instance per work unit).

    ``strategies`` are the strategies the job may use, by name (what the task set-up passed
    along from the client's registry); None: the registry of this process. ``destination``:
    where a member's pixels may be written in place (:class:`FetchContext`).
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
        on_cutout: OnCutout,
        on_failure: OnFailure,
        strategies: Mapping[str, FetchStrategy] | None = None,
        destination: Destination | None = None,
    ) -> None:
        self.width = width
        self.height = height
        # Built on the task's thread: pin the throttle to this thread's distributed context
        # now, for the pool's threads have none (a no-op if the task pinned it already).
        self.service = service.bound()
        self.cache = cache
        self.profile = profile
        self.strategies = dict(strategies) if strategies is not None else None
        self.context = FetchContext(
            width=width,
            height=height,
            service=self.service,
            cache=cache,
            profile=profile,
            on_cutout=on_cutout,
            on_failure=on_failure,
            destination=destination,
        )

    def strategy(self, name: str) -> FetchStrategy:
        """The strategy ``name``; :class:`UnknownStrategyError` if the job has none such."""
        if self.strategies is None:
            return get_strategy(name)
        if name not in self.strategies:
            raise UnknownStrategyError(
                f"unknown fetch strategy {name!r}: this job may use "
                f"{', '.join(self.strategies) or 'none'}"
            )
        return self.strategies[name]

    def _candidates(self) -> tuple[FetchStrategy, ...]:
        if self.strategies is None:
            return auto_candidates()
        return tuple(s for s in self.strategies.values() if s.in_auto)

    def choose(self, group: ImageGroup, strategy: str) -> str:
        """``strategy`` itself, or for ``auto`` the cost model's choice for this group."""
        if strategy != AUTO:
            return self.strategy(strategy).name
        candidates = self._candidates()
        if not candidates:
            raise UnknownStrategyError(
                f"no registered strategy takes part in {AUTO!r} (choose one of "
                f"{', '.join(strategy_choices()[1:])})"
            )
        runs = row_runs(group.y0, self.height, self.profile.image_rows)
        cached = self.cache is not None and self.cache.contains(group.filename, self.service.url)
        indexed = has_file_index(self.service.url, group.filename)
        work = GroupWork(len(group.members), self.width, self.height, runs, cached, indexed)
        return cheapest(candidates, work, self.profile)

    def run(self, groups: Sequence[ImageGroup]) -> dict[str, int]:
        """Fetch every group; returns cutouts per strategy used."""
        batches: list[tuple[FetchStrategy, list[FetchTask]]] = []
        used: dict[str, int] = {}
        for g in groups:
            strategy = self.strategy(g.strategy)
            used[g.strategy] = used.get(g.strategy, 0) + len(g.members)
            batches.append((strategy, strategy.tasks(g, self.context)))
        run_strategy_tasks(batches, self.profile, "ps1dask-fetch")
        return used


def run_strategy_tasks(
    batches: Sequence[tuple[FetchStrategy, Sequence[FetchTask]]],
    profile: ServiceProfile,
    thread_prefix: str,
) -> None:
    """Run strategies' tasks, one thread pool per strategy pool name (``FetchStrategy.pool``,
    sized by its ``workers``) for this call only, and return when all are done.

    The first error is raised once the pools are shut down: what has not started never
    will (e.g. ``SchedulerLostError``: the unit is not done).
    """
    pools: dict[str, tuple[int, list[FetchTask]]] = {}
    for strategy, tasks in batches:
        pools.setdefault(strategy.pool, (strategy.workers(profile), []))[1].extend(tasks)
    with contextlib.ExitStack() as stack:
        futures: list[Future[None]] = []
        started: list[ThreadPoolExecutor] = []
        for name, (workers, tasks) in pools.items():
            pool = stack.enter_context(
                ThreadPoolExecutor(
                    max_workers=max(1, min(len(tasks), workers)),
                    thread_name_prefix=f"{thread_prefix}-{name}",
                )
            )
            started.append(pool)
            futures.extend(pool.submit(task) for task in tasks)
        try:
            for future in futures:
                future.result()
        except BaseException:
            for pool in started:
                pool.shutdown(wait=True, cancel_futures=True)
            raise
