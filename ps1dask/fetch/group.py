"""What a fetch strategy works on: one service image and the cutouts to take from it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.exceptions import ServiceError

#: ``on_cutout(member, pixels, header)``: a cutout (linear float32, NaN off-image) is ready.
OnCutout = Callable[[int, npt.NDArray[np.float32], Any], None]
#: ``on_failure(members, error)``: these members of the group could not be fetched.
OnFailure = Callable[[Sequence[int], ServiceError], None]
#: ``destination(member)``: the array the member's pixels go to, if it can be filled in place.
Destination = Callable[[int], npt.NDArray[np.float32] | None]


@dataclass
class ImageGroup:
    """One service image and the cutouts to take from it.

    ``members`` are the caller's indices (reported back); ``ra``, ``dec`` (degrees), ``x0``,
    ``y0`` (pixels) give each member's position and fitscut box origin (0-based) in the image;
    ``strategy`` is the registered name of the strategy that fetches the group.
    """

    filename: str
    members: npt.NDArray[np.int64]
    ra: npt.NDArray[np.float64]
    dec: npt.NDArray[np.float64]
    x0: npt.NDArray[np.int64]
    y0: npt.NDArray[np.int64]
    strategy: str = "cutout"
    #: rows [read_lo, read_hi) of the image that a ``range`` read claims for each member:
    #: the job's pieces its box touches (:mod:`ps1dask.planning.row_pieces`); None: the
    #: group's own rows only
    read_lo: npt.NDArray[np.integer] | None = None
    read_hi: npt.NDArray[np.integer] | None = None

    @classmethod
    def for_unit(
        cls, unit: Any, filename: str, local: npt.NDArray[np.int64], members: npt.NDArray[np.int64]
    ) -> ImageGroup:
        """The group of a work unit's positions ``local`` (indices in the unit) in one image."""
        lo, hi = unit.read_lo, unit.read_hi
        return cls(
            filename,
            members,
            unit.ra[local],
            unit.dec[local],
            unit.x0[local],
            unit.y0[local],
            read_lo=None if lo is None else lo[local],
            read_hi=None if hi is None else hi[local],
        )
