"""The result of reading positions: :class:`PositionTable`, and what may be read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import numpy.typing as npt
import pandas as pd

from ps1dask.exceptions import InvalidParameterError

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from astropy.coordinates import SkyCoord
    from astropy.table import Table

__all__ = ["BoolArray", "FloatArray", "ObjectArray", "PositionSource", "PositionTable"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]


def empty_skipped() -> pd.DataFrame:
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

    Parameters
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
    skipped: pd.DataFrame = field(default_factory=empty_skipped)

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
