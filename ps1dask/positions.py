"""Read and validate tables of sky positions (planning layer, no network).

:func:`read_positions` turns whatever the user has -- a CSV / Parquet / FITS / VOTable file,
a pandas or dask DataFrame, an astropy Table (also with ``SkyCoord`` or ``Quantity``
columns), a dict of columns -- into a :class:`PositionTable`: one row per usable position,
with a string ``id``, ``ra`` in [0, 360) and ``dec`` in [-90, 90] (J2000 degrees) and the
0-based ``row`` of the source it came from.

Coordinates may be numbers in degrees, numeric strings, or sexagesimal strings (RA in hours:
``"05 34 31.94"``, ``"05:34:31.94"``, ``"5h34m31.94s"``; Dec in degrees: ``"+22 00 52.2"``,
``"22:00:52.2"``, ``"22d00m52.2s"``), parsed vectorised (regular expressions on the string
rows only, numpy for the arithmetic) so that millions of rows read in seconds. A ``skycell``
column (``skycell.2069.026`` or ``2069.026``) stands for the centre of that skycell on rows
without RA/Dec.

Every unusable row (unparsable, missing, NaN/inf, ``|dec| > 90``, sexagesimal RA out of
range, unknown skycell, missing id) is reported at once, by 0-based row number, in ONE
:class:`~ps1dask.exceptions.InvalidPositionError`; ``skip_bad=True`` drops those rows instead
and lists them in :attr:`PositionTable.skipped`. Positions outside the PS1 footprint are
*not* errors here: a later stage gives them a status.

>>> table = read_positions({"ra": ["05 34 31.94", 83.0], "dec": ["+22 00 52.2", -5.5]})
>>> table.frame
  id         ra      dec  row
0  0  83.633083  22.0145    0
1  1  83.000000  -5.5000    1
"""

from __future__ import annotations

import bz2
import functools
import gzip
import logging
import lzma
import os
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ps1dask.exceptions import (
    InvalidParameterError,
    InvalidPositionError,
    InvalidSkycellError,
    PS1DaskError,
)
from ps1dask.tessellation import skycell_center
from ps1dask.wire import SKYCELL_ID_EXPECTED, SKYCELL_ID_PATTERN

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

__all__ = [
    "DEC_COLUMNS",
    "ID_COLUMNS",
    "RA_COLUMNS",
    "SKYCELL_COLUMNS",
    "PositionSource",
    "PositionTable",
    "read_positions",
]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

#: Column names recognised (case-insensitively, in this order of preference) as RA.
RA_COLUMNS: tuple[str, ...] = ("ra", "raj2000", "ra_deg", "ramean", "radeg", "_raj2000")
#: Column names recognised as Dec.
DEC_COLUMNS: tuple[str, ...] = (
    "dec",
    "dej2000",
    "decj2000",
    "dec_deg",
    "decmean",
    "dedeg",
    "_dej2000",
)
#: Column names recognised as the position id.
ID_COLUMNS: tuple[str, ...] = ("id", "name", "objid", "objname", "source_id")
#: Column names recognised as a skycell id (``skycell.PPPP.SSS`` or ``PPPP.SSS``).
SKYCELL_COLUMNS: tuple[str, ...] = ("skycell",)

#: How many bad rows an error message shows before "and N more".
MAX_ROWS_SHOWN = 20

_CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_VOTABLE_SUFFIXES = (".xml", ".vot", ".votable")
_ECSV_SUFFIXES = (".ecsv",)
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

_SKIPPED_COLUMNS = ("row", "reason", "value")
#: What reading a corrupt or mislabelled table file raises (turned into InvalidParameterError).
_UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    UnicodeError,
    zlib.error,
    lzma.LZMAError,
    pa.ArrowException,
)


def _empty_skipped() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": pd.Series([], dtype=np.int64),
            "reason": pd.Series([], dtype=object),
            "value": pd.Series([], dtype=object),
        }
    )


@dataclass
class PositionTable:
    """Validated positions, in input order.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per usable position, index ``0..n-1``: ``id`` (unique text, pandas ``str``
        dtype: Arrow-backed under pandas 3, so 10^7 ids stay compact), ``ra``
        (float64, degrees in [0, 360)), ``dec`` (float64, degrees in [-90, 90]), ``row``
        (int64, the 0-based data row of the source it came from).
    skipped : pandas.DataFrame
        Rows dropped by ``read_positions(..., skip_bad=True)``: ``row`` (int64, 0-based),
        ``reason`` (str) and ``value`` (str, ``repr`` of the offending input). Empty otherwise.
    """

    frame: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=_empty_skipped)

    def __post_init__(self) -> None:
        missing = [c for c in ("id", "ra", "dec", "row") if c not in self.frame.columns]
        if missing:
            raise InvalidParameterError(
                f"PositionTable.frame lacks column(s) {missing}; it needs id, ra, dec, row"
            )

    def __len__(self) -> int:
        """Number of usable positions."""
        return len(self.frame)

    @property
    def ra(self) -> FloatArray:
        """Right ascension in degrees, in [0, 360)."""
        return self.frame["ra"].to_numpy(dtype=np.float64)

    @property
    def dec(self) -> FloatArray:
        """Declination in degrees, in [-90, 90]."""
        return self.frame["dec"].to_numpy(dtype=np.float64)

    @property
    def ids(self) -> ObjectArray:
        """Position ids (Python ``str``), unique."""
        return self.frame["id"].to_numpy(dtype=object)

    @property
    def rows(self) -> npt.NDArray[np.int64]:
        """0-based source row of each position."""
        return self.frame["row"].to_numpy(dtype=np.int64)


