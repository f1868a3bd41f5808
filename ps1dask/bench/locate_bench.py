"""How fast positions are located in the tessellation (pure numpy, no network)."""

from __future__ import annotations

import time

import numpy as np

from ps1dask.bench.registry import BenchResult, register
from ps1dask.tessellation import locate


@register("locate")
def bench_locate(n: int = 1_000_000, seed: int = 0, repeat: int = 3) -> BenchResult:
    result = BenchResult("locate")
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    locate(ra[:1000], dec[:1000])  # load the grid table once
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        frame = locate(ra, dec)
        times.append(time.perf_counter() - t0)
    best = min(times)
    result.figures.update(n=n, seconds=best, per_second=n / best, skycells=frame.skycell.nunique())
    result.say(
        f"locate: {n:,} positions in {best:.3f} s (best of {repeat}) = {n / best:,.0f} positions/s; "
        f"{frame.skycell.nunique():,} distinct skycells"
    )
    return result
