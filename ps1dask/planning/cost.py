"""The cost model behind ``strategy="auto"`` (pure arithmetic, no I/O).

Two resources bound a job: the service's request slots (10 at most, cluster-wide) and the
cluster's CPU (decompressing and linearising whole-file rows). For one group of cutouts
(one skycell, one filter, one image type) each strategy's cost is estimated as the wall time
it adds when the job keeps every slot and core busy::

    cost = slot_seconds / concurrency + cpu_seconds / cores

where the CPU counts decoding and receiving the answer bytes.

- ``cutout``: one request per cutout (latency + a small FITS body); no decoding.
- ``skycell``: one whole-file download (free when already in the local cache), then
  decoding of only the rows the cutouts touch.
- ``range``: two requests for the header and the tile index, one per merged run of rows,
  then the same decoding as ``skycell``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

STRATEGIES = ("cutout", "skycell", "range")
#: Requests the range strategy spends before any pixel: header blocks and the tile index.
RANGE_INDEX_REQUESTS = 2
#: Bytes of a fitscut FITS header (a few 2880-byte blocks).
CUTOUT_HEADER_BYTES = 3 * 2880


@dataclass(frozen=True)
class ServiceProfile:
    """What the cost model knows of the service and the cluster.

    Attributes
    ----------
    latency_s : seconds from sending a file (Range or whole) request to its first byte.
    cutout_latency_s : the same for a ``fitscut.cgi`` cutout, server-side cutting included
        (None: as ``latency_s``).
    bandwidth_bps : bytes per second of one answer.
    concurrency : request slots shared by the cluster (10 for STScI).
    cores : threads decoding in parallel (sum over workers).
    file_bytes : size of one whole compressed skycell file (bytes).
    image_rows, image_cols : pixels of a skycell image.
    decode_pixels_per_s : whole-file pixels decoded (decompressed, cut and linearised) per
        second per core; ~1e8 measured for RICE int16 stacks on a 2-core CI box (the direct
        RICE path of :mod:`ps1dask.fetch.tiles`).
    receive_bytes_per_s : answer bytes a core receives (and writes to the file cache) per
        second; matters when the network is fast (a whole file over a LAN or loopback costs
        more CPU than the cutouts it replaces).
    """

    latency_s: float = 0.3
    cutout_latency_s: float | None = None
    bandwidth_bps: float = 20e6
    concurrency: int = 10
    cores: int = 2
    file_bytes: float = 60e6
    image_rows: int = 6250
    image_cols: int = 6250
    decode_pixels_per_s: float = 100e6
    receive_bytes_per_s: float = 400e6


def row_runs(
    y0: npt.ArrayLike, height: int, n_rows: int, max_gap: int = 64
) -> list[tuple[int, int]]:
    """Merged [start, stop) runs of image rows that boxes starting at ``y0`` touch."""
    first = np.sort(np.asarray(y0, dtype=np.int64))
    starts = np.clip(first, 0, n_rows)
    stops = np.clip(first + height, 0, n_rows)
    runs: list[tuple[int, int]] = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if a >= b:
            continue
        if runs and a <= runs[-1][1] + max_gap:
            runs[-1] = (runs[-1][0], max(runs[-1][1], b))
        else:
            runs.append((a, b))
    return runs


def strategy_costs(
    n_cutouts: int,
    width: int,
    height: int,
    runs: list[tuple[int, int]],
    profile: ServiceProfile,
    *,
    cached: bool = False,
) -> dict[str, float]:
    """Estimated wall seconds each strategy adds for one group (see module docstring)."""
    p = profile
    rows_needed = sum(b - a for a, b in runs)
    decode = rows_needed * p.image_cols / p.decode_pixels_per_s / max(p.cores, 1)
    cutout_latency = p.latency_s if p.cutout_latency_s is None else p.cutout_latency_s
    cutout_slot = cutout_latency + (width * height * 4 + CUTOUT_HEADER_BYTES) / p.bandwidth_bps
    row_bytes = p.file_bytes / max(p.image_rows, 1)
    whole_slot = 0.0 if cached else p.latency_s + p.file_bytes / p.bandwidth_bps
    range_slot = (
        RANGE_INDEX_REQUESTS + len(runs)
    ) * p.latency_s + rows_needed * row_bytes / p.bandwidth_bps
    cores = max(p.cores, 1)
    cutout_bytes = n_cutouts * (width * height * 4 + CUTOUT_HEADER_BYTES)
    whole_bytes = 0.0 if cached else p.file_bytes
    receive = {
        "cutout": cutout_bytes / p.receive_bytes_per_s / cores,
        "skycell": whole_bytes / p.receive_bytes_per_s / cores,
        "range": rows_needed * row_bytes / p.receive_bytes_per_s / cores,
    }
    return {
        "cutout": n_cutouts * cutout_slot / p.concurrency + receive["cutout"],
        "skycell": whole_slot / p.concurrency + decode + receive["skycell"],
        "range": range_slot / p.concurrency + decode + receive["range"],
    }


def choose_strategy(
    n_cutouts: int,
    width: int,
    height: int,
    runs: list[tuple[int, int]],
    profile: ServiceProfile,
    *,
    cached: bool = False,
) -> str:
    """The cheapest strategy for one group; ties go to the fewest requests."""
    costs = strategy_costs(n_cutouts, width, height, runs, profile, cached=cached)
    preference = {"skycell": 0, "range": 1, "cutout": 2}
    return min(costs, key=lambda s: (round(costs[s], 9), preference[s]))