#: Everything :func:`read_positions` accepts.
PositionSource = Union[
    str,
    "os.PathLike[str]",
    pd.DataFrame,
    "Table",
    "SkyCoord",
    PositionTable,
    Mapping[str, Any],
    Any,  # a dask DataFrame (not imported here: dask.dataframe is slow to import)
]


# --------------------------------------------------------------------------------------
# Sources: a uniform view (column names + loader) over files and in-memory tables
# --------------------------------------------------------------------------------------


@dataclass
class _Source:
    """Column names of a source and a way to load some of them as 1-d numpy arrays."""

    label: str
    names: list[str]
    #: load(columns, string_columns, angle_roles) -> ({name: array}, n_rows)
    load: Callable[[list[str], set[str], dict[str, str]], tuple[dict[str, np.ndarray], int]]
    row_note: str
    #: SkyCoord columns: name -> loader of (ra_deg, dec_deg)
    coords: dict[str, Callable[[], tuple[FloatArray, FloatArray]]] = field(default_factory=dict)


def _is_dask_frame(obj: object) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("dask") and hasattr(obj, "compute") and hasattr(obj, "columns")


def _open_source(src: Any) -> _Source:
    """Dispatch on the kind of ``src``."""
    if isinstance(src, (str, os.PathLike)):
        return _file_source(Path(src))
    if isinstance(src, pd.DataFrame):
        return _pandas_source(src, "pandas DataFrame")
    if isinstance(src, pd.Series):
        raise InvalidParameterError(
            "read_positions needs a table with RA/Dec columns, not a single pandas Series"
        )
    if _is_dask_frame(src):
        return _dask_source(src)
    module = type(src).__module__ or ""
    if module.startswith("astropy"):
        from astropy.coordinates import SkyCoord
        from astropy.table import Table

        if isinstance(src, Table):
            return _table_source(src, f"astropy {type(src).__name__}")
        if isinstance(src, SkyCoord):
            from astropy.table import QTable

            return _table_source(QTable({"coord": src.reshape(-1)}), "SkyCoord")
    if isinstance(src, np.ndarray) and src.dtype.names:
        from astropy.table import Table

        return _table_source(Table(src), "numpy structured array")
    if isinstance(src, Mapping):
        return _mapping_source(src)
    raise InvalidParameterError(
        f"cannot read positions from a {type(src).__name__}: expected a path to a CSV, "
        "Parquet, FITS or VOTable file, a pandas or dask DataFrame, an astropy Table, "
        "a SkyCoord, a PositionTable or a dict of columns"
    )


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix) of a file name, lower case."""
    parts = [s.lower() for s in path.suffixes]
    if parts and parts[-1] in _COMPRESSIONS:
        return (parts[-2] if len(parts) > 1 else ""), parts[-1]
    return (parts[-1] if parts else ""), None


def _file_source(path: Path) -> _Source:
    if not path.exists():
        raise FileNotFoundError(f"position table {str(path)!r} does not exist")
    fmt, compression = _suffixes(path)
    if fmt in _CSV_SUFFIXES:
        return _csv_source(path, compression)
    if fmt in _PARQUET_SUFFIXES and compression is None:
        return _parquet_source(path)
    if fmt in _FITS_SUFFIXES:
        return _fits_source(path)
    if fmt in _VOTABLE_SUFFIXES and compression is None:
        from astropy.table import Table

        return _table_source(Table.read(path, format="votable"), f"VOTable {str(path)!r}")
    if fmt in _ECSV_SUFFIXES:
        from astropy.table import QTable

        return _table_source(QTable.read(path, format="ascii.ecsv"), f"ECSV {str(path)!r}")
    raise InvalidParameterError(
        f"{str(path)!r}: unknown table format {''.join(path.suffixes)!r}; expected CSV "
        "(.csv, .txt, .tsv, .dat, optionally .gz/.bz2/.xz), Parquet (.parquet, .pq), FITS "
        "(.fits, .fit, .fits.gz), VOTable (.xml, .vot, .votable) or ECSV (.ecsv)"
    )


def _sniff_text(path: Path, compression: str | None) -> tuple[str, int]:
    """(separator regex or char, number of leading '#' comment lines) of a text table."""
    opener = _COMPRESSIONS.get(compression or "", open)
    n_comments = 0
    header = ""
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
        for line in fh:
            stripped = line.strip()
            if stripped.startswith("#"):
                n_comments += 1
                continue
            if not stripped:
                n_comments += 1
                continue
            header = line
            break
    if "," in header:
        sep = ","
    elif "\t" in header:
        sep = "\t"
    elif ";" in header:
        sep = ";"
    elif "|" in header:
        sep = "|"
    else:
        sep = r"\s+"
    return sep, n_comments


def _csv_source(path: Path, compression: str | None) -> _Source:
    label = f"text table {str(path)!r}"
    sep, skip = _sniff_text(path, compression)
    kwargs: dict[str, Any] = {"sep": sep, "skiprows": skip, "skipinitialspace": sep != r"\s+"}
    try:
        raw = [str(c) for c in pd.read_csv(path, nrows=0, **kwargs).columns]
    except pd.errors.EmptyDataError:
        raw = []
    except (pd.errors.ParserError, UnicodeError) as err:
        raise InvalidParameterError(f"{label}: cannot read the header: {err}") from None
    raw_of = {c.strip(): c for c in raw}  # "RA , Dec" headers: match names without blanks

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], int]:
        if not columns:
            return {}, 0
        try:
            frame = pd.read_csv(
                path,
                usecols=[raw_of[c] for c in columns],
                dtype={raw_of[c]: str for c in strings},  # ids, skycells: text, as written
                **kwargs,
            )
        except (pd.errors.ParserError, UnicodeError, ValueError) as err:
            raise InvalidParameterError(f"{label}: cannot read the table: {err}") from None
        return {c: _series_array(frame[raw_of[c]], c in strings) for c in columns}, len(frame)

    return _Source(
        label=label,
        names=list(raw_of),
        load=load,
        row_note="0-based data rows: the first row after the header is row 0",
    )


def _parquet_source(path: Path) -> _Source:
    import pyarrow.parquet as pq

    names = list(pq.read_schema(path).names)

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], int]:
        frame = pd.read_parquet(path, columns=columns) if columns else pd.DataFrame()
        if not columns:
            return {}, pq.ParquetFile(path).metadata.num_rows
        return {c: _series_array(frame[c], c in strings) for c in columns}, len(frame)

    return _Source(
        label=f"Parquet file {str(path)!r}",
        names=names,
        load=load,
        row_note="0-based rows of the Parquet file",
    )


def _fits_source(path: Path) -> _Source:
    from astropy.io import fits
    from astropy.table import Table
    from astropy.units import UnitsWarning

    with warnings.catch_warnings():
        # a corrupt file raises below; its header warnings would only clutter the error
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        with fits.open(path) as hdul:
            index = next(
                (
                    i
                    for i, hdu in enumerate(hdul)
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU))
                ),
                None,
            )
    if index is None:
        raise InvalidParameterError(f"FITS file {str(path)!r} has no table HDU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnitsWarning)
        table = Table.read(path, hdu=index, format="fits")
    return _table_source(table, f"FITS table {str(path)!r} (HDU {index})")


def _pandas_source(frame: pd.DataFrame, label: str) -> _Source:
    names = [str(c) for c in frame.columns]
    by_name = dict(zip(names, frame.columns))

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], int]:
        out: dict[str, np.ndarray] = {}
        for c in columns:
            col = frame[by_name[c]]
            if isinstance(col, pd.DataFrame):
                raise InvalidParameterError(f"{label}: column {c!r} appears more than once")
            out[c] = _series_array(col, c in strings)
        return out, len(frame)

    return _Source(
        label=label,
        names=names,
        load=load,
        row_note="0-based positions in the input, not index labels",
    )


def _dask_source(ddf: Any) -> _Source:
    names = [str(c) for c in ddf.columns]
    by_name = dict(zip(names, ddf.columns))

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], int]:
        if not columns:
            return {}, len(ddf)
        frame = ddf[[by_name[c] for c in columns]].compute()
        frame.columns = columns
        return _pandas_source(frame, "dask DataFrame").load(columns, strings, roles)

    return _Source(
        label="dask DataFrame",
        names=names,
        load=load,
        row_note="0-based positions over all partitions in order, not index labels",
    )


def _mapping_source(mapping: Mapping[str, Any]) -> _Source:
    from astropy.coordinates import SkyCoord
    from astropy.table import QTable
    from astropy.units import Quantity

    columns: dict[str, Any] = {}
    has_mixin = False
    for key, value in mapping.items():
        if isinstance(value, (SkyCoord, Quantity)):
            has_mixin = True
            columns[str(key)] = value.reshape(1) if value.isscalar else value
        elif value is None or isinstance(value, (str, bytes, int, float, complex, np.generic)):
            columns[str(key)] = [value]
        else:
            columns[str(key)] = value
    try:
        if has_mixin:
            return _table_source(QTable(columns), "dict of columns")
        frame = pd.DataFrame(columns)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(f"cannot make a table of the dict of columns: {err}") from None
    return _pandas_source(frame, "dict of columns")


def _table_source(table: Table, label: str) -> _Source:
    from astropy.coordinates import SkyCoord

    names = list(table.colnames)
    coords: dict[str, Callable[[], tuple[FloatArray, FloatArray]]] = {}
    for name in names:
        col = table[name]
        if isinstance(col, SkyCoord):
            coords[name] = functools.partial(_skycoord_degrees, col)

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, np.ndarray], int]:
        out = {
            c: _table_column_array(table[c], label, c, c in strings, roles.get(c)) for c in columns
        }
        return out, len(table)

    return _Source(
        label=label,
        names=names,
        load=load,
        row_note="0-based table rows",
        coords=coords,
    )


def _skycoord_degrees(coord: SkyCoord) -> tuple[FloatArray, FloatArray]:
    """(ra, dec) in degrees; ICRS and FK5 J2000 are taken as they are, others go to ICRS."""
    from astropy.coordinates import FK5, ICRS
    from astropy.time import Time

    frame = coord.frame
    if not isinstance(frame, ICRS) and not (
        isinstance(frame, FK5) and frame.equinox == Time("J2000")
    ):
        coord = coord.icrs
    sph = coord.spherical
    ra = np.asarray(sph.lon.to_value("deg"), dtype=np.float64).reshape(-1)
    dec = np.asarray(sph.lat.to_value("deg"), dtype=np.float64).reshape(-1)
    return ra, dec


def _table_column_array(
    col: Any, label: str, name: str, as_string: bool, role: str | None
) -> np.ndarray:
    """A column of an astropy Table as a 1-d numpy array, angles converted to degrees."""
    from astropy.coordinates import SkyCoord
    from astropy.units import Quantity

    if isinstance(col, SkyCoord):
        raise InvalidParameterError(
            f"{label}: column {name!r} is a SkyCoord; pass it as ra_col (it gives ra and dec)"
        )
    unit = getattr(col, "unit", None)
    if isinstance(col, Quantity):
        values: np.ndarray = np.asarray(col.value)
    else:
        if not isinstance(col, np.ndarray):
            raise InvalidParameterError(
                f"{label}: column {name!r} is a {type(col).__name__}, not a table column"
            )
        values = col
    if np.ma.isMaskedArray(col) or np.ma.isMaskedArray(values):
        masked = np.ma.getmaskarray(col)
        values = np.asarray(np.ma.getdata(values))
        if masked.any():
            if values.dtype.kind in "fiu" and not as_string:
                values = np.where(masked, np.nan, values.astype(np.float64))
            else:
                values = values.astype(object)
                values[masked] = None
    else:
        values = np.asarray(values)
    if values.ndim != 1:
        raise InvalidParameterError(
            f"{label}: column {name!r} has shape {values.shape}; expected one value per row"
        )
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace").astype(object)
    elif values.dtype.kind == "U":
        values = values.astype(object)
    if role is not None and unit is not None and values.dtype.kind in "fiu":
        values = values.astype(np.float64) * _degrees_per(unit, label, name, role)
    if as_string or values.dtype.kind not in "fiub":
        return values.astype(object) if values.dtype.kind != "O" else values
    return values


def _degrees_per(unit: Any, label: str, name: str, role: str) -> float:
    """Scale from a column's unit to degrees (1.0 if the unit is unknown or dimensionless)."""
    import astropy.units as u

    try:
        unit = u.Unit(unit)
    except (TypeError, ValueError):
        return 1.0
    if isinstance(unit, u.UnrecognizedUnit) or unit == u.dimensionless_unscaled:
        return 1.0
    if unit.is_equivalent(u.deg):
        return float(unit.to(u.deg))
    if unit.is_equivalent(u.hour) and role == "ra":  # RA in hours of time = hours of angle
        return float(unit.to(u.hour)) * 15.0
    raise InvalidParameterError(
        f"{label}: column {name!r} ({role}) has unit {unit}, which is not an angle"
    )


