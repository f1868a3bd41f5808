"""Physical bounds the job benchmarks compare against, measured in the same run.

A benchmark's figure means little alone: what matters is how close the job comes to what
the hardware and the service allow. Two bounds:

- the **10-slot bound** of jobs that wait on the service (``sparse``, ``warps``): every
  request the job sent (listings included), ``latency`` seconds each, 10 at a time;
- the **decode bound** of dense jobs: fetching and decoding every row tile the job needs
  exactly once, on all cores, with no Dask and no store, plus writing the cutouts' bytes to
  a local Zarr store.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: The service's limit of simultaneous requests per address.
SERVICE_SLOTS = 10


def slot_bound_seconds(n_requests: int, latency_s: float) -> float:
    """Seconds ``n_requests`` take at ``latency_s`` each with 10 in flight at all times."""
    return n_requests * latency_s / SERVICE_SLOTS


@dataclass(frozen=True)
class DecodeBound:
    """The dense bound's parts (seconds) and what they covered."""

    fetch_decode_s: float
    write_s: float
    n_files: int
    rows_decoded: int
    n_cutouts: int

    @property
    def seconds(self) -> float:
        return self.fetch_decode_s + self.write_s


def _rows_of_file(args: tuple[str, str, list[int], int, int]) -> int:
    """Fetch and decode, once, the row tiles of one file that boxes starting at ``y0s`` touch;
    cut and linearise each box (as a job does). Returns the number of rows decoded."""
    import requests

    from ps1dask.conventions import CutoutBox, cut, linear_pixels
    from ps1dask.fetch.tiles import CompressedImageIndex
    from ps1dask.planning.cost import row_runs

    url, filename, y0s, width, height = args
    global _SESSION
    if _SESSION is None:
        _SESSION = requests.Session()
    session = _SESSION

    def read(a: int, b: int) -> bytes:
        answer = session.get(
            f"{url}{filename}", headers={"Range": f"bytes={a}-{b - 1}"}, timeout=60
        )
        answer.raise_for_status()
        return answer.content

    index = CompressedImageIndex.read(read)
    rows = 0
    for a, b in row_runs(y0s, height, index.naxis2, max_gap=height):
        raw = index.read_rows(read, slice(a, b))
        rows += b - a

        def rows_reader(r: slice, c: slice, raw: np.ndarray = raw, a: int = a) -> np.ndarray:
            return linear_pixels(raw[r.start - a : r.stop - a, c], index.header)

        for y0 in y0s:
            if a <= y0 and y0 + height <= b:
                cut(CutoutBox(0, y0, width, height), index.naxis1, index.naxis2, rows_reader)
    return rows


_SESSION: Any = None  # one keep-alive session per pool process
_NOISE: Any = None  # the pixels the write bound writes, made before the timing


def _warm_up(chunk: int, height: int, width: int) -> None:
    """Import what the timed work uses and make its pixels, outside the timing."""
    global _NOISE
    import requests  # noqa: F401
    import zarr  # noqa: F401

    import ps1dask.fetch.tiles  # noqa: F401

    # noise, about as compressible as sky pixels (Blosc gains little on either)
    rng = np.random.default_rng(0)
    _NOISE = rng.normal(0.0, 1.0, (chunk, 1, height, width)).astype(np.float32)
    time.sleep(0.5)  # so that every pool process takes one of these calls


def _write_share(args: tuple[str, int, int, int, int, int]) -> None:
    import zarr

    path, start, stop, chunk, height, width = args
    array = zarr.open_array(path, mode="r+")
    for a in range(start, stop, chunk):
        b = min(a + chunk, stop)
        array[a:b] = _NOISE[: b - a, :, :height, :width]


def decode_bound(
    service_url: str,
    files: dict[str, list[int]],
    *,
    width: int,
    height: int,
    chunk: int,
    processes: int | None = None,
) -> DecodeBound:
    """Measure the dense bound for the boxes ``files`` (service path -> box row origins).

    ``processes`` defaults to the machine's cores. The files must already be on the
    service's side (rendered), as for the job it bounds.
    """
    import zarr

    from ps1dask.storage.layout import pixel_compressor

    processes = processes or os.cpu_count() or 1
    n_cutouts = sum(len(v) for v in files.values())
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_warm_up, [chunk] * processes, [height] * processes, [width] * processes))
        t0 = time.perf_counter()
        jobs = [(service_url, name, sorted(y0s), width, height) for name, y0s in files.items()]
        # largest first, so that no process is left with a big file at the end
        jobs.sort(key=lambda job: -len(job[2]))
        rows = sum(pool.map(_rows_of_file, jobs))
        fetch_decode = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "bound.zarr")
            zarr.create_array(
                path,
                shape=(n_cutouts, 1, height, width),
                chunks=(chunk, 1, height, width),
                dtype="float32",
                compressors=[pixel_compressor()],
            )
            step = -(-n_cutouts // processes)
            shares = [
                (path, a, min(a + step, n_cutouts), chunk, height, width)
                for a in range(0, n_cutouts, step)
            ]
            t0 = time.perf_counter()
            list(pool.map(_write_share, shares))
            write = time.perf_counter() - t0
    return DecodeBound(fetch_decode, write, len(files), rows, n_cutouts)


def files_of_plan(units: list[Any], bands: str) -> dict[str, list[int]]:
    """Service path -> row origins of the boxes a stack plan's work units cut from it."""
    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId

    files: dict[str, list[int]] = defaultdict(list)
    for unit in units:
        for k in np.flatnonzero(unit.fetch).tolist():
            cell = SkycellId(int(unit.projcell[k]), int(unit.subcell[k]))
            for band in bands:
                files[image_filename(cell, band)].append(int(unit.y0[k]))
    return dict(files)
