"""The cost model behind ``strategy="auto"`` (pure arithmetic, no I/O).

Two resources bound a job: the service's request slots (10 at most, cluster-wide) and the
cluster's CPU (decompressing and linearising whole-file rows). For one group of cutouts
(one skycell, one filter, one image type) each strategy's cost is estimated as the wall time
it adds when the job keeps every slot and core busy::

    cost = slot_seconds / concurrency + cpu_seconds / cores

where the CPU counts decoding and receiving the answer bytes.

Each strategy states its own cost in its ``cost(work, profile)`` method (see
:mod:`ps1dask.fetch.strategies`), built from the terms below; the built-in ones:

- ``cutout``: one request per cutout (latency + a small FITS body); no decoding.
- ``skycell``: one whole-file download (free when already in the local cache), then
  decoding of only the rows the cutouts touch.
- ``range``: one request per merged run of rows, then the same decoding as ``skycell``;
  plus the request for the file's headers and tile index when this process has not read
  that file's index yet (each process keeps the indexes it read: the index is sent once per
  file per worker process, not once per group).
- ``s3``: the requests of ``range``, sent to the public S3 copy at its own concurrency and
  latency (:func:`s3_read_seconds`), then the same decoding.

:func:`choose_strategy` takes the cheapest of the registered strategies that take part in
``auto``; :func:`cheapest` does the same among strategies given explicitly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ps1dask.fetch.strategies.base import FetchStrategy

#: Requests the range strategy spends before any pixel of a file whose index this process
#: has not read: one 64 kB read holds the headers and the 6243-row tile index of a PS1 file
#: (a file with larger headers takes one more).
RANGE_INDEX_REQUESTS = 1
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


@dataclass(frozen=True)
class GroupWork:
    """One group of cutouts as the cost model sees it: ``n_cutouts`` boxes of ``width`` x
    ``height`` pixels in one image, touching the merged row ``runs`` ([start, stop) rows),
    with the whole file already in the local cache or not, and the file's tile index
    already read by this process (``indexed``: no index request is sent for it) or not."""

    n_cutouts: int
    width: int
    height: int
    runs: list[tuple[int, int]]
    cached: bool = False
    indexed: bool = False

    @property
    def index_requests(self) -> int:
        """Requests a byte-range strategy sends for the file's index: 0 when held already."""
        return 0 if self.indexed else RANGE_INDEX_REQUESTS

    @property
    def rows_needed(self) -> int:
        """Image rows the cutouts touch (merged)."""
        return sum(b - a for a, b in self.runs)


# -- cost terms (seconds) the strategies combine --------------------------------------------


def decode_seconds(work: GroupWork, p: ServiceProfile) -> float:
    """CPU time to decode (decompress, cut, linearise) the rows the cutouts touch."""
    return work.rows_needed * p.image_cols / p.decode_pixels_per_s / max(p.cores, 1)


def receive_seconds(n_bytes: float, p: ServiceProfile) -> float:
    """CPU time to receive ``n_bytes`` of answers (and write them to the file cache)."""
    return n_bytes / p.receive_bytes_per_s / max(p.cores, 1)


def cutout_answer_bytes(work: GroupWork) -> int:
    """Bytes of one server cutout answer: float32 pixels and a FITS header."""
    return work.width * work.height * 4 + CUTOUT_HEADER_BYTES


def row_bytes(p: ServiceProfile) -> float:
    """Compressed bytes of one image row of a whole file."""
    return p.file_bytes / max(p.image_rows, 1)


def s3_read_seconds(
    n_requests: float, n_bytes: float, latency_s: float, bandwidth_bps: float, concurrency: int
) -> float:
    """Wall time of S3 reads at their own concurrency (not the service's slots): each
    request waits ``latency_s`` for its first byte, then its bytes come at ``bandwidth_bps``."""
    return (n_requests * latency_s + n_bytes / max(bandwidth_bps, 1.0)) / max(concurrency, 1)


def cheapest(candidates: Iterable[FetchStrategy], work: GroupWork, profile: ServiceProfile) -> str:
    """The name of the cheapest strategy for one group; ties go to the lowest
    ``preference`` (the fewest requests)."""
    costs = {s.name: (round(s.cost(work, profile), 9), s.preference) for s in candidates}
    if not costs:
        raise ValueError("no fetch strategy to choose from")
    return min(costs, key=costs.__getitem__)


def _auto_candidates() -> tuple[FetchStrategy, ...]:
    # Imported late: the strategies import this module's terms.
    from ps1dask.fetch.strategies import auto_candidates

    return auto_candidates()


def strategy_costs(
    n_cutouts: int,
    width: int,
    height: int,
    runs: list[tuple[int, int]],
    profile: ServiceProfile,
    *,
    cached: bool = False,
    indexed: bool = False,
) -> dict[str, float]:
    """Estimated wall seconds each registered ``auto`` strategy adds for one group."""
    work = GroupWork(n_cutouts, width, height, runs, cached, indexed)
    return {s.name: s.cost(work, profile) for s in _auto_candidates()}


def choose_strategy(
    n_cutouts: int,
    width: int,
    height: int,
    runs: list[tuple[int, int]],
    profile: ServiceProfile,
    *,
    cached: bool = False,
    indexed: bool = False,
) -> str:
    """The cheapest registered ``auto`` strategy for one group; ties go to the fewest
    requests."""
    work = GroupWork(n_cutouts, width, height, runs, cached, indexed)
    return cheapest(_auto_candidates(), work, profile)
