""":func:`read_positions`: sources, columns and values put together, bad rows reported."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ps1dask.exceptions import InvalidParameterError, InvalidPositionError, PS1DaskError
from ps1dask.positions.arguments import PYTHON_ARGUMENTS, ArgumentNames
from ps1dask.positions.columns import choose_columns
from ps1dask.positions.sources import UNREADABLE, Column, Source, open_source
from ps1dask.positions.table import BoolArray, PositionSource, PositionTable, empty_skipped
from ps1dask.positions.values import (
    ANGLE_FORMS,
    ANGLE_REASONS,
    CODE_DEC_RANGE,
    CODE_MISSING,
    CODE_OK,
    integer_ids,
    parse_angles,
    parse_ids,
    parse_skycells,
    show_value,
)

__all__ = ["MAX_ROWS_SHOWN", "read_positions", "read_table_columns"]

log = logging.getLogger(__name__)

#: How many bad rows an error message shows before "and N more".
MAX_ROWS_SHOWN = 20


def read_positions(
    src: PositionSource,
    *,
    ra_col: str | None = None,
    dec_col: str | None = None,
    id_col: str | Literal[False] | None = None,
    skycell_col: str | Literal[False] | None = None,
    skip_bad: bool = False,
    argument_names: ArgumentNames = PYTHON_ARGUMENTS,
) -> PositionTable:
    """Read, parse and validate a table of sky positions.

    Parameters
    ----------
    src
        Where the positions are:

        * a path (``str`` or ``os.PathLike``) to a CSV file (``.csv``, ``.txt``, ``.tsv``,
          ``.dat``, optionally compressed ``.gz``/``.bz2``/``.xz``; separated by commas,
          tabs, semicolons or, failing those, whitespace; one header row; leading ``#`` lines
          are skipped), a Parquet file (``.parquet``, ``.pq``), a FITS table (``.fits``,
          ``.fit``, ``.fits.gz``: the first table HDU), a VOTable (``.xml``, ``.vot``,
          ``.votable``: the first table) or an ECSV file;
        * a pandas DataFrame (rows are taken by position; the index is ignored);
        * a dask DataFrame: only the needed columns are computed, into memory on the client
          (10^7 rows of ra/dec/id take a few hundred MB); rows are numbered over all
          partitions in order;
        * an astropy ``Table``/``QTable``: columns with angle units (``Quantity`` or a
          ``unit``) are converted to degrees (RA in ``hourangle`` or ``h`` too), and a
          ``SkyCoord`` column gives both RA and Dec (ICRS or FK5 J2000 as is, other frames
          transformed to ICRS); a bare ``SkyCoord`` is accepted too;
        * a dict of columns (lists, arrays, Quantities or a SkyCoord; scalars make one row);
        * a :class:`PositionTable`, returned unchanged (the other arguments are ignored).
    ra_col, dec_col
        Names of the RA and Dec columns (or of a SkyCoord column). Detected
        case-insensitively when not given: RA from :data:`RA_COLUMNS` (``ra``, ``raj2000``,
        ``ra_deg``, ...), Dec from :data:`DEC_COLUMNS` (``dec``, ``dej2000``, ...).
        Values are degrees (numbers or numeric strings) or sexagesimal strings: RA in hours
        (``"05 34 31.94"``, ``"05:34:31.94"``, ``"5h34m31.94s"``; degrees if written with
        ``d``/``°``), Dec in degrees (``"+22 00 52.2"``, ``"-0:30:00"``, ``"22d00m52.2s"``).
    id_col
        Column of position ids (any type, converted to ``str`` and stripped of surrounding
        blanks); detected from :data:`ID_COLUMNS` (``id``, ``name``, ``objid``, ...) when not
        given. Without one, or with ``id_col=False``, the id is the 0-based source row number.
    skycell_col
        Column of PS1 skycell ids (``skycell.2069.026`` or ``2069.026``; detected as
        ``skycell``; ``False`` to ignore it). A row with a skycell and no RA/Dec gets the
        skycell centre (:func:`ps1dask.tessellation.skycell_center`); RA/Dec win when both
        are present. An unknown skycell is a bad row either way.
    skip_bad
        Drop unusable rows instead of raising; they are listed in
        :attr:`PositionTable.skipped` and a warning with their count is logged.
    argument_names
        How error messages name these arguments: Python keywords (``ra_col='x'``,
        the default) or, with :data:`ps1dask.positions.CLI_ARGUMENTS`, the options of the
        ``ps1dask`` commands (``--ra-col x``, ``--skip-bad``).

    Returns
    -------
    PositionTable
        ``frame`` with ``id`` (str), ``ra`` (degrees in [0, 360): RA is taken modulo 360),
        ``dec`` (degrees in [-90, 90]) and ``row`` (0-based source row), in input order.
        Positions outside the PS1 footprint are kept (they are not errors here).

    Raises
    ------
    InvalidPositionError
        (a ``ValueError``) once, for all unusable rows together: unparsable or missing
        values, NaN/inf, ``|dec| > 90``, sexagesimal RA out of range, unknown skycells,
        missing ids (unless ``skip_bad``); and for duplicate ids (always: ids key the output
        store). ``.rows`` lists every offending 0-based row.
    InvalidParameterError
        No positions (an empty table), missing RA/Dec columns (the message names the columns
        present and those looked for), an unsupported source or file format.
    FileNotFoundError
        ``src`` is a path that does not exist.
    """
    if isinstance(src, PositionTable):
        return src
    try:
        source = open_source(src)
        cols = choose_columns(source, ra_col, dec_col, id_col, skycell_col, argument_names)

        wanted = [c for c in (cols.ra, cols.dec, cols.id, cols.skycell) if c is not None]
        wanted = list(dict.fromkeys(wanted))
        strings = {c for c in (cols.id, cols.skycell) if c is not None}
        roles = {c: r for c, r in ((cols.ra, "ra"), (cols.dec, "dec")) if c is not None}
        data, n = source.load(wanted, strings, roles)
    except (PS1DaskError, FileNotFoundError):
        raise
    except UNREADABLE as err:
        # a corrupt or mislabelled file (not Parquet, not FITS, not gzip, a directory, ...)
        named = f"{os.fspath(src)!r}" if isinstance(src, (str, os.PathLike)) else type(src).__name__
        raise InvalidParameterError(
            f"cannot read positions from {named}: {type(err).__name__}: {err}"
        ) from None
    if cols.coord is not None:
        ra_raw, dec_raw = source.coords[cols.coord]()
        n = len(ra_raw)
    if n == 0:
        raise InvalidParameterError(f"no positions: {source.label} has no rows")

    # --- coordinates --------------------------------------------------------------------
    if cols.coord is not None:
        ra, ra_code = parse_angles(ra_raw, "ra")
        dec, dec_code = parse_angles(dec_raw, "dec")
        ra_in: np.ndarray = ra_raw
        dec_in: np.ndarray = dec_raw
    elif cols.ra is not None and cols.dec is not None:
        ra_in, dec_in = _as_numpy(data[cols.ra]), _as_numpy(data[cols.dec])
        ra, ra_code = parse_angles(ra_in, "ra")
        dec, dec_code = parse_angles(dec_in, "dec")
    else:
        ra_in = dec_in = np.full(n, np.nan)
        ra, dec = ra_in.copy(), dec_in.copy()
        ra_code = np.full(n, CODE_MISSING, dtype=np.int8)
        dec_code = ra_code.copy()
    dec_code[(dec_code == CODE_OK) & (np.abs(dec) > 90.0)] = CODE_DEC_RANGE

    skycell_problems: dict[int, str] = {}
    no_position = (ra_code == CODE_MISSING) & (dec_code == CODE_MISSING)
    if cols.skycell is not None:
        sc_in = _as_numpy(data[cols.skycell])
        sc_ra, sc_dec, sc_present, skycell_problems = parse_skycells(sc_in)
        use = no_position & sc_present
        ra[use], dec[use] = sc_ra[use], sc_dec[use]
        ra_code[use] = CODE_OK
        dec_code[use] = CODE_OK
        no_position &= ~sc_present

    with np.errstate(invalid="ignore"):  # inf rows are already flagged
        ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0  # np.mod(-1e-20, 360) rounds to 360.0

    # --- ids ----------------------------------------------------------------------------
    if cols.id is not None:
        id_in = data[cols.id]
        ids, id_missing = parse_ids(id_in)
    else:
        id_in = None
        ids = integer_ids(np.arange(n, dtype=np.int64))
        id_missing = np.zeros(n, dtype=bool)

    # --- bad rows -----------------------------------------------------------------------
    bad = (ra_code != CODE_OK) | (dec_code != CODE_OK) | id_missing
    if skycell_problems:
        bad[list(skycell_problems)] = True
    bad_rows = np.flatnonzero(bad)
    reasons: list[str] = []
    shown: list[str] = []
    for i in bad_rows:
        why: list[str] = []
        what: list[str] = []
        if no_position[i]:
            why.append(
                "no position: ra and dec are missing"
                + (" and there is no skycell" if cols.skycell is not None else "")
            )
            what.append(f"ra={show_value(ra_in[i])}, dec={show_value(dec_in[i])}")
        else:
            for axis, code, raw in (("ra", ra_code[i], ra_in), ("dec", dec_code[i], dec_in)):
                if code != CODE_OK:
                    why.append(ANGLE_REASONS[int(code)].format(axis=axis, form=ANGLE_FORMS[axis]))
                    what.append(show_value(raw[i]))
        if int(i) in skycell_problems:
            why.append(skycell_problems[int(i)])
            what.append(show_value(_value_at(data[cols.skycell], int(i))))  # type: ignore[index]
        if id_missing[i]:
            why.append("id: missing value")
            what.append(show_value(_value_at(id_in, int(i))) if id_in is not None else "None")
        reasons.append("; ".join(why))
        shown.append("; ".join(what))

    keep = ~bad
    if cols.id is not None:
        int_key = id_in if isinstance(id_in, np.ndarray) and id_in.dtype.kind in "iu" else None
        dup_rows, dup_message = _duplicates(ids, keep, int_key, argument_names)
    else:  # row numbers are unique
        dup_rows, dup_message = np.zeros(0, dtype=np.intp), ""
    if bad_rows.size and (not skip_bad or not keep.any()):
        message = _bad_rows_message(source, n, bad_rows, reasons, shown, skip_bad, argument_names)
        rows = bad_rows.tolist()
        if dup_rows.size:
            message += "\n" + dup_message
            rows = sorted(set(rows) | set(dup_rows.tolist()))
        raise InvalidPositionError(message, rows=rows)
    if dup_rows.size:
        raise InvalidPositionError(f"{source.label}: {dup_message}", rows=dup_rows.tolist())

    skipped = empty_skipped()
    if bad_rows.size:
        skipped = pd.DataFrame(
            {
                "row": bad_rows.astype(np.int64),
                "reason": pd.Series(reasons, dtype=object),
                "value": pd.Series(shown, dtype=object),
            }
        )
        # the command line lists the rows itself; a Python caller has PositionTable.skipped
        log.log(
            logging.WARNING if argument_names.style == "python" else logging.INFO,
            "skipped %d of %d rows of %s with unusable positions (see PositionTable.skipped)",
            bad_rows.size,
            n,
            source.label,
        )
    kept = np.flatnonzero(keep)
    all_kept = kept.size == n
    frame = pd.DataFrame(
        {
            "id": (ids if all_kept else ids.iloc[kept]).reset_index(drop=True),
            "ra": ra if all_kept else ra[kept],
            "dec": dec if all_kept else dec[kept],
            "row": kept.astype(np.int64),
        },
        copy=False,  # the arrays are ours already
    )
    return PositionTable(frame=frame, skipped=skipped)


def _bad_rows_message(
    source: Source,
    n: int,
    bad_rows: npt.NDArray[np.intp],
    reasons: list[str],
    shown: list[str],
    skip_bad: bool,
    spell: ArgumentNames,
) -> str:
    lines = [
        (
            f"{source.label}: {bad_rows.size} of {n} rows have unusable positions "
            f"(row numbers are {source.row_note}):"
        )
    ]
    for i, row in enumerate(bad_rows[:MAX_ROWS_SHOWN]):
        lines.append(f"  row {int(row)}: {reasons[i]} (value: {shown[i]})")
    if bad_rows.size > MAX_ROWS_SHOWN:
        lines.append(f"  and {bad_rows.size - MAX_ROWS_SHOWN} more")
    if skip_bad:
        lines.append("No usable position is left.")
    else:
        lines.append(
            f"Fix or remove these rows, or pass {spell.setting('skip_bad', True)} to drop them "
            + (
                "(they are then listed in PositionTable.skipped)."
                if spell.style == "python"
                else "(they are then listed on stderr)."
            )
        )
    return "\n".join(lines)


def _all_unique_ints(values: npt.NDArray[np.integer[Any]]) -> bool:
    """Uniqueness of integer ids without a hash table (sorted ids take one pass)."""
    if values.size < 2:
        return True
    if bool(np.all(values[1:] > values[:-1])):
        return True
    ordered = np.sort(values)
    return not bool(np.any(ordered[1:] == ordered[:-1]))


#: Strings hashed at a time (their temporary arrays stay in the CPU caches).
_HASH_BLOCK = 1 << 15
_MIX_1 = np.uint64(0xFF51AFD7ED558CCD)  # MurmurHash3's 64-bit finaliser constants
_MIX_2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT = np.uint64(33)


def _mixed(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """MurmurHash3's 64-bit finaliser (in place): every input bit reaches every output bit."""
    words ^= words >> _SHIFT
    words *= _MIX_1  # uint64 products wrap modulo 2^64
    words ^= words >> _SHIFT
    words *= _MIX_2
    words ^= words >> _SHIFT
    return words


