"""Checks of the client's parameters, before any request: positions, skycells, sizes,
numbers and service file names, each refused with an error naming the parameter."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt

from ps1dask.conventions import parse_size
from ps1dask.exceptions import (
    InvalidParameterError,
    InvalidPositionError,
    InvalidSkycellError,
)
from ps1dask.tessellation import SkycellId, SkycellLike
from ps1dask.wire import SKYCELL_ID_EXPECTED, SKYCELL_ID_RE

# --- argument checks -----------------------------------------------------------------------


def degrees(ra: Any, dec: Any) -> tuple[float, float]:
    try:
        ra_f, dec_f = float(ra), float(dec)
    except (TypeError, ValueError):
        raise InvalidPositionError(f"ra={ra!r}, dec={dec!r}: expected numbers in degrees") from None
    if not (math.isfinite(ra_f) and math.isfinite(dec_f)) or abs(dec_f) > 90.0:
        raise InvalidPositionError(
            f"ra={ra!r}, dec={dec!r}: coordinates must be finite degrees with |dec| <= 90"
        )
    return ra_f, dec_f


def position_arrays(ra: npt.ArrayLike, dec: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        ra_arr = np.atleast_1d(np.asarray(ra, dtype=np.float64))
        dec_arr = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    except (TypeError, ValueError) as err:
        raise InvalidPositionError(f"ra and dec must be numbers in degrees: {err}") from None
    if ra_arr.ndim != 1 or dec_arr.shape != ra_arr.shape:
        raise InvalidPositionError(
            f"ra and dec must be 1-d and of equal length, got shapes {ra_arr.shape} and {dec_arr.shape}"
        )
    bad = ~np.isfinite(ra_arr) | ~np.isfinite(dec_arr) | (np.abs(dec_arr) > 90.0)
    if bad.any():
        idx = np.flatnonzero(bad)
        shown = ", ".join(f"{i} (ra={ra_arr[i]!r}, dec={dec_arr[i]!r})" for i in idx[:10])
        more = f" and {idx.size - 10} more" if idx.size > 10 else ""
        raise InvalidPositionError(
            f"invalid position at index {shown}{more}: coordinates must be finite degrees with "
            "|dec| <= 90",
            rows=idx.tolist(),
        )
    return ra_arr, dec_arr


def skycell_param(skycell: SkycellLike) -> str:
    """``PPPP.SSS`` for the service; the format is checked here, existence by the service."""
    if isinstance(skycell, str):
        match = SKYCELL_ID_RE.match(skycell)
        if not match:
            raise InvalidSkycellError(f"{skycell!r} is not a skycell id ({SKYCELL_ID_EXPECTED})")
        projcell, subcell = int(match["projcell"]), int(match["subcell"])
    else:
        try:
            projcell, subcell = (int(v) for v in skycell)
        except (TypeError, ValueError):
            raise InvalidSkycellError(
                f"{skycell!r} is not a skycell id (expected a string or (projcell, subcell))"
            ) from None
    if not (0 <= projcell <= 9999 and 0 <= subcell <= 999):
        raise InvalidSkycellError(f"{skycell!r} is not a skycell id")
    return SkycellId(projcell, subcell).short


def number_param(value: Any, name: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidParameterError(f"{name}={value!r} is not finite")
    return repr(number) if not number.is_integer() else str(int(number))


def size_param(size: int | str | tuple[int, int]) -> tuple[str, tuple[int, int]]:
    width, height = parse_size(size)
    return (str(width) if width == height else f"{width},{height}"), (width, height)


def shortname(filename: str) -> str:
    name = filename.rstrip("/").rsplit("/", 1)[-1]
    if not name:
        raise InvalidParameterError(f"{filename!r} has no file name")
    return name


def file_path(filename: str) -> str:
    """A service file name as a URL path (``/rings.v3.skycell/...``), percent-quoted."""
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidParameterError(f"file name {filename!r} is empty")
    name = filename.strip()
    if "://" in name:
        raise InvalidParameterError(f"give the service file name, not a URL: {filename!r}")
    if not name.startswith("/"):
        name = "/" + name
    return quote(name, safe="/:@!$&'()*+,;=-._~")