def _series_array(series: pd.Series, as_string: bool) -> np.ndarray:
    """A pandas column as float64 (numeric) or object (anything else) numpy array."""
    dtype = series.dtype
    if (
        not as_string
        and pd.api.types.is_numeric_dtype(dtype)
        and not pd.api.types.is_bool_dtype(dtype)
        and not pd.api.types.is_complex_dtype(dtype)  # complex: not an angle (row errors)
    ):
        if isinstance(dtype, np.dtype) and dtype.kind in "iu":
            return series.to_numpy()
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    if as_string and isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return series.to_numpy()
    return series.to_numpy(dtype=object)


# --------------------------------------------------------------------------------------
# Column detection
# --------------------------------------------------------------------------------------


def _find_column(names: Sequence[str], candidates: Sequence[str]) -> str | None:
    lower: dict[str, list[str]] = {}
    for n in names:
        lower.setdefault(n.strip().lower(), []).append(n)
    for cand in candidates:
        found = lower.get(cand)
        if found:
            return cand if cand in found else found[0]
    return None


def _resolve_given(names: Sequence[str], given: str, arg: str, label: str) -> str:
    if given in names:
        return given
    match = _find_column(names, [given.strip().lower()])
    if match is None:
        raise InvalidParameterError(
            f"{label}: {arg}={given!r} is not one of its columns {list(names)}"
        )
    return match


