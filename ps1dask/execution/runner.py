"""Running work units on a Dask cluster: submission order, progress, summary, abort."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import distributed
from tqdm.auto import tqdm

from ps1dask.client import RequestStats
from ps1dask.exceptions import PS1DaskError

logger = logging.getLogger("ps1dask.execution")


class JobAbortedError(PS1DaskError):
    """The job stopped early (e.g. the service kept refusing requests); resumable."""


@contextlib.contextmanager
def cluster_client(
    client: distributed.Client | str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 2,
    quiet: bool = False,
) -> Iterator[distributed.Client]:
    """The Dask client to run on: the one given, a scheduler address, the current default
    client, or a new LocalCluster of worker processes (closed on exit)."""
    if isinstance(client, distributed.Client):
        yield client
        return
    if isinstance(client, str):
        with distributed.Client(client) as c:
            yield c
        return
    try:
        current = distributed.get_client()
    except ValueError:
        current = None
    if current is not None:
        yield current
        return
    with distributed.LocalCluster(
        n_workers=n_workers or 2,
        threads_per_worker=threads_per_worker,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as cluster, distributed.Client(cluster) as c:
        if not quiet:
            print(f"Dask dashboard: {c.dashboard_link}", file=sys.stderr, flush=True)
        yield c


@dataclass
class RunOutcome:
    """What the units reported, aggregated by the client."""

    reports: list[Any] = field(default_factory=list)
    requests: RequestStats = field(default_factory=RequestStats)
    seconds: float = 0.0
    aborted: str | None = None


def run_units(
    dask_client: distributed.Client,
    func: Callable[..., Any],
    units: Sequence[Any],
    spec: Any,
    *,
    key_prefix: str,
    progress_total: int,
    progress_label: str = "positions",
    show_progress: bool | None = None,
    abort_after_unavailable: int = 3,
) -> RunOutcome:
    """Submit one task per unit in plan order and collect their reports as they finish.

    Aborts (cancelling what has not started) after ``abort_after_unavailable`` units in a
    row report that the service kept refusing requests; the store stays consistent because
    each unit writes its status last.
    """
    outcome = RunOutcome()
    t0 = time.perf_counter()
    spec_future = dask_client.scatter(spec, broadcast=True, hash=False)
    futures = [
        dask_client.submit(func, unit, spec_future, key=f"{key_prefix}-{unit.index}", priority=-i, pure=False)
        for i, unit in enumerate(units)
    ]
    bar = tqdm(
        total=progress_total,
        unit=progress_label[:3],
        desc="ps1dask",
        disable=(not sys.stderr.isatty()) if show_progress is None else (not show_progress),
        dynamic_ncols=True,
    )
    unavailable_streak = 0
    cutouts = 0
    try:
        with dask_client.as_current():
            completed = distributed.as_completed(futures)
        for future in completed:
            report = future.result()
            outcome.reports.append(report)
            outcome.requests.merge(report.requests)
            ok = report.statuses.get("ok", 0)
            cutouts += ok
            bar.update(report.n_positions)
            bar.set_postfix(cutouts=cutouts, requests=outcome.requests.snapshot().get("requests", 0), refresh=False)
            unavailable_streak = unavailable_streak + 1 if report.unavailable else 0
            if unavailable_streak >= abort_after_unavailable:
                outcome.aborted = (
                    f"the service kept refusing requests (HTTP 503/429) after every retry in "
                    f"{unavailable_streak} work units in a row"
                )
                for f in futures:
                    f.cancel()
                break
    finally:
        bar.close()
        outcome.seconds = time.perf_counter() - t0
    return outcome
