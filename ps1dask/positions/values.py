"""Value parsing: angles (numbers, numeric strings, sexagesimal), skycell ids and ids.

Pure computation, no I/O: each parser takes a 1-d numpy array of raw values and returns
degrees (or text) plus a per-row problem code or reason, so that every bad row of a table is
reported at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ps1dask.exceptions import InvalidSkycellError
from ps1dask.positions.table import BoolArray, FloatArray
from ps1dask.tessellation import skycell_center
from ps1dask.wire import SKYCELL_ID_EXPECTED, SKYCELL_ID_PATTERN

__all__ = [
    "ANGLE_FORMS",
    "ANGLE_REASONS",
    "CODE_DEC_RANGE",
    "CODE_MISSING",
    "CODE_OK",
    "integer_ids",
    "parse_angles",
    "parse_ids",
    "parse_skycells",
    "show_value",
]

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
CODE_OK, CODE_MISSING, _UNPARSABLE, _NONFINITE, _HOURS_RANGE, _MINSEC, _NEGATIVE_RA = range(7)
CODE_DEC_RANGE, _DEC_HOURS, _RA_DEG_RANGE = range(7, 10)
ANGLE_REASONS = {
    CODE_MISSING: "{axis}: missing value",
    _UNPARSABLE: "{axis}: not an angle (expected degrees, or sexagesimal {form})",
    _NONFINITE: "{axis}: not a finite number",
    _HOURS_RANGE: "ra: sexagesimal hours outside [0, 24)",
    _MINSEC: "{axis}: malformed sexagesimal (minutes and seconds must be < 60, and only the "
    "last field may have decimals)",
    _NEGATIVE_RA: "ra: negative sexagesimal RA",
    CODE_DEC_RANGE: "dec: |dec| > 90 degrees",
    _DEC_HOURS: "dec: given in hours; Dec must be in degrees",
    _RA_DEG_RANGE: "ra: sexagesimal degrees outside [0, 360)",
}
ANGLE_FORMS = {
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


def parse_angles(
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
        codes[np.isnan(deg)] = CODE_MISSING
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
    codes[missing] = CODE_MISSING
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
    deg[codes != CODE_OK] = np.nan
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
    codes[missing] = CODE_MISSING

    decimal = _arrow_bool(pc.match_substring_regex(trimmed, _DECIMAL_RE))
    if decimal.any():
        deg[decimal] = _arrow_float(pc.filter(trimmed, pa.array(decimal)))
        codes[decimal] = np.where(np.isfinite(deg[decimal]), CODE_OK, _NONFINITE)
    words = _arrow_bool(pc.is_in(pc.utf8_lower(trimmed), value_set=pa.array(_NONFINITE_WORDS)))
    codes[words] = _NONFINITE
    rest = np.flatnonzero(~missing & ~decimal & ~words)
    if rest.size:
        sub_deg, sub_codes = _parse_sexagesimal(pc.take(trimmed, pa.array(rest)), axis)
        deg[rest] = sub_deg
        codes[rest] = sub_codes
    deg[codes != CODE_OK] = np.nan
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
    code = np.where(np.isfinite(magnitude), CODE_OK, _NONFINITE).astype(np.int8)
    ok = matched & (code == CODE_OK)

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


def parse_skycells(
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


def parse_ids(values: np.ndarray | pa.Array) -> tuple[pd.Series, BoolArray]:
    """Ids as a ``str`` Series (stripped of surrounding blanks) and a 'missing' mask.

    ``values``: a numpy array, or Arrow strings (kept in Arrow: no Python string per id).
    """
    n = len(values)
    if isinstance(values, pa.Array):
        strings = values
    elif values.dtype.kind in "iu":
        return integer_ids(values), np.zeros(n, dtype=bool)
    elif values.dtype.kind == "b":
        return pd.Series(values).astype(str), np.zeros(n, dtype=bool)
    else:
        texts: Any
        if values.dtype.kind == "f":
            missing = ~np.isfinite(values)
            texts = [
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
        strings = _arrow_strings(texts)
    strings = pc.utf8_trim_whitespace(strings)
    missing = _arrow_bool(pc.or_kleene(pc.is_null(strings), pc.equal(strings, "")))
    return _str_series(strings.fill_null("")), missing


def integer_ids(values: npt.NDArray[np.integer[Any]]) -> pd.Series:
    """Integers as ``str`` ids (``str(int)``: Arrow's cast writes the same decimal digits)."""
    native = values.astype(values.dtype.newbyteorder("="), copy=False)  # FITS: big-endian
    return _str_series(pc.cast(pa.array(native), pa.string()))


def _str_series(strings: pa.Array) -> pd.Series:
    """Arrow strings as a pandas ``str`` Series (Arrow-backed under pandas 3: no copy to
    Python strings; object under pandas 2)."""
    return pd.Series(strings, dtype=str)


def _id_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def show_value(value: Any) -> str:
    """repr of an input value, without numpy's ``np.float64(...)`` decoration."""
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