@dataclass
class _Columns:
    ra: str | None
    dec: str | None
    coord: str | None
    id: str | None
    skycell: str | None


def _choose_columns(
    source: _Source,
    ra_col: str | None,
    dec_col: str | None,
    id_col: str | Literal[False] | None,
    skycell_col: str | Literal[False] | None,
) -> _Columns:
    names, label = source.names, source.label
    coord: str | None = None
    ra = dec = None
    if ra_col is not None:
        ra = _resolve_given(names, ra_col, "ra_col", label)
        if ra in source.coords:
            coord, ra = ra, None
    if dec_col is not None:
        dec = _resolve_given(names, dec_col, "dec_col", label)
        if dec in source.coords:
            if coord is not None and coord != dec:
                raise InvalidParameterError(
                    f"{label}: ra_col={ra_col!r} and dec_col={dec_col!r} are different "
                    "SkyCoord columns"
                )
            coord, dec = dec, None
    if coord is not None:
        if ra is not None or dec is not None:
            raise InvalidParameterError(
                f"{label}: SkyCoord column {coord!r} already gives ra and dec; do not also "
                "name a separate ra_col/dec_col"
            )
    else:
        if ra is None:
            ra = _find_column(names, RA_COLUMNS)
        if dec is None:
            dec = _find_column(names, DEC_COLUMNS)
        if ra is None and dec is None and ra_col is None and dec_col is None and source.coords:
            coord = next(iter(source.coords))
    skycell: str | None = None
    if skycell_col:
        skycell = _resolve_given(names, skycell_col, "skycell_col", label)
    elif skycell_col is None:
        skycell = _find_column(names, SKYCELL_COLUMNS)
    if coord is None and (ra is None) != (dec is None):
        have, want, looked = ("ra", "dec", DEC_COLUMNS) if ra else ("dec", "ra", RA_COLUMNS)
        raise InvalidParameterError(
            f"{label}: found the {have} column {ra or dec!r} but no {want} column. Columns are "
            f"{list(names)}; looked (case-insensitively) for {want} in {list(looked)}. "
            f"Name it with {want}_col=..."
        )
    if coord is None and ra is None and skycell is None:
        raise InvalidParameterError(
            f"{label}: no position columns. Columns are {list(names)}; looked "
            f"(case-insensitively) for ra in {list(RA_COLUMNS)}, dec in {list(DEC_COLUMNS)}, "
            f"a skycell column {list(SKYCELL_COLUMNS)} or a SkyCoord column. Name them with "
            "ra_col=..., dec_col=... (or skycell_col=...)"
        )
    ident: str | None = None
    if id_col:
        ident = _resolve_given(names, id_col, "id_col", label)
    elif id_col is None:
        ident = _find_column(names, ID_COLUMNS)
    used = [c for c in (ra, dec, coord) if c is not None]
    if ident is not None and ident in used:
        raise InvalidParameterError(f"{label}: the id column {ident!r} is also a position column")
    return _Columns(ra=ra, dec=dec, coord=coord, id=ident, skycell=skycell)


