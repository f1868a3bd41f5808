"""What the strategies that decode row tiles themselves share (``skycell``, ``range``, and
any other source of a whole file's bytes): the file's tile index, kept per process, and the
cutting of a group's boxes from decoded rows through the one cut rule and linearisation."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ps1dask.client import PS1Service
from ps1dask.conventions import CutoutBox, cut_into, linear_pixels, scaling_keywords
from ps1dask.fetch.decoded_rows import Prepare, gather, shared_rows
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies.base import FetchContext
from ps1dask.fetch.tiles import CompressedImageIndex, ReadRange, merge_spans
from ps1dask.planning.cost import row_runs

# Tile indexes of service files, per process: another unit often needs a skycell this one
# already indexed (its header and tile table cost a request, or parsing the cached file).
# A file's index is the same whether it is read remotely or from the local cache.
_INDEX_CACHE: OrderedDict[tuple[str, str], CompressedImageIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()
_INDEX_CACHE_SIZE = 256
_INDEX_READING: dict[tuple[str, str], threading.Lock] = {}


def has_file_index(source: str, filename: str) -> bool:
    """Whether this process holds the tile index of ``filename`` from ``source`` (a URL):
    then :func:`file_index` sends no request for it."""
    with _INDEX_LOCK:
        return (source, filename) in _INDEX_CACHE


def file_index(service: PS1Service | str, filename: str, read: ReadRange) -> CompressedImageIndex:
    """The tile index of a service file, read with ``read`` unless this process has it.

    ``service`` names where the bytes come from (a service, or another source's URL, e.g.
    the S3 copy's): indexes are kept per source and file."""
    key = (service if isinstance(service, str) else service.url, filename)
    with _INDEX_LOCK:
        if key in _INDEX_CACHE:
            _INDEX_CACHE.move_to_end(key)
            return _INDEX_CACHE[key]
        reading = _INDEX_READING.setdefault(key, threading.Lock())
    # one thread reads a file's index, the others of this process wait for it
    with reading:
        with _INDEX_LOCK:
            if key in _INDEX_CACHE:
                _INDEX_CACHE.move_to_end(key)
                return _INDEX_CACHE[key]
        try:
            index = CompressedImageIndex.read(read)
            with _INDEX_LOCK:
                _INDEX_CACHE[key] = index
                while len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                    _INDEX_CACHE.popitem(last=False)
        finally:
            with _INDEX_LOCK:
                _INDEX_READING.pop(key, None)
    return index


#: How far apart (rows, bytes) the reads of a group may be and still be merged into one,
#: by default: reading the gap costs less than another request to the service.
BYTE_GAP = 262144


def tile_runs(
    group: ImageGroup, index: CompressedImageIndex, height: int, gap_rows: int | None = None
) -> list[tuple[int, int]]:
    """The [start, stop) image rows the group's boxes of ``height`` rows touch, runs less
    than ``gap_rows`` apart merged (default ``height``)."""
    return row_runs(
        group.y0, height, index.naxis2, max_gap=height if gap_rows is None else gap_rows
    )


def tile_byte_ranges(
    group: ImageGroup,
    index: CompressedImageIndex,
    height: int,
    *,
    gap_rows: int | None = None,
    gap_bytes: int = BYTE_GAP,
) -> list[tuple[int, int]]:
    """Every [start, stop) file byte range :func:`cut_from_tiles` reads for the group with
    the same gaps (the tile spans of each run, merged as
    :meth:`CompressedImageIndex.read_rows` merges them)."""
    return [
        span
        for a, b in tile_runs(group, index, height, gap_rows)
        for span in index.row_byte_ranges(slice(a, b), max_gap=gap_bytes)
    ]


def _with_pieces(
    runs: list[tuple[int, int]], group: ImageGroup, n_rows: int
) -> list[tuple[int, int]]:
    """``runs`` widened to the job's pieces of rows the group's boxes touch (clipped to the
    image's ``n_rows``), touching or overlapping spans merged. The result covers ``runs``
    whatever the pieces, so the pixels never depend on them."""
    if group.read_lo is None or group.read_hi is None:
        return runs
    lo = np.clip(group.read_lo, 0, n_rows).tolist()
    hi = np.clip(group.read_hi, 0, n_rows).tolist()
    return merge_spans([*runs, *((a, b) for a, b in zip(lo, hi) if a < b)], 0)


def cut_from_tiles(
    group: ImageGroup,
    index: CompressedImageIndex,
    read: ReadRange,
    context: FetchContext,
    *,
    source_key: str | None = None,
    gap_rows: int | None = None,
    gap_bytes: int = BYTE_GAP,
    fetch_ahead: Prepare | None = None,
    read_pieces: bool = False,
) -> None:
    """Decode the row tiles the group's boxes touch and report each cutout.

    ``read`` is asked for the byte ranges of :func:`tile_byte_ranges` with the same gaps,
    or parts of them: rows this process already decoded from the same file (``source_key``
    names where its bytes come from, as for :func:`file_index`) are not read again
    (:mod:`ps1dask.fetch.decoded_rows`: within a job); without ``source_key`` nothing is
    shared. A source where requests are cheap and many may run at once (S3) passes small
    gaps: fewer bytes and rows to decode. The pixels do not depend on the gaps, nor on
    which rows were shared.

    ``fetch_ahead(runs)``, if given, is called once before any decoding with the runs of
    rows this call is about to decode (not those shared from other units): a source that
    reads all its ranges at once (S3) fetches their bytes then, for ``read`` to serve.

    ``read_pieces``: with ``source_key``, decode (once per process) the job's whole pieces
    of rows that the group's boxes touch (``group.read_lo``/``read_hi``) rather than the
    group's own runs, for a source where a request costs more than decoding rows another
    unit of the process will need anyway (the service: a first-byte latency in one of its
    10 slots)."""
    height, width = context.height, context.width
    runs = tile_runs(group, index, height, gap_rows)

    # Decompress whole row tiles, but linearise only the pixels each cutout takes
    # (elementwise, so the same values as linearising the rows first). The rows are
    # shared with the other units of this process: rows of the same file another unit
    # decoded (or is decoding) are not fetched and decoded again.
    def decode(a: int, b: int) -> np.ndarray:
        return index.read_rows(read, slice(a, b), max_gap=gap_bytes)

    shared = shared_rows() if source_key is not None else None
    if shared is None:
        if fetch_ahead is not None:
            fetch_ahead(runs)
        decoded = [(a, b, [(a, b, decode(a, b))]) for a, b in runs]
    else:
        if read_pieces:
            runs = _with_pieces(runs, group, index.naxis2)
        key = (source_key, group.filename)
        found = shared.runs(key, runs, decode, prepare=fetch_ahead)
        decoded = [(a, b, pieces) for (a, b), pieces in zip(runs, found)]

    keywords = scaling_keywords(index.header)
    batch = len(group.members) * height * width  # the group's cutouts share one scaling

    def write_rows(rows: slice, cols: slice, dest: np.ndarray) -> None:
        for a, b, pieces in decoded:
            if a <= rows.start and rows.stop <= b:
                raw = gather(pieces, rows.start, rows.stop, cols)
                linear_pixels(raw, keywords, out=dest, batch_pixels=batch)
                return
        raise AssertionError("a cutout's rows fall outside the decoded runs")

    # Each cutout is cut straight into its place in the unit's array when the unit offers
    # one (context.destination), else into a new array.
    destination = context.destination
    for k, member in enumerate(group.members.tolist()):
        box = CutoutBox(int(group.x0[k]), int(group.y0[k]), width, height)
        out = destination(member) if destination is not None else None
        if out is None:
            out = np.empty((height, width), dtype=np.float32)
        pixels = cut_into(out, box, index.naxis1, index.naxis2, write_rows)
        context.on_cutout(member, pixels, index.header)
