"""Light curves and warp coadds from a store: throughput, and memory as epochs grow.

Both run on synthetic warp stores (:mod:`ps1dask.lightcurves.synthetic`) written to a
temporary directory with the warp job's own chunking (``warp_epoch_chunk``), so they need
no network and no emulator.
"""

from __future__ import annotations

import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ps1dask.bench.registry import BenchResult, register

_T = TypeVar("_T")


def _store(
    root: Path,
    name: str,
    *,
    n: int,
    filters: str,
    epochs: int,
    size: int,
    chunk: int,
    seed: int = 0,
) -> Path:
    from ps1dask.lightcurves.synthetic import make_synthetic_store
    from ps1dask.storage.layout import warp_epoch_chunk

    path = root / name
    make_synthetic_store(
        path,
        n_positions=n,
        filters=filters,
        n_epochs=epochs,
        size=size,
        chunk=chunk,
        epoch_chunk=warp_epoch_chunk(chunk, epochs, size, size),
        seed=seed,
        padding=False,
    )
    return path


@register("lightcurves")
def bench_lightcurves(
    n: int = 128, epochs: int = 30, filters: str = "gr", size: int = 64, repeat: int = 2
) -> BenchResult:
    import dask

    from ps1dask.lightcurves import lightcurves
    from ps1dask.storage.layout import position_chunk_size

    result = BenchResult("lightcurves")
    chunk = position_chunk_size(len(filters), size, size)
    with tempfile.TemporaryDirectory(prefix="ps1dask-bench-") as tmp:
        t0 = time.perf_counter()
        path = _store(
            Path(tmp),
            "lc.zarr",
            n=n,
            filters=filters,
            epochs=epochs,
            size=size,
            chunk=min(chunk, max(n // 4, 1)),
        )
        build = time.perf_counter() - t0
        curves = n * len(filters)
        figures = {}
        for scheduler in ("sync", "threads"):
            best = float("inf")
            rows = 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                with dask.config.set(scheduler=scheduler):
                    rows = len(lightcurves(path).compute())
                best = min(best, time.perf_counter() - t0)
            figures[scheduler] = (best, rows)
        t_sync, rows = figures["sync"]
        t_thr, _ = figures["threads"]
        result.figures.update(
            positions=n,
            filters=filters,
            epochs=epochs,
            size=size,
            rows=rows,
            seconds_one_thread=t_sync,
            seconds_threads=t_thr,
            curves_per_second_one_thread=curves / t_sync,
            curves_per_second=curves / t_thr,
            epochs_per_second=rows / t_thr,
            store_build_seconds=build,
        )
        result.say(
            f"lightcurves: {curves} light curves ({n} positions x {len(filters)} filters, "
            f"{epochs} epochs, {size}x{size} cutouts, {rows:,} rows)"
        )
        result.say(
            f"  one thread : {t_sync:.2f} s = {curves / t_sync:,.0f} light curves/s, "
            f"{rows / t_sync:,.0f} epochs/s"
        )
        result.say(
            f"  threads    : {t_thr:.2f} s = {curves / t_thr:,.0f} light curves/s, "
            f"{rows / t_thr:,.0f} epochs/s (best of {repeat})"
        )
    return result


def _peak(func: Callable[..., _T], *args: Any, **kwargs: Any) -> tuple[float, _T]:
    """Peak traced memory of one call, MB, and what it returned."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        out = func(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6, out


@register("lightcurve-memory")
def bench_lightcurve_memory(
    n: int = 16, size: int = 64, epochs: tuple[int, ...] = (10, 30, 100)
) -> BenchResult:
    from ps1dask.coadd import coadd_warps
    from ps1dask.coadd.store import CoaddSpec, coadd_chunk
    from ps1dask.conventions import DEFAULT_BAD_BITS
    from ps1dask.lightcurves.store import _partition_args, read_partition
    from ps1dask.storage.layout import warp_epoch_chunk
    from ps1dask.storage.location import StoreLocation

    result = BenchResult("lightcurve-memory")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ps1dask-bench-") as tmp:
        for e in epochs:
            path = _store(Path(tmp), f"mem{e}.zarr", n=n, filters="r", epochs=e, size=size, chunk=n)
            ((bounds, spec),) = _partition_args(path)[:1]
            read_partition(bounds, spec)  # warm imports and caches outside the measurement
            t0 = time.perf_counter()
            lc_mb, frame = _peak(read_partition, bounds, spec)
            lc_s = time.perf_counter() - t0
            coadd_warps(path)  # creates the arrays (and warms up)
            cspec = CoaddSpec(
                path=StoreLocation.of(path),
                bins=None,
                n_bins=1,
                clip_sigma=3.0,
                clip_fraction=None,
                bad_bits=int(DEFAULT_BAD_BITS),
                weighting="image",
                memory_bytes=64 << 20,
                has_variance=True,
                has_mask=True,
                has_psf=True,
                use_stack_zeropoint=True,
            )
            co_mb, _ = _peak(coadd_chunk, (0, n), cspec)
            image_mb = n * e * size * size * 4 / 1e6
            chunk_mb = n * warp_epoch_chunk(n, e, size, size) * size * size * 4 / 1e6
            rows.append((e, lc_mb, co_mb, image_mb, chunk_mb, len(frame), lc_s))
            result.figures[f"epochs_{e}"] = {
                "lightcurve_partition_peak_mb": lc_mb,
                "coadd_task_peak_mb": co_mb,
                "warp_flux_of_partition_mb": image_mb,
                "warp_flux_chunk_mb": chunk_mb,
                "rows": len(frame),
            }
        result.say(
            f"lightcurve-memory: one partition of {n} positions, 1 filter, {size}x{size} "
            "cutouts with flux, variance and mask (tracemalloc peaks)"
        )
        result.say(
            "  epochs | light curves peak | coadd task peak | warp_flux of the partition | one warp_flux chunk"
        )
        for e, lc_mb, co_mb, image_mb, chunk_mb, _, _ in rows:
            result.say(
                f"  {e:6d} | {lc_mb:14.1f} MB | {co_mb:12.1f} MB | {image_mb:22.1f} MB | {chunk_mb:10.1f} MB"
            )
        first, last = rows[0], rows[-1]
        result.figures["lightcurve_peak_growth"] = last[1] / first[1]
        result.figures["epoch_growth"] = last[0] / first[0]
        result.say(
            f"  light-curve memory grows {last[1] / first[1]:.1f}x for {last[0] / first[0]:.0f}x the "
            "epochs: it reads one chunk-aligned block of epochs at a time, and only the stamp "
            "around each position"
        )
    return result
