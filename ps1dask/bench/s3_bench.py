"""S3 benchmarks: the ``s3`` strategy against the emulator's S3 mode (0.03 s to first byte),
with the tutorial recipe measured in the same run.

The recipe is how the MAST/HEASARC tutorials cut PS1 images on S3: astropy's
``fits.open("s3://...", use_fsspec=True, fsspec_kwargs=...)`` and ``Cutout2D`` of
``hdu.section``, one cutout at a time. Job rates are wall time of ``ps1dask.cutouts``
(planning, fetching and store writes; the cluster's start excluded). The emulator renders
its whole files before the clock starts, as S3 has them at rest; it renders a skycell in
10-15 s on a 2-core box, so the sparse positions fall in a pool of skycells (``cells``)
rather than in 500 different ones: each process then reads a file's tile index once, where
truly scattered positions would pay that request (one more per cutout) every time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ps1dask import config as _config  # noqa: F401  (the ps1dask.* defaults, before any set)
from ps1dask.bench.jobs_bench import _local_client
from ps1dask.bench.process_cpu import (
    JobAccount,
    core_scaling,
    job_account,
    pin_workers_to_cores,
    scaling_bound,
)
from ps1dask.bench.registry import BenchResult, register

LATENCY = 0.03
SPARSE_TARGET = 10.0  # x the recipe
DENSE_TARGET = 300.0  # cutouts/s
SCALING_TARGET = 1.7  # 2 workers vs 1
#: Threads of a worker that has one core (the scaling runs): one decodes while another
#: waits on S3's first byte (0.03 s). The package default (4 a worker) is for the service's
#: 0.2 s; on one core, 4 threads used 5-10% more CPU-s than 2 in the two-worker run.
THREADS_PER_CORE = 2


def _recipe(endpoint: str, table: pd.DataFrame, band: str, size: int, n: int) -> float:
    """Cutouts per second of the tutorial recipe, one after the other, on ``n`` positions."""
    import warnings

    from astropy.coordinates import SkyCoord
    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId, locate
    from ps1dask.wire import S3_URL

    rows = table.iloc[:n]
    cells = locate(rows.ra, rows.dec).skycell.to_numpy()
    options = {"anon": True, "client_kwargs": {"endpoint_url": endpoint}}
    t0 = time.perf_counter()
    for ra, dec, cell in zip(rows.ra, rows.dec, cells):
        uri = S3_URL + image_filename(SkycellId.parse(str(cell)), band)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's FITSFixedWarning on PS1 headers
            with fits.open(uri, use_fsspec=True, fsspec_kwargs=options) as hdul:
                hdu = hdul[1]
                cut = Cutout2D(
                    hdu.section, SkyCoord(ra, dec, unit="deg"), size, wcs=WCS(hdu.header)
                )
                np.asarray(cut.data)
    return len(rows) / (time.perf_counter() - t0)


def _s3_job(
    emu: Any, table: pd.DataFrame, store: Path, workers: int, pin: bool = False, **kwargs: Any
) -> tuple[Any, float, dict[str, Any], JobAccount]:
    """One ``s3`` job on a fresh cluster of ``workers`` processes
    (``ps1dask.cluster.threads-per-worker`` threads each; with ``pin``, each on a core of
    its own, with :data:`THREADS_PER_CORE` threads): summary, wall seconds, the emulator's
    metrics and where the CPU went."""
    import dask.config

    import ps1dask

    threads = {"ps1dask.cluster.threads-per-worker": THREADS_PER_CORE} if pin else {}
    with dask.config.set(threads), _local_client(workers) as client:
        if pin and pin_workers_to_cores(client) is None:
            raise RuntimeError(f"cannot give {workers} worker(s) a CPU each on this machine")
        emu.reset_metrics()
        with job_account(client, emu.proc.pid) as account:
            t0 = time.perf_counter()
            summary = ps1dask.cutouts(
                table,
                store,
                strategy="s3",
                service=emu.url,
                s3_endpoint=emu.url,
                client=client,
                progress=False,
                quiet=True,
                **kwargs,
            )
            wall = time.perf_counter() - t0
        return summary, wall, emu.metrics(), account


def _render(emu: Any, table: pd.DataFrame, bands: str) -> tuple[int, float]:
    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId, locate

    cells = locate(table.ra, table.dec).skycell.unique()
    t0 = time.perf_counter()
    emu.configure(latency=0.0)
    emu.render_files([image_filename(SkycellId.parse(c), b) for c in cells for b in bands])
    emu.configure(latency=LATENCY)
    return len(cells), time.perf_counter() - t0


def _say_job(result: BenchResult, what: str, summary: Any, wall: float, m: dict[str, Any]) -> float:
    ok = summary.statuses.get("ok", 0)
    rate = ok / wall
    s3 = m.get("s3", {})
    result.say(
        f"  {what}: {ok} cutouts in {wall:.1f} s = {rate:.0f}/s; S3 {s3.get('requests', 0)} "
        f"requests, {s3.get('bytes_sent', 0) / 1e6:.0f} MB, max in flight "
        f"{s3.get('max_in_flight', 0)}; service {m['requests_total']} requests, max in flight "
        f"{m['max_in_flight']} (limit 10); statuses {summary.statuses}"
    )
    return rate


def _cache(cache_dir: str | None, tmp: str) -> Path:
    return Path(cache_dir) if cache_dir else Path(tmp) / "emu"


@register("s3-sparse")
def bench_s3_sparse(
    n: int = 500, cells: int = 25, workers: int = 2, seed: int = 5, cache_dir: str | None = None
) -> BenchResult:
    from ps1dask.bench.remote_emulator import emulator_process
    from ps1dask.tessellation import locate, skycell_center

    result = BenchResult("s3-sparse")
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0.0, 360.0, 4 * cells)
    dec = np.degrees(
        np.arcsin(rng.uniform(np.sin(np.radians(-25.0)), np.sin(np.radians(80.0)), 4 * cells))
    )
    pool = list(dict.fromkeys(locate(ra, dec).skycell.tolist()))[:cells]
    picked: list[tuple[float, float]] = []
    while len(picked) < n:
        cell = pool[int(rng.integers(len(pool)))]
        ra0, dec0 = skycell_center(cell.removeprefix("skycell."))
        r, d = ra0 + rng.uniform(-0.15, 0.15), dec0 + rng.uniform(-0.15, 0.15)
        if locate([r], [d]).skycell.iloc[0] == cell:
            picked.append((r % 360.0, d))
    table = pd.DataFrame(picked, columns=["ra", "dec"])
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(_cache(cache_dir, tmp), seed=seed, latency=LATENCY) as emu,
    ):
        n_cells, render = _render(emu, table, "r")
        result.say(
            f"s3-sparse: {n} random positions in {n_cells} skycells, r, 240 px, first-byte "
            f"latency {LATENCY} s; emulator files rendered in {render:.0f} s (not timed)"
        )
        summary, wall, m, account = _s3_job(
            emu, table, Path(tmp) / "s3.zarr", workers, filters="r", size=240
        )
        rate = _say_job(result, f"s3 strategy, {workers} workers", summary, wall, m)
        result.say(f"    {account.describe()}")
        emu.reset_metrics()
        recipe = _recipe(emu.url, table.sample(frac=1.0, random_state=seed), "r", 240, 20)
        result.say(
            f"  tutorial recipe (fits.open use_fsspec + Cutout2D(hdu.section)), 20 cutouts: {recipe:.2f}/s"
        )
        result.say(
            f"  s3 / recipe = {rate / recipe:.1f}x (target >= {SPARSE_TARGET:.0f}x: "
            f"{'met' if rate / recipe >= SPARSE_TARGET else 'NOT met'})"
        )
    result.figures.update(rate=rate, recipe_rate=recipe, ratio=rate / recipe, seconds=wall)
    result.target("s3 / recipe", rate / recipe, ">=", SPARSE_TARGET)
    return result


@register("s3-dense")
def bench_s3_dense(
    n: int = 2000,
    filters: str = "grizy",
    seed: int = 2,
    cache_dir: str | None = None,
    unit_positions: int = 64,
) -> BenchResult:
    from ps1dask.bench.remote_emulator import emulator_process

    result = BenchResult("s3-dense")
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"ra": rng.uniform(180.0, 181.0, n), "dec": rng.uniform(10.0, 11.0, n)})
    # The scaling target compares worker processes at equal means: each worker has a core
    # of its own (and THREADS_PER_CORE threads), as one-CPU pods or batch jobs do. A single
    # worker free to use every core of this 2-core machine already keeps about 1.7 of them
    # busy (decoding releases the GIL), so against it a second worker on the same two cores
    # could gain at most ~1.15x: that run is printed too, as the machine's ceiling.
    runs = {
        "1 worker on 1 core, 2 threads": (1, True),
        "2 workers on 1 core each, 2 threads each": (2, True),
        "1 worker free on all cores, default threads": (1, False),
    }
    rates: dict[str, float] = {}
    accounts: dict[str, JobAccount] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        emulator_process(_cache(cache_dir, tmp), seed=seed, latency=LATENCY) as emu,
    ):
        n_cells, render = _render(emu, table, filters)
        result.say(
            f"s3-dense: {n} positions in 1 deg^2 ({n_cells} skycells), {filters}, 120 px, "
            f"first-byte latency {LATENCY} s, {unit_positions} positions per task; emulator "
            f"files rendered in {render:.0f} s (not timed)"
        )
        for k, (what, (workers, pin)) in enumerate(runs.items()):
            summary, wall, m, accounts[what] = _s3_job(
                emu,
                table,
                Path(tmp) / f"s3-{k}.zarr",
                workers,
                pin=pin,
                filters=filters,
                size=120,
                max_unit_positions=unit_positions,
            )
            rates[what] = _say_job(result, f"s3 strategy, {what}", summary, wall, m)
            result.say(f"    {accounts[what].describe()}")
        emu.reset_metrics()
        recipe = _recipe(emu.url, table, filters[0], 120, 20)
    # after the jobs: its process pool is gone before any cluster starts
    cores = core_scaling()
    one, two, free = (rates[w] for w in runs)
    result.say(
        f"  this machine: 2 processes of pure tile decoding do {cores:.2f}x one (the ceiling "
        "of any 2-process scaling here, before Python, Dask and I/O take their share)"
    )
    result.say(
        f"  tutorial recipe, 20 cutouts: {recipe:.2f}/s -> s3 with 2 workers is {two / recipe:.0f}x"
    )
    result.say(
        f"  2 workers: {two:.0f} cutouts/s (target >= {DENSE_TARGET:.0f}: "
        f"{'met' if two >= DENSE_TARGET else 'NOT met'}); 2 workers / 1 worker, a core "
        f"each = {two / one:.2f}x (target >= {SCALING_TARGET}: "
        f"{'met' if two / one >= SCALING_TARGET else 'NOT met'})"
    )
    result.target("cutouts/s with 2 workers", two, ">=", DENSE_TARGET)
    result.target("2 workers / 1 worker", two / one, ">=", SCALING_TARGET)
    a_one, a_two, a_free = (accounts[w] for w in runs)
    result.say(
        f"  the same 2 cores, 1 worker free on both: {free:.0f}/s, {a_free.busy_cores:.2f} "
        f"cores busy; 2 workers do {two / free:.2f}x that (at most "
        f"{scaling_bound(a_free, a_two):.2f}x by the CPU-s both runs used: no more cores)"
    )
    result.figures.update(
        rates=rates,
        recipe_rate=recipe,
        scaling=two / one,
        cpu_seconds={w: a.total for w, a in accounts.items()},
        scaling_bound=scaling_bound(a_one, a_two),
        core_scaling=cores,
    )
    return result
