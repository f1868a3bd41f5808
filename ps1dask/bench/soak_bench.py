"""Soak: many cutouts through the whole job path, with the memory of every process sampled.

A leak that costs a few kB per cutout is invisible in a 1,000-cutout test and fatal in a
10^6-cutout job; 10^5 small cutouts at a short latency show it as a slope in the RSS.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd

from ps1dask.bench.bounds import slot_bound_seconds
from ps1dask.bench.registry import BenchResult, register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemorySample:
    """RSS (bytes) of the scheduler and of each worker at ``t`` seconds into the job."""

    t: float
    scheduler: int
    workers: tuple[int, ...]


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class MemorySampler:
    """Samples the cluster's RSS every ``interval`` seconds in a background thread."""

    def __init__(self, client: Any, interval: float = 2.0) -> None:
        self.client = client
        self.interval = interval
        self.samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="ps1dask-soak-rss", daemon=True)

    def sample(self) -> MemorySample:
        workers = self.client.run(_rss)
        s = MemorySample(
            time.perf_counter() - self._t0,
            int(self.client.run_on_scheduler(_rss)),
            tuple(int(v) for _, v in sorted(workers.items())),
        )
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except (OSError, TimeoutError) as err:  # a lost sample is not a result
                log.info("soak: RSS sample failed: %s", err)

    def __enter__(self) -> Self:
        self._t0 = time.perf_counter()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _mb(values: tuple[int, ...] | int) -> str:
    if isinstance(values, int):
        return f"{values / 1e6:.0f}"
    return "/".join(f"{v / 1e6:.0f}" for v in values)


@register("soak")
def bench_soak(
    n: int = 100_000, latency: float = 0.01, workers: int = 2, seed: int = 6, size: int = 16
) -> BenchResult:
    import ps1dask
    from ps1dask.bench.jobs_bench import _local_client
    from ps1dask.bench.remote_emulator import emulator_process

    result = BenchResult("soak")
    rng = np.random.default_rng(seed)
    # spread over a few hundred skycells: listings, many units, many store chunks
    table = pd.DataFrame(
        {"ra": rng.uniform(150.0, 160.0, n), "dec": rng.uniform(0.0, 10.0, n)},
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(Path(tmp) / "emu", seed=seed, latency=latency) as emu,
        _local_client(workers) as client,
    ):
        with MemorySampler(client) as sampler:
            t0 = time.perf_counter()
            summary = ps1dask.cutouts(
                table,
                Path(tmp) / "soak.zarr",
                filters="r",
                size=size,
                strategy="cutout",
                service=emu.url,
                client=client,
                progress=False,
                quiet=True,
            )
            wall = time.perf_counter() - t0
            assert isinstance(summary, ps1dask.JobSummary)  # compute=True (default) waits
        metrics = emu.metrics()
    samples = sampler.samples
    start, end = samples[0], samples[-1]
    middle = min(samples, key=lambda s: abs(s.t - wall / 2))
    peak_workers = max(max(s.workers) for s in samples)
    ok = summary.statuses.get("ok", 0)
    bound = slot_bound_seconds(metrics["requests_total"], latency)
    result.figures.update(
        n=n,
        seconds=wall,
        cutouts=ok,
        statuses=dict(summary.statuses),
        bound_seconds=bound,
        rss=[(s.t, s.scheduler, s.workers) for s in samples],
    )
    result.say(
        f"soak: {ok:,} of {n:,} cutouts ({size} px, r, latency {latency} s) in {wall:.0f} s "
        f"= {ok / wall:.0f}/s; statuses {dict(summary.statuses)}; max in flight "
        f"{metrics['max_in_flight']}"
    )
    result.say(
        f"  10-slot bound {metrics['requests_total']:,} requests x {latency} s / 10 = {bound:.0f} s; "
        f"job time / bound = {wall / bound:.2f} (at this latency the emulator's own CPU, one "
        "core, is the usual limit)"
    )
    for label, s in (("start", start), ("middle", middle), ("end", end)):
        result.say(
            f"  RSS at {label:6s} (t = {s.t:5.0f} s): scheduler {_mb(s.scheduler)} MB, "
            f"workers {_mb(s.workers)} MB"
        )
    growth = [e - m for e, m in zip(end.workers, middle.workers, strict=False)]
    result.say(
        f"  worker RSS from middle to end: {_mb(tuple(growth))} MB "
        f"({max(growth) / max(ok / 2, 1):.0f} B per cutout); peak {peak_workers / 1e6:.0f} MB "
        f"(target flat: no growth with cutouts done); scheduler {_mb(end.scheduler - middle.scheduler)} MB"
    )
    return result
