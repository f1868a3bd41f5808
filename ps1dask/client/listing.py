"""The ``ps1filenames.py`` table: parse it (client), format it (emulator), map it to inputs.

The service answers a header line ``projcell subcell ra dec filter mjd type filename shortname
badflag`` and one row per image, columns separated by spaces (or ``sep``: comma or tab). No
match gives the header alone. For a POST of many positions the rows come in input order,
each with the input ra/dec echoed; positions without images give no rows at all, so
:func:`assign_positions` walks the echoed coordinates to recover each row's input index.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from ps1dask.exceptions import BadResponseError
from ps1dask.wire import LISTING_COLUMNS

__all__ = [
    "LISTING_COLUMNS",
    "assign_positions",
    "empty_listing",
    "format_listing",
    "format_positions",
    "parse_listing",
]

_INT_COLUMNS = ("projcell", "subcell", "badflag")
_FLOAT_COLUMNS = ("ra", "dec", "mjd")
_STR_COLUMNS = ("filter", "type", "filename", "shortname")
_SEPARATORS = {"space": " ", " ": " ", "comma": ",", ",": ",", "tab": "\t", "\t": "\t"}

#: Echoed coordinates within this many degrees of an input position match it; the looser
#: tolerance is tried only if the strict one cannot map every row (a service that echoes
#: fewer digits than it was sent).
POSITION_TOLERANCE_DEG = 1e-6
LOOSE_POSITION_TOLERANCE_DEG = 5e-4


def empty_listing() -> pd.DataFrame:
    """An image list with no rows and the right columns and dtypes."""
    return _typed(pd.DataFrame({col: [] for col in LISTING_COLUMNS}))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=pd.RangeIndex(len(frame)))
    for col in LISTING_COLUMNS:
        values = frame.get(col)
        if col in _INT_COLUMNS:
            out[col] = (
                np.zeros(len(frame), np.int64)
                if values is None
                else pd.to_numeric(values).astype(np.int64).to_numpy()
            )
        elif col in _FLOAT_COLUMNS:
            out[col] = pd.to_numeric(values).astype(np.float64).to_numpy()
        else:
            out[col] = pd.Series(np.asarray(values, dtype=object), dtype=object).to_numpy()
    return out


def parse_listing(text: str, sep: str | None = None, url: str | None = None) -> pd.DataFrame:
    """Parse a ``ps1filenames.py`` answer into a DataFrame with :data:`LISTING_COLUMNS`.

    ``sep=None`` splits on any whitespace (the service default) unless the header line holds
    commas or tabs. A missing ``badflag`` column (older answers) is filled with 0. Raises
    :class:`~ps1dask.exceptions.BadResponseError` if the text is not such a table.
    """
    lines = [line.strip("\r") for line in text.splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise BadResponseError("empty image list answer (not even a header line)", url)
    header_line = lines[0]
    if sep is None:
        if "\t" in header_line:
            sep = "\t"
        elif "," in header_line:
            sep = ","
    splitter = _SEPARATORS.get(sep, sep) if sep is not None else None

    def split(line: str) -> list[str]:
        parts = line.split(splitter) if splitter not in (None, " ") else line.split()
        return [p.strip() for p in parts]

    header = split(header_line)
    required = [c for c in LISTING_COLUMNS if c != "badflag"]
    missing = [c for c in required if c not in header]
    if missing:
        snippet = header_line[:200]
        raise BadResponseError(
            f"image list answer lacks columns {missing}; first line was {snippet!r}", url
        )
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        parts = split(line)
        if len(parts) != len(header):
            raise BadResponseError(
                f"image list line {number} has {len(parts)} fields, expected {len(header)}: "
                f"{line[:200]!r}",
                url,
            )
        rows.append(parts)
    frame = pd.DataFrame(rows, columns=header) if rows else pd.DataFrame(columns=header)
    try:
        return _typed(frame)
    except (TypeError, ValueError) as err:
        raise BadResponseError(f"image list answer has unreadable values: {err}", url) from None


def _format_float(value: float) -> str:
    return repr(float(value))


def format_listing(frame: pd.DataFrame | Iterable[Sequence[object]], sep: str = " ") -> str:
    """Format image-list rows the way ``ps1filenames.py`` does (header line first).

    ``frame`` is a DataFrame with :data:`LISTING_COLUMNS` or an iterable of rows in that
    order. Floats are written with full precision (``repr``), so ``parse_listing`` gives back
    exactly the same values; ``sep`` is ``" "``, ``","``, ``"\\t"`` or a name (space, comma, tab).
    """
    joiner = _SEPARATORS.get(sep, sep)
    rows: Iterable[Sequence[object]]
    if isinstance(frame, pd.DataFrame):
        rows = frame.loc[:, list(LISTING_COLUMNS)].itertuples(index=False, name=None)
    else:
        rows = frame
    out = [joiner.join(LISTING_COLUMNS)]
    for row in rows:
        fields = []
        for col, value in zip(LISTING_COLUMNS, row, strict=True):
            if col in _FLOAT_COLUMNS:
                fields.append(_format_float(value))  # type: ignore[arg-type]
            elif col in _INT_COLUMNS:
                fields.append(str(int(value)))  # type: ignore[call-overload]
            else:
                fields.append(str(value))
        out.append(joiner.join(fields))
    return "\n".join(out) + "\n"


def format_positions(ra: npt.ArrayLike, dec: npt.ArrayLike) -> str:
    """The ``file`` field of a bulk POST: one ``ra dec`` line per position, full precision."""
    ra_arr = np.asarray(ra, dtype=np.float64).ravel()
    dec_arr = np.asarray(dec, dtype=np.float64).ravel()
    return "\n".join(f"{r!r} {d!r}" for r, d in zip(ra_arr.tolist(), dec_arr.tolist())) + "\n"


def _close(ra1: float, dec1: float, ra2: float, dec2: float, tol: float) -> bool:
    dra = (ra1 - ra2 + 180.0) % 360.0 - 180.0
    return abs(dra) <= tol and abs(dec1 - dec2) <= tol


def assign_positions(
    listing: pd.DataFrame,
    ra: npt.ArrayLike,
    dec: npt.ArrayLike,
    offset: int = 0,
    tol: float | None = None,
    url: str | None = None,
) -> npt.NDArray[np.int64]:
    """0-based input index (plus ``offset``) of each row of a bulk listing.

    Rows come in input order and echo their input ra/dec; inputs without images are skipped.
    A row belongs to the current input while its coordinates match (within ``tol`` degrees;
    default :data:`POSITION_TOLERANCE_DEG`, then :data:`LOOSE_POSITION_TOLERANCE_DEG`) and its
    file has not yet been seen for that input (a repeated file means the next, identical,
    input position). Raises :class:`~ps1dask.exceptions.BadResponseError` if a row matches
    no later input.
    """
    if tol is not None:
        return _assign(listing, ra, dec, offset, tol, url)
    try:
        return _assign(listing, ra, dec, offset, POSITION_TOLERANCE_DEG, url)
    except BadResponseError:
        return _assign(listing, ra, dec, offset, LOOSE_POSITION_TOLERANCE_DEG, url)


def _assign(
    listing: pd.DataFrame,
    ra: npt.ArrayLike,
    dec: npt.ArrayLike,
    offset: int,
    tol: float,
    url: str | None,
) -> npt.NDArray[np.int64]:
    ra_in = np.asarray(ra, dtype=np.float64).ravel()
    dec_in = np.asarray(dec, dtype=np.float64).ravel()
    n = ra_in.size
    out = np.empty(len(listing), dtype=np.int64)
    current = 0
    seen: set[str] = set()
    rows = zip(
        listing["ra"].to_numpy(dtype=np.float64),
        listing["dec"].to_numpy(dtype=np.float64),
        listing["filename"].to_numpy(dtype=object),
        strict=True,
    )
    for i, (row_ra, row_dec, name) in enumerate(rows):
        if current < n and _close(row_ra, row_dec, ra_in[current], dec_in[current], tol):
            if name not in seen:
                seen.add(name)
                out[i] = current + offset
                continue
            start = current + 1  # same file again: the next (identical) input position
        else:
            start = current + (1 if seen else 0)
        candidate = start
        while candidate < n and not _close(
            row_ra, row_dec, ra_in[candidate], dec_in[candidate], tol
        ):
            candidate += 1
        if candidate >= n:
            raise BadResponseError(
                f"bulk image list row {i + 1} (ra={row_ra!r}, dec={row_dec!r}, {name}) matches "
                f"no remaining input position; the answer does not follow the input order",
                url,
            )
        current = candidate
        seen = {name}
        out[i] = current + offset
    return out
