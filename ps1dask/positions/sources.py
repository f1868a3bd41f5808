"""Sources: a uniform view (column names + a loader) over files and in-memory tables.

Each kind of input (CSV/text, Parquet, FITS, VOTable, ECSV, pandas, dask, astropy Table,
SkyCoord, dict of columns) becomes a :class:`Source`: its column names, a loader of chosen
columns as 1-d numpy arrays (angles with units converted to degrees; text columns that Arrow
holds stay Arrow arrays), the SkyCoord columns it has and how its rows are numbered in error
messages.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import os
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from ps1dask.exceptions import InvalidParameterError
from ps1dask.positions.table import FloatArray

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

__all__ = ["UNREADABLE", "Column", "Source", "open_source"]

#: A loaded column: a 1-d numpy array, or an Arrow string array (a text column without
#: missing values that Arrow holds already; see :func:`_series_array`).
Column: TypeAlias = "np.ndarray | pa.Array"

_CSV_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_FITS_SUFFIXES = (".fits", ".fit", ".fts")
_VOTABLE_SUFFIXES = (".xml", ".vot", ".votable")
_ECSV_SUFFIXES = (".ecsv",)
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: What reading a corrupt or mislabelled table file raises (turned into InvalidParameterError).
UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    EOFError,
    UnicodeError,
    zlib.error,
    lzma.LZMAError,
    pa.ArrowException,
)


@dataclass
class Source:
    """Column names of a source and a way to load some of them as 1-d numpy arrays."""

    label: str
    names: list[str]
    #: load(columns, string_columns, angle_roles) -> ({name: array}, n_rows)
    load: Callable[[list[str], set[str], dict[str, str]], tuple[dict[str, Column], int]]
    row_note: str
    #: SkyCoord columns: name -> loader of (ra_deg, dec_deg)
    coords: dict[str, Callable[[], tuple[FloatArray, FloatArray]]] = field(default_factory=dict)


def _is_dask_frame(obj: object) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("dask") and hasattr(obj, "compute") and hasattr(obj, "columns")


def open_source(src: Any) -> Source:
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


def _file_source(path: Path) -> Source:
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


def _csv_source(path: Path, compression: str | None) -> Source:
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
    ) -> tuple[dict[str, Column], int]:
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

    return Source(
        label=label,
        names=list(raw_of),
        load=load,
        row_note="0-based data rows: the first row after the header is row 0",
    )


def _parquet_source(path: Path) -> Source:
    import pyarrow.parquet as pq

    names = list(pq.read_schema(path).names)

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, Column], int]:
        frame = pd.read_parquet(path, columns=columns) if columns else pd.DataFrame()
        if not columns:
            return {}, pq.ParquetFile(path).metadata.num_rows
        return {c: _series_array(frame[c], c in strings) for c in columns}, len(frame)

    return Source(
        label=f"Parquet file {str(path)!r}",
        names=names,
        load=load,
        row_note="0-based rows of the Parquet file",
    )


def _fits_source(path: Path) -> Source:
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


def _pandas_source(frame: pd.DataFrame, label: str) -> Source:
    names = [str(c) for c in frame.columns]
    by_name = dict(zip(names, frame.columns))

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, Column], int]:
        out: dict[str, Column] = {}
        for c in columns:
            col = frame[by_name[c]]
            if isinstance(col, pd.DataFrame):
                raise InvalidParameterError(f"{label}: column {c!r} appears more than once")
            out[c] = _series_array(col, c in strings)
        return out, len(frame)

    return Source(
        label=label,
        names=names,
        load=load,
        row_note="0-based positions in the input, not index labels",
    )


def _dask_source(ddf: Any) -> Source:
    names = [str(c) for c in ddf.columns]
    by_name = dict(zip(names, ddf.columns))

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, Column], int]:
        if not columns:
            return {}, len(ddf)
        frame = ddf[[by_name[c] for c in columns]].compute()
        frame.columns = columns
        return _pandas_source(frame, "dask DataFrame").load(columns, strings, roles)

    return Source(
        label="dask DataFrame",
        names=names,
        load=load,
        row_note="0-based positions over all partitions in order, not index labels",
    )


def _mapping_source(mapping: Mapping[str, Any]) -> Source:
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


def _table_source(table: Table, label: str) -> Source:
    from astropy.coordinates import SkyCoord

    names = list(table.colnames)
    coords: dict[str, Callable[[], tuple[FloatArray, FloatArray]]] = {}
    for name in names:
        col = table[name]
        if isinstance(col, SkyCoord):
            coords[name] = functools.partial(_skycoord_degrees, col)

    def load(
        columns: list[str], strings: set[str], roles: dict[str, str]
    ) -> tuple[dict[str, Column], int]:
        out = {
            c: _table_column_array(table[c], label, c, c in strings, roles.get(c)) for c in columns
        }
        return out, len(table)

    return Source(
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


def _series_array(series: pd.Series, as_string: bool) -> np.ndarray | pa.Array:
    """A pandas column as float64 (numeric) or object (anything else) numpy array.

    A text column (``as_string``) that Arrow holds already (pandas 3's ``str``,
    ``string[pyarrow]``, ``ArrowDtype(pa.string())``) with no missing value is returned as
    that Arrow array: 10^7 ids stay ~100 MB of Arrow buffers instead of 10^7 Python strings.
    """
    dtype = series.dtype
    if as_string and _is_arrow_text(dtype):
        strings = pa.array(series)  # zero-copy for an Arrow-backed column
        if isinstance(strings, pa.ChunkedArray):
            strings = strings.combine_chunks()
        if strings.null_count == 0:
            return strings
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


def _is_arrow_text(dtype: Any) -> bool:
    if isinstance(dtype, pd.StringDtype):
        return dtype.storage == "pyarrow"
    if isinstance(dtype, pd.ArrowDtype):
        return pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(
            dtype.pyarrow_dtype
        )
    return False