# --------------------------------------------------------------------------------------
# Values: angles (numbers, numeric strings, sexagesimal), skycells, ids
# --------------------------------------------------------------------------------------

# All string parsing runs in pyarrow compute kernels (RE2 regular expressions, C++ casts), so
# that a million sexagesimal strings parse in well under a second; Python only touches the
# rare odd objects (bytes, mixed numbers and strings).
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
#: A decimal number (degrees), as accepted by Arrow's string -> float64 cast.
_DECIMAL_RE = r"^[+\-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?$"
#: Sexagesimal or unit-marked angles (RE2 syntax), applied to whitespace-trimmed strings:
#: ``[sign] a [sep b [sep c [s]] | m] | a unit``; separators are blanks, ``:``, ``h``/``d``/``°``
#: then ``m``/``'``/``′``; the seconds may end in ``s``/``"``/``″``/``''``.
_SEXAGESIMAL_RE = (
    r"^(?P<sign>[+\-\x{2212}]?)\s*(?P<a>" + _NUM + r")"
    r"(?:(?P<sep1>\s*[hHdD\x{00b0}:]\s*|\s+)(?P<b>" + _NUM + r")"
    r"(?:(?:\s*[mM'\x{2032}:]\s*|\s+)(?P<c>" + _NUM + r")\s*(?:[sS\"\x{2033}]|'')?"
    r"|\s*[mM'\x{2032}]?)"
    r"|\s*(?P<u0>[hHdD\x{00b0}]))?$"
)
_NONFINITE_WORDS = (
    "nan",
    "+nan",
    "-nan",
    "inf",
    "+inf",
    "-inf",
    "infinity",
    "+infinity",
    "-infinity",
)

# Problem codes (0 = fine). Messages are filled with the axis name.
_OK, _MISSING, _UNPARSABLE, _NONFINITE, _HOURS_RANGE, _MINSEC, _NEGATIVE_RA = range(7)
_DEC_RANGE, _DEC_HOURS, _RA_DEG_RANGE = range(7, 10)
_ANGLE_REASONS = {
    _MISSING: "{axis}: missing value",
    _UNPARSABLE: "{axis}: not an angle (expected degrees, or sexagesimal {form})",
    _NONFINITE: "{axis}: not a finite number",
    _HOURS_RANGE: "ra: sexagesimal hours outside [0, 24)",
    _MINSEC: "{axis}: malformed sexagesimal (minutes and seconds must be < 60, and only the "
    "last field may have decimals)",
    _NEGATIVE_RA: "ra: negative sexagesimal RA",
    _DEC_RANGE: "dec: |dec| > 90 degrees",
    _DEC_HOURS: "dec: given in hours; Dec must be in degrees",
    _RA_DEG_RANGE: "ra: sexagesimal degrees outside [0, 360)",
}
_FORMS = {
    "ra": "hours 'hh mm ss.s' or 'hh:mm:ss.s'",
    "dec": "degrees '+dd mm ss.s' or '+dd:mm:ss.s'",
}


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _arrow_strings(texts: Sequence[Any] | np.ndarray) -> pa.StringArray:
    """Python strings (None for missing) as an Arrow string array; bad UTF-8 is replaced."""
    try:
        return pa.array(texts, type=pa.string(), from_pandas=True)
    except (UnicodeError, pa.ArrowException, TypeError, ValueError):
        clean = [
            None if t is None else _as_text(t).encode("utf-8", errors="replace").decode("utf-8")
            for t in texts
        ]
        return pa.array(clean, type=pa.string())