def _string_hashes(strings: pa.Array) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each string's length and UTF-8 bytes, straight from Arrow's buffers.

    Equal strings get equal hashes; distinct ones almost surely distinct hashes. Vectorised
    over strings, eight bytes at a time (10^7 short ids: a few numpy passes, no Python
    string made). Nulls hash as empty strings.
    """
    n = len(strings)
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    _, offsets_buffer, data_buffer = strings.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[strings.offset :][: n + 1]
    starts = offsets[:-1].astype(np.int64)
    ends = offsets[1:].astype(np.int64)
    if strings.null_count:
        starts[np.asarray(strings.is_null())] = ends[np.asarray(strings.is_null())]
    lengths = ends - starts
    hashes = _mixed(lengths.astype(np.uint64))
    longest = int(lengths.max()) if n else 0
    if longest == 0:
        return hashes
    # 8 zero bytes then the data, read as overlapping little-endian 64-bit words (an
    # unaligned view): words[e] holds data bytes e-8 .. e-1, the last one in its top byte
    end = int(offsets[-1])
    data = np.zeros(end + 8, dtype=np.uint8)
    data[8:] = np.frombuffer(data_buffer, dtype=np.uint8)[:end]
    words = np.ndarray((end + 1,), dtype="<u8", buffer=data, strides=(1,))
    # a string's k-th word is its bytes [8k, 8k + 8), its last one the 8 bytes ending it (it
    # may overlap the one before; strings shorter than 8 bytes drop what precedes them)
    for first in range(0, n, _HASH_BLOCK):  # blocks whose temporaries stay in the CPU caches
        block = slice(first, first + _HASH_BLOCK)
        block_starts, block_ends, block_hashes = starts[block], ends[block], hashes[block]
        drop = (8 * (8 - np.minimum(lengths[block], 8))).astype(np.uint64)
        drop_half = drop // np.uint64(2)  # two shifts: shifting a 64-bit word by 64 is undefined
        drop_rest = drop - drop_half
        any_short = bool(drop.any())
        for k in range(8, int(lengths[block].max()) + 8, 8):
            word = words[np.minimum(block_starts + k, block_ends)]
            if any_short:
                word >>= drop_half
                word >>= drop_rest
            block_hashes ^= _mixed(word)
            block_hashes *= _MIX_1
    return hashes


def _hash_twins(ids: pd.Series) -> npt.NDArray[np.intp] | None:
    """Positions of the ids whose 64-bit hash another id shares (None: ids not text).

    Equal ids have equal hashes, so every duplicate is among them; an empty answer proves
    the ids unique without comparing strings.
    """
    strings = pa.array(ids, from_pandas=True)
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    if not (pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type)):
        return None
    hashes = _string_hashes(strings)
    ordered = np.sort(hashes)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.isin(hashes, ordered[1:][same]))


def _duplicates(
    ids: pd.Series,
    keep: BoolArray,
    int_key: np.ndarray | None = None,
    spell: ArgumentNames = PYTHON_ARGUMENTS,
) -> tuple[npt.NDArray[np.intp], str]:
    """Rows (among ``keep``) whose id is not unique, and a message naming them.

    ``int_key``: the integer id column the ids were formatted from, for a faster check.
    """
    kept = np.flatnonzero(keep)
    all_kept = kept.size == len(ids)
    if int_key is not None and _all_unique_ints(int_key if all_kept else int_key[kept]):
        return np.zeros(0, dtype=np.intp), ""
    series = ids if all_kept else ids.iloc[kept]
    twins = _hash_twins(series)
    if twins is None:  # not Arrow text: pandas' hash table
        if series.is_unique:
            return np.zeros(0, dtype=np.intp), ""
    elif twins.size == 0:
        return np.zeros(0, dtype=np.intp), ""
    else:  # compare only the ids that share a hash (in order: the same groups and message)
        kept, series = kept[twins], series.iloc[twins]
    dup = series.duplicated(keep=False).to_numpy()
    if not dup.any():
        return np.zeros(0, dtype=np.intp), ""
    rows = kept[dup]
    groups = pd.Series(rows).groupby(series.to_numpy()[dup], sort=False)
    items = [(key, list(group)) for key, group in groups]
    parts = []
    for key, members in items[:MAX_ROWS_SHOWN]:
        listed = ", ".join(str(r) for r in members[:10])
        if len(members) > 10:
            listed += f", ... ({len(members)} rows)"
        parts.append(f"  id {key!r}: rows {listed}")
    if len(items) > MAX_ROWS_SHOWN:
        parts.append(f"  and {len(items) - MAX_ROWS_SHOWN} more duplicated ids")
    message = (
        f"{len(items)} {'id is' if len(items) == 1 else 'ids are'} used by more than one row "
        "(0-based rows); ids key the output store and must be unique:\n"
        + "\n".join(parts)
        + "\nMake the ids unique, or use the "
        f"0-based row numbers as ids by passing {spell.setting('id_col', False)} (or removing "
        "the id column)."
    )
    return np.sort(rows), message


def _as_numpy(values: Column) -> np.ndarray:
    """A loaded column as a numpy array (Arrow text becomes an object array of ``str``)."""
    if isinstance(values, pa.Array):
        return values.to_numpy(zero_copy_only=False)
    return values


def _value_at(values: Column, i: int) -> Any:
    """Row ``i`` of a loaded column as a Python value, for messages."""
    if isinstance(values, pa.Array):
        return values[i].as_py()
    return values[i]


def read_table_columns(src: PositionSource) -> pd.DataFrame:
    """Every plain column of a position source, as read, for passing through to an output.

    Parameters
    ----------
    src
        Anything :func:`read_positions` reads (a :class:`PositionTable` gives its ``frame``).

    Returns
    -------
    pandas.DataFrame
        One row per source row (index ``0..n-1``, the 0-based row numbers of
        :attr:`PositionTable.frame` ``row``), one column per 1-d column of the source with
        its values as read (no unit conversion, no parsing). SkyCoord and multi-dimensional
        columns are left out.
    """
    if isinstance(src, PositionTable):
        return src.frame.copy()
    source = open_source(src)
    names = [c for c in source.names if c not in source.coords]
    try:
        data, n = source.load(names, set(), {})
    except InvalidParameterError:  # one unloadable (e.g. 2-d) column: take the others
        data, n = {}, 0
        for name in names:
            try:
                one, n = source.load([name], set(), {})
            except InvalidParameterError:
                continue
            data.update(one)
    # FITS columns are big-endian: Parquet (Arrow) writers refuse byte-swapped arrays
    arrays = {name: _as_numpy(values) for name, values in data.items()}  # (numpy: no text asked)
    native = {
        name: values if values.dtype.isnative else values.astype(values.dtype.newbyteorder("="))
        for name, values in arrays.items()
    }
    return pd.DataFrame(native, index=pd.RangeIndex(n) if not native else None)
