"""A large mosaic across a projection-cell edge: ps1dask against ``reproject_and_coadd``.

Both sides work from the same skycell files: ps1dask's job is run once to render them in
the emulator and download them into a local cache, then timed on a rerun (``resume=False``,
same cache: no downloads); the by-hand recipe reads the same cached files (astropy,
linearised, header WCS repaired, rescaled to the output's zero point) and runs
``reproject.mosaicking.reproject_and_coadd`` (``reproject_interp``, mean) onto the same
output grid. ps1dask runs on two single-threaded worker processes (the filters are separate
tasks); its peak memory is the largest worker's resident peak (Linux VmHWM, reset before
the timed run), the by-hand side's the peak of Python's traced allocations (numpy's
included): the first counts more (interpreter, Dask), never less.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ps1dask.bench.registry import BenchResult, register

#: Default position: on the edge of projection cells 1482 and 1483 (Galactic plane side).
EDGE_POSITION = (285.1685, 6.4)


def _coadd_by_hand(cache_dir: Path, url: str, ds: Any, band: str, size: int) -> np.ndarray:
    """What an astronomer would write: every covering skycell file, reproject_and_coadd."""
    from astropy.io import fits
    from reproject import reproject_interp
    from reproject.mosaicking import reproject_and_coadd

    from ps1dask.client import PS1Service
    from ps1dask.conventions import header_wcs, header_zeropoint, image_filename, linear_pixels
    from ps1dask.fetch.cache import LocalFileCache
    from ps1dask.mosaic import mosaic_grid, mosaic_sources
    from ps1dask.tessellation import SkycellId

    ra, dec = EDGE_POSITION
    grid = mosaic_grid(ra, dec, size, size)
    cache = LocalFileCache(cache_dir, None)
    service = PS1Service(url)
    zp_out = float(ds["stack_zeropoint"].values[0, 0])
    inputs = []
    for src in mosaic_sources(grid):
        filename = image_filename(SkycellId(src.projcell, src.subcell), band, "stack")
        handle, _ = cache.open(filename, service)
        with handle:
            blob = io.BytesIO(handle.read())
        with fits.open(blob, do_not_scale_image_data=True) as hdul:
            header = hdul[1].header
            data = linear_pixels(np.asarray(hdul[1].data), header)
            scale = 10 ** (0.4 * (zp_out - header_zeropoint(header)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs.append((data * np.float32(scale), header_wcs(header)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, _ = reproject_and_coadd(
            inputs,
            grid.wcs(),
            shape_out=grid.shape,
            reproject_function=reproject_interp,
            combine_function="mean",
        )
    return np.asarray(out, dtype=np.float32)


def _other_projcell_cover(size: int) -> np.ndarray:
    """Output pixels that some skycell of another projection cell covers (bool image)."""
    from ps1dask.mosaic import mosaic_grid, mosaic_sources
    from ps1dask.mosaic._core import _resampled_depth

    grid = mosaic_grid(*EDGE_POSITION, size, size)
    r = np.arange(size, dtype=np.float64)
    cover = np.zeros((size, size), dtype=bool)
    for src in mosaic_sources(grid):
        if not src.same_grid:
            cover |= _resampled_depth(grid, src, r, r) > 0
    return cover


def _reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs), best effort."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """Peak resident memory of this process since the reset, bytes (Linux VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@contextlib.contextmanager
def _workdir(path: str | None) -> Iterator[Path]:
    """Where the emulator renders its files and the job downloads them: a temporary
    directory, or ``path``, kept (so a later run skips the renders and downloads, which
    take longer than the timed job on a loaded machine; the timed run is the same)."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="ps1dask-bench-mosaic-") as tmp:
            yield Path(tmp)
    else:
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(root / "m.zarr", ignore_errors=True)
        yield root


def _cluster_and_emulator(root: Path) -> Any:
    """The emulator (files rendered into ``root``) and two single-threaded worker processes."""
    import distributed

    from ps1dask.emulator import Emulator

    stack = contextlib.ExitStack()
    emu = stack.enter_context(Emulator(seed=0, latency=0.0, cache_dir=root / "emulator"))
    cluster = stack.enter_context(
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    )
    client = stack.enter_context(distributed.Client(cluster))
    return stack, emu, client


def _timed_mosaic(
    result: BenchResult, root: Path, emu: Any, client: Any, n: int, filters: str
) -> tuple[float, dict[str, int]]:
    """Run the mosaic job once to render and download the files, then time a rerun from the
    local cache. Returns the seconds and the peak resident bytes of every process since the
    start of the timed run: ``worker <address>`` each, and ``client`` (the process of the
    client, the scheduler, which LocalCluster runs in-process, and the emulator's threads)."""
    import ps1dask

    ra, dec = EDGE_POSITION
    table = pd.DataFrame({"ra": [ra], "dec": [dec]})
    kwargs = {
        "filters": filters,
        "size": n,
        "strategy": "skycell",
        "service": emu.url,
        "client": client,
        "cache_dir": root / "cache",
        "progress": False,
        "quiet": True,
        "mosaic": True,
        "resume": False,
    }
    result.say(f"mosaic: {n} x {n} px ({n / 14400:.2f} deg), {filters}, at {ra}, {dec}")
    t0 = time.perf_counter()
    ps1dask.cutouts(table, root / "warm.zarr", **kwargs)
    result.say(f"  warm-up (emulator renders, downloads): {time.perf_counter() - t0:.1f} s")
    shutil.rmtree(root / "warm.zarr", ignore_errors=True)
    client.run(_reset_peak_rss)
    _reset_peak_rss()
    t0 = time.perf_counter()
    ps1dask.cutouts(table, root / "m.zarr", **kwargs)
    seconds = time.perf_counter() - t0
    peaks = {f"worker {addr}": int(v) for addr, v in client.run(_peak_rss).items()}
    peaks["client"] = _peak_rss()
    return seconds, peaks


@register("mosaic")
def bench_mosaic(n: int = 7200, filters: str = "gri", workdir: str | None = None) -> BenchResult:
    """``n``: mosaic side in pixels (7200 = 0.5 deg). ``workdir``: see :func:`_workdir`."""
    import ps1dask

    result = BenchResult("mosaic")
    with _workdir(workdir) as root:
        stack, emu, client = _cluster_and_emulator(root)
        with stack:
            ours, peaks = _timed_mosaic(result, root, emu, client, n, filters)
            ours_peak = max(v for k, v in peaks.items() if k.startswith("worker"))
            ds = ps1dask.open_store(root / "m.zarr")
            other_cover = _other_projcell_cover(n)
            theirs = 0.0
            theirs_peak = 0
            same_max, resampled_med, resampled_noise = [], [], []
            for bi, band in enumerate(filters):
                tracemalloc.start()
                t0 = time.perf_counter()
                coadd = _coadd_by_hand(root / "cache", emu.url, ds.isel(filter=[bi]), band, n)
                theirs += time.perf_counter() - t0
                theirs_peak = max(theirs_peak, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
                mine = ds.stack_flux.values[0, bi]
                source = ds.mosaic_skycell.values[0]
                own = (source // 1000 == int(ds.skycell.values[0][8:12])) & ~other_cover
                both = np.isfinite(mine) & np.isfinite(coadd)
                diff = np.abs(mine - coadd)
                # the same-projection-cell part no other projection cell covers (there the
                # coadd averages both): ps1dask copied it, the coadd interpolated at integer
                # shifts
                close = diff[both & own] <= 1e-5 * np.abs(mine[both & own]) + 1e-6
                same_max.append(float(close.mean()))
                resampled_med.append(float(np.nanmedian(np.where(both & ~own, diff, np.nan))))
                var_noise = float(np.nanmedian(np.abs(np.diff(mine[~own]))) / 0.954)
                resampled_noise.append(var_noise)
    result.figures.update(
        size=n,
        filters=filters,
        ps1dask_seconds=ours,
        ps1dask_peak_bytes=ours_peak,
        coadd_seconds=theirs,
        coadd_peak_bytes=theirs_peak,
        speedup=theirs / ours if ours else float("nan"),
        same_projcell_identical_fraction=same_max,
        resampled_median_abs_diff=resampled_med,
        resampled_noise=resampled_noise,
    )
    result.say(
        f"  ps1dask:             {ours:8.1f} s, peak {ours_peak / 2**20:8.0f} MiB "
        "(largest worker process, resident: Python, Dask and all)"
    )
    result.say(
        f"  reproject_and_coadd: {theirs:8.1f} s, peak {theirs_peak / 2**20:8.0f} MiB "
        "(numpy and Python allocations only, traced)"
    )
    result.say(f"  speed-up: {theirs / ours:.2f}x (ps1dask counted with its reads and writes)")
    for band, a, b, c in zip(filters, same_max, resampled_med, resampled_noise):
        result.say(
            f"  {band}: copied pixels identical to the coadd's: {a:.2%}; resampled median |diff| "
            f"{b:.3g} "
            f"({b / c:.2f} of the pixel noise)"
        )
    return result


#: Target of issue 14: a 1 deg^2, 5-filter mosaic in under 4 GB on the 2-core machine.
MEMORY_TARGET_BYTES = 4 * 10**9


@register("mosaic-memory")
def bench_mosaic_memory(
    n: int = 14400, filters: str = "grizy", workdir: str | None = None
) -> BenchResult:
    """``n``: mosaic side in pixels (14400 = 1 deg). The job alone (no by-hand coadd): time
    and the peak resident memory of every process. ``workdir``: see :func:`_workdir`."""
    result = BenchResult("mosaic-memory")
    with _workdir(workdir) as root:
        stack, emu, client = _cluster_and_emulator(root)
        with stack:
            seconds, peaks = _timed_mosaic(result, root, emu, client, n, filters)
    total = sum(peaks.values())
    result.figures.update(
        size=n, filters=filters, seconds=seconds, peak_bytes=peaks, total_peak_bytes=total
    )
    result.say(f"  ps1dask: {seconds:.1f} s")
    for name, peak in sorted(peaks.items()):
        result.say(f"  peak resident memory, {name}: {peak / 2**20:8.0f} MiB")
    result.say(
        f"  sum of the peaks: {total / 2**20:.0f} MiB "
        f"(target < {MEMORY_TARGET_BYTES / 2**20:.0f} MiB: "
        f"{'met' if total < MEMORY_TARGET_BYTES else 'NOT met'}; the client process holds "
        "the client, the scheduler and the emulator's threads)"
    )
    result.target(
        "sum of peak resident memory (MiB)", total / 2**20, "<", MEMORY_TARGET_BYTES / 2**20
    )
    return result
