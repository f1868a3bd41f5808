"""The rows a ``range`` read claims for each cutout box: the job's pieces of an image.

A dense job's boxes cover most rows of their skycell, and its units each hold a few dozen
of them: read unit by unit, every unit sends its own Range request for the few hundred rows
it needs (1,700 requests for 20,000 positions in 5 bands, each a first-byte latency through
the service's 10 slots). The job reads less often when each read takes a larger *piece* of
the rows the whole job needs from that image: the first unit of a worker process that needs
a row decodes its whole piece, and the other units of the process take their rows from it
(:mod:`ps1dask.fetch.decoded_rows`).

The pieces are the job's needed rows of an image (its boxes' rows, runs less than a box
height apart merged, as :func:`ps1dask.planning.cost.row_runs` merges them) cut at the
multiples of ``piece_rows``. So a piece holds only rows the job needs, every unit asks for
the same pieces (the claims of two units coincide or do not overlap), and a read is at most
``piece_rows`` rows. Pure arithmetic on the plan's boxes: no I/O.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["job_row_pieces", "piece_rows_for"]

IntArray = npt.NDArray[np.int64]


def piece_rows_for(
    files_per_skycell: int, most_rows: int, budget_bytes: int, row_bytes: int
) -> int:
    """Rows per piece for a job that reads ``files_per_skycell`` files of each skycell
    (filters x image types), whose decoded rows take at most ``row_bytes`` each: at most
    ``most_rows``, and few enough that one piece of every file of a skycell fits in half of
    a worker process's decoded-rows budget (units of one skycell run side by side on a
    worker and need them together; pieces evicted before the next unit uses them would be
    read again). 1 (each unit reads its own rows) when even a box-sized piece would not fit."""
    fit = budget_bytes // 2 // max(files_per_skycell, 1) // max(row_bytes, 1)
    return int(max(1, min(most_rows, fit)))


def job_row_pieces(
    image: npt.ArrayLike, y0: npt.ArrayLike, height: int, piece_rows: int
) -> tuple[IntArray, IntArray]:
    """For each box (rows ``[y0, y0 + height)`` of image ``image``, any integer key), the
    rows ``[lo, hi)`` a read claims for it: the union of the pieces of its image that the box
    touches (see the module's docstring). ``lo <= y0`` and ``hi >= y0 + height``; rows are not
    clipped to the image (its size is known only when its header is read).
    """
    keys = np.asarray(image, dtype=np.int64)
    first = np.asarray(y0, dtype=np.int64)
    if keys.shape != first.shape or keys.ndim != 1:
        raise ValueError("image and y0 must be 1-d arrays of one length")
    if height < 1 or piece_rows < 1:
        raise ValueError(f"height ({height}) and piece_rows ({piece_rows}) must be >= 1")
    n = len(first)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = _image_row_order(keys, first)
    k, y = (keys, first) if order is None else (keys[order], first[order])
    stop = y + height  # boxes of one height: stops sorted as starts are
    # a new run at each image's first box, and where the gap to the previous box's rows is
    # more than a box height
    same = k[1:] == k[:-1]
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = ~same | (y[1:] > stop[:-1] + height)
    starts = np.flatnonzero(new_run)
    lengths = np.diff(np.append(starts, n))
    run_start = np.repeat(y[starts], lengths)
    run_stop = np.repeat(stop[np.append(starts[1:], n) - 1], lengths)
    # float division is exact enough here (rows < 2^31) and many times faster than int64's
    lo = np.maximum(run_start, np.floor(y / piece_rows).astype(np.int64) * piece_rows)
    hi = np.minimum(run_stop, (np.floor((stop - 1) / piece_rows).astype(np.int64) + 1) * piece_rows)
    if order is None:
        return lo, hi
    out_lo, out_hi = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    out_lo[order], out_hi[order] = lo, hi
    return out_lo, out_hi


def _image_row_order(keys: IntArray, y0: IntArray) -> IntArray | None:
    """The order of the boxes by image, then row: None when they are in it already (as
    plans order them, but for boxes on one integer row of the locator). The sort is
    stable and by one packed key: nearly sorted input sorts in about linear time."""
    k_low, y_low = int(keys.min()), int(y0.min())
    y_bits = (int(y0.max()) - y_low).bit_length()
    if (int(keys.max()) - k_low).bit_length() + y_bits > 62:
        return np.lexsort((y0, keys)).astype(np.int64)
    packed = ((keys - k_low) << y_bits) | (y0 - y_low)
    if bool(np.all(packed[1:] >= packed[:-1])):
        return None
    return np.argsort(packed, kind="stable").astype(np.int64)