def _arrow_float(strings: pa.Array) -> FloatArray:
    """Cast Arrow strings to float64; empty strings and nulls become NaN."""
    strings = pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)
    values = pc.cast(strings, pa.float64()).fill_null(np.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _arrow_bool(mask: pa.Array) -> BoolArray:
    return np.asarray(mask.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_angles(
    values: np.ndarray, axis: Literal["ra", "dec"]
) -> tuple[FloatArray, npt.NDArray[np.int8]]:
    """Degrees (NaN where not usable) and a problem code per row.

    Numbers are degrees. Strings are numbers (degrees) or sexagesimal: for RA hours by
    default (``hh mm ss.s``, ``hh:mm:ss.s``, ``hhHmmMss.sS``), degrees with ``d``/``°``
    separators; for Dec always degrees. RA is NOT yet reduced modulo 360.
    """
    n = len(values)
    if values.dtype.kind == "b":  # a boolean column is no coordinate
        return np.full(n, np.nan), np.full(n, _UNPARSABLE, dtype=np.int8)
    if values.dtype.kind in "fiu":
        deg = np.array(values, dtype=np.float64)  # a copy: never write into the caller's data
        codes = np.zeros(n, dtype=np.int8)
        codes[np.isnan(deg)] = _MISSING
        codes[np.isinf(deg)] = _NONFINITE
        return deg, codes

    values = values.astype(object, copy=False)
    series = pd.Series(values, dtype=object, copy=False)
    kind = pd.api.types.infer_dtype(series, skipna=True)
    if kind in ("string", "empty"):
        return _parse_angle_strings(_arrow_strings(values), axis)

    # Mixed objects: numbers as they are, strings through the Arrow parser, rest unparsable.
    missing = series.isna().to_numpy().copy()
    deg = np.full(n, np.nan)
    codes = np.zeros(n, dtype=np.int8)
    codes[missing] = _MISSING
    is_text = np.fromiter((isinstance(v, (str, bytes)) for v in values), dtype=bool, count=n)
    others = np.flatnonzero(~is_text & ~missing)
    for i in others:
        value = values[i]
        if isinstance(value, (bool, np.bool_)):
            codes[i] = _UNPARSABLE
            continue
        try:
            deg[i] = float(value)
        except (TypeError, ValueError, OverflowError):
            codes[i] = _UNPARSABLE
            continue
        if not np.isfinite(deg[i]):
            codes[i] = _NONFINITE
    text_rows = np.flatnonzero(is_text)
    if text_rows.size:
        sub_deg, sub_codes = _parse_angle_strings(
            _arrow_strings([_as_text(values[i]) for i in text_rows]), axis
        )
        deg[text_rows] = sub_deg
        codes[text_rows] = sub_codes
    deg[codes != _OK] = np.nan
    return deg, codes


def _parse_angle_strings(
    strings: pa.Array, axis: Literal["ra", "dec"]
) -> tuple[FloatArray, npt.NDArray[np.int8]]:
    """Vectorised parse of Arrow strings (nulls are missing values) into degrees and codes."""
    n = len(strings)
    trimmed = pc.utf8_trim_whitespace(strings)
    missing = _arrow_bool(pc.or_kleene(pc.is_null(trimmed), pc.equal(trimmed, "")))
    deg = np.full(n, np.nan)
    codes = np.full(n, _UNPARSABLE, dtype=np.int8)
    codes[missing] = _MISSING

    decimal = _arrow_bool(pc.match_substring_regex(trimmed, _DECIMAL_RE))
    if decimal.any():
        deg[decimal] = _arrow_float(pc.filter(trimmed, pa.array(decimal)))
        codes[decimal] = np.where(np.isfinite(deg[decimal]), _OK, _NONFINITE)
    words = _arrow_bool(pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(_NONFINITE_WORDS)))
    codes[words] = _NONFINITE
    rest = np.flatnonzero(~missing & ~decimal & ~words)
    if rest.size:
        sub_deg, sub_codes = _parse_sexagesimal(pc.take(trimmed, pa.array(rest)), axis)
        deg[rest] = sub_deg
        codes[rest] = sub_codes
    deg[codes != _OK] = np.nan
    return deg, codes


def _parse_sexagesimal(
    strings: pa.Array, axis: Literal["ra", "dec"]
) -> tuple[FloatArray, npt.NDArray[np.int8]]:
    """Sexagesimal (or unit-marked) angles of trimmed Arrow strings: degrees and codes."""
    n = len(strings)
    parts = pc.extract_regex(strings, pattern=_SEXAGESIMAL_RE)
    matched = _arrow_bool(parts.is_valid())
    codes = np.full(n, _UNPARSABLE, dtype=np.int8)
    deg = np.full(n, np.nan)
    if not matched.any():
        return deg, codes

    def field_(name: str) -> pa.Array:
        # Unmatched rows of a struct may hold anything in the children: blank them.
        return pc.if_else(parts.is_valid(), parts.field(name), "")

    a, b, c = _arrow_float(field_("a")), _arrow_float(field_("b")), _arrow_float(field_("c"))
    has_b, has_c = ~np.isnan(b), ~np.isnan(c)
    negative = _arrow_bool(pc.is_in(field_("sign"), value_set=pa.array(["-", "\u2212"])))
    sep = pc.utf8_lower(pc.utf8_trim_whitespace(field_("sep1")))
    u0 = pc.utf8_lower(field_("u0"))
    hours_mark = _arrow_bool(pc.or_(pc.equal(sep, "h"), pc.equal(u0, "h")))
    degree_set = pa.array(["d", "\u00b0"])
    degree_mark = _arrow_bool(
        pc.or_(pc.is_in(sep, value_set=degree_set), pc.is_in(u0, value_set=degree_set))
    )
    is_hours = hours_mark | (has_b & ~degree_mark) if axis == "ra" else hours_mark

    with np.errstate(invalid="ignore"):
        magnitude = a + np.where(has_b, b, 0.0) / 60.0 + np.where(has_c, c, 0.0) / 3600.0
        value = np.where(negative, -magnitude, magnitude)
        bad_minsec = (has_b & ((b >= 60.0) | (a != np.floor(a)))) | (
            has_c & ((c >= 60.0) | (b != np.floor(b)))
        )
    code = np.where(np.isfinite(magnitude), _OK, _NONFINITE).astype(np.int8)
    ok = matched & (code == _OK)

    def flag(mask: BoolArray, problem: int) -> None:
        nonlocal ok
        hit = ok & mask
        code[hit] = problem
        ok &= ~hit

    flag(bad_minsec, _MINSEC)
    if axis == "ra":
        flag(negative & (is_hours | has_b), _NEGATIVE_RA)
        flag(is_hours & (magnitude >= 24.0), _HOURS_RANGE)
        flag(~is_hours & has_b & (magnitude >= 360.0), _RA_DEG_RANGE)
        value = np.where(is_hours, value * 15.0, value)
    else:
        flag(is_hours, _DEC_HOURS)
    codes[matched] = code[matched]
    deg[ok] = value[ok]
    return deg, codes


def _parse_skycells(
    values: np.ndarray,
) -> tuple[FloatArray, FloatArray, BoolArray, dict[int, str]]:
    """(ra, dec, present, problems) of a skycell column; ``problems`` maps row -> reason."""
    n = len(values)
    ra = np.full(n, np.nan)
    dec = np.full(n, np.nan)
    problems: dict[int, str] = {}
    if values.dtype.kind == "f":  # 2069.026 read as a number: three decimals are the subcell
        texts: Any = [f"{v:.3f}" if np.isfinite(v) else None for v in values]
    elif values.dtype.kind in "iub":
        texts = values.astype(str)
    else:
        values = values.astype(object, copy=False)
        kind = pd.api.types.infer_dtype(pd.Series(values, dtype=object, copy=False), skipna=True)
        if kind in ("string", "empty"):
            texts = values
        else:
            missing = pd.Series(values, dtype=object, copy=False).isna().to_numpy()
            texts = [
                None if m else (f"{v:.3f}" if isinstance(v, (float, np.floating)) else _as_text(v))
                for v, m in zip(values, missing)
            ]
    strings = pc.utf8_trim_whitespace(_arrow_strings(texts))
    present = ~_arrow_bool(pc.or_kleene(pc.is_null(strings), pc.equal(strings, "")))
    if not present.any():
        return ra, dec, present, problems
    parts = pc.extract_regex(strings, pattern=f"^{SKYCELL_ID_PATTERN}$")
    matched = _arrow_bool(parts.is_valid())
    for i in np.flatnonzero(present & ~matched):
        problems[int(i)] = f"skycell: not a skycell id ({SKYCELL_ID_EXPECTED})"
    good = np.flatnonzero(matched)
    if good.size == 0:
        return ra, dec, present, problems
    take = pa.array(good)
    proj = _arrow_float(pc.take(parts.field("projcell"), take)).astype(np.int64)
    sub = _arrow_float(pc.take(parts.field("subcell"), take)).astype(np.int64)
    keys, inverse = np.unique(proj * 1000 + sub, return_inverse=True)
    centers = np.full((keys.size, 2), np.nan)
    unknown: dict[int, str] = {}
    for k, key in enumerate(keys):
        try:
            centers[k] = skycell_center((int(key // 1000), int(key % 1000)))
        except InvalidSkycellError as err:
            text = str(err)
            unknown[k] = "skycell: " + (text.split(": ", 1)[1] if ": " in text else text)
    ra[good] = centers[inverse, 0]
    dec[good] = centers[inverse, 1]
    if unknown:
        for j in np.flatnonzero(np.isin(inverse, list(unknown))):
            problems[int(good[j])] = unknown[int(inverse[j])]
    return ra, dec, present, problems


def _parse_ids(values: np.ndarray) -> tuple[pd.Series, BoolArray]:
    """Ids as a ``str`` Series (stripped of surrounding blanks) and a 'missing' mask."""
    n = len(values)
    if values.dtype.kind in "iub":
        return pd.Series(values).astype(str), np.zeros(n, dtype=bool)
    if values.dtype.kind == "f":
        missing = ~np.isfinite(values)
        texts: Any = [
            None if m else (str(int(v)) if float(v).is_integer() else repr(float(v)))
            for v, m in zip(values, missing)
        ]
    else:
        values = values.astype(object, copy=False)
        series = pd.Series(values, dtype=object, copy=False)
        kind = pd.api.types.infer_dtype(series, skipna=True)
        if kind in ("string", "empty"):
            texts = values
        else:
            nulls = series.isna().to_numpy()
            texts = [None if m else _id_text(v) for v, m in zip(values, nulls)]
    strings = pc.utf8_trim_whitespace(_arrow_strings(texts))
    missing = _arrow_bool(pc.or_kleene(pc.is_null(strings), pc.equal(strings, "")))
    ids = pd.Series(strings.fill_null("").to_pandas(types_mapper=None), dtype=str)
    return ids, missing


def _id_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def _show(value: Any) -> str:
    """repr of an input value, without numpy's ``np.float64(...)`` decoration."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------------------
# read_positions
# --------------------------------------------------------------------------------------


def read_positions(
    src: PositionSource,
    *,
    ra_col: str | None = None,
    dec_col: str | None = None,
    id_col: str | Literal[False] | None = None,
    skycell_col: str | Literal[False] | None = None,
    skip_bad: bool = False,
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
        source = _open_source(src)
        cols = _choose_columns(source, ra_col, dec_col, id_col, skycell_col)

        wanted = [c for c in (cols.ra, cols.dec, cols.id, cols.skycell) if c is not None]
        wanted = list(dict.fromkeys(wanted))
        strings = {c for c in (cols.id, cols.skycell) if c is not None}
        roles = {c: r for c, r in ((cols.ra, "ra"), (cols.dec, "dec")) if c is not None}
        data, n = source.load(wanted, strings, roles)
    except (PS1DaskError, FileNotFoundError):
        raise
    except _UNREADABLE as err:
        # a corrupt or mislabelled file (not Parquet, not FITS, not gzip, a directory, ...)
        what = f"{os.fspath(src)!r}" if isinstance(src, (str, os.PathLike)) else type(src).__name__
        raise InvalidParameterError(
            f"cannot read positions from {what}: {type(err).__name__}: {err}"
        ) from None
    if cols.coord is not None:
        ra_raw, dec_raw = source.coords[cols.coord]()
        n = len(ra_raw)
    if n == 0:
        raise InvalidParameterError(f"no positions: {source.label} has no rows")

    # --- coordinates --------------------------------------------------------------------
    if cols.coord is not None:
        ra, ra_code = _parse_angles(ra_raw, "ra")
        dec, dec_code = _parse_angles(dec_raw, "dec")
        ra_in: np.ndarray = ra_raw
        dec_in: np.ndarray = dec_raw
    elif cols.ra is not None and cols.dec is not None:
        ra_in, dec_in = data[cols.ra], data[cols.dec]
        ra, ra_code = _parse_angles(ra_in, "ra")
        dec, dec_code = _parse_angles(dec_in, "dec")
    else:
        ra_in = dec_in = np.full(n, np.nan)
        ra, dec = ra_in.copy(), dec_in.copy()
        ra_code = np.full(n, _MISSING, dtype=np.int8)
        dec_code = ra_code.copy()
    dec_code[(dec_code == _OK) & (np.abs(dec) > 90.0)] = _DEC_RANGE

    skycell_problems: dict[int, str] = {}
    no_position = (ra_code == _MISSING) & (dec_code == _MISSING)
    if cols.skycell is not None:
        sc_in = data[cols.skycell]
        sc_ra, sc_dec, sc_present, skycell_problems = _parse_skycells(sc_in)
        use = no_position & sc_present
        ra[use], dec[use] = sc_ra[use], sc_dec[use]
        ra_code[use] = _OK
        dec_code[use] = _OK
        no_position &= ~sc_present

    with np.errstate(invalid="ignore"):  # inf rows are already flagged
        ra = np.mod(ra, 360.0)
    ra[ra >= 360.0] = 0.0  # np.mod(-1e-20, 360) rounds to 360.0

    # --- ids ----------------------------------------------------------------------------
    if cols.id is not None:
        id_in = data[cols.id]
        ids, id_missing = _parse_ids(id_in)
    else:
        id_in = None
        ids = pd.Series(np.arange(n, dtype=np.int64)).astype(str)
        id_missing = np.zeros(n, dtype=bool)

    # --- bad rows -----------------------------------------------------------------------
    bad = (ra_code != _OK) | (dec_code != _OK) | id_missing
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
            what.append(f"ra={_show(ra_in[i])}, dec={_show(dec_in[i])}")
        else:
            for axis, code, raw in (("ra", ra_code[i], ra_in), ("dec", dec_code[i], dec_in)):
                if code != _OK:
                    why.append(_ANGLE_REASONS[int(code)].format(axis=axis, form=_FORMS[axis]))
                    what.append(_show(raw[i]))
        if int(i) in skycell_problems:
            why.append(skycell_problems[int(i)])
            what.append(_show(data[cols.skycell][i]))  # type: ignore[index]
        if id_missing[i]:
            why.append("id: missing value")
            what.append(_show(id_in[i]) if id_in is not None else "None")
        reasons.append("; ".join(why))
        shown.append("; ".join(what))

    keep = ~bad
    if cols.id is not None:
        int_key = id_in if id_in is not None and id_in.dtype.kind in "iu" else None
        dup_rows, dup_message = _duplicates(ids, keep, int_key)
    else:  # row numbers are unique
        dup_rows, dup_message = np.zeros(0, dtype=np.intp), ""
    if bad_rows.size and (not skip_bad or not keep.any()):
        message = _bad_rows_message(source, n, bad_rows, reasons, shown, skip_bad)
        rows = bad_rows.tolist()
        if dup_rows.size:
            message += "\n" + dup_message
            rows = sorted(set(rows) | set(dup_rows.tolist()))
        raise InvalidPositionError(message, rows=rows)
    if dup_rows.size:
        raise InvalidPositionError(f"{source.label}: {dup_message}", rows=dup_rows.tolist())

    skipped = _empty_skipped()
    if bad_rows.size:
        skipped = pd.DataFrame(
            {
                "row": bad_rows.astype(np.int64),
                "reason": pd.Series(reasons, dtype=object),
                "value": pd.Series(shown, dtype=object),
            }
        )
        log.warning(
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
    source: _Source,
    n: int,
    bad_rows: npt.NDArray[np.intp],
    reasons: list[str],
    shown: list[str],
    skip_bad: bool,
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
            "Fix or remove these rows, or pass skip_bad=True to drop them (they are then "
            "listed in PositionTable.skipped)."
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


def _duplicates(
    ids: pd.Series, keep: BoolArray, int_key: np.ndarray | None = None
) -> tuple[npt.NDArray[np.intp], str]:
    """Rows (among ``keep``) whose id is not unique, and a message naming them.

    ``int_key``: the integer id column the ids were formatted from, for a faster check.
    """
    kept = np.flatnonzero(keep)
    all_kept = kept.size == len(ids)
    if int_key is not None and _all_unique_ints(int_key if all_kept else int_key[kept]):
        return np.zeros(0, dtype=np.intp), ""
    series = ids if all_kept else ids.iloc[kept]
    if series.is_unique:
        return np.zeros(0, dtype=np.intp), ""
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
        "0-based row numbers as ids by passing id_col=False (or removing the id column)."
    )
    return np.sort(rows), message
