"""One work unit of a warp job: every (position, filter, epoch, warp type) cutout."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.conventions import bad_pixels, image_filename, mid_exposure_mjd_utc, warp_zeropoint
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import FetchStrategy
from ps1dask.fetch.unit import Cell, UnitFetcher, store_pixels
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit, unit_work_pixels
from ps1dask.storage.layout import STATUS, WARP_EPOCH_VARIABLES, WARP_VARIABLES, empty_per_cell
from ps1dask.tessellation import SkycellId

#: Radius (pixels) around the position within which ``warp_coverage`` is measured.
COVERAGE_RADIUS = 10.0


@dataclass
class WarpUnit:
    """A work unit plus the warp epochs of its skycells: ``epochs[(projcell, subcell, band)]``
    is the sorted array of listed MJDs (the service's file names)."""

    unit: WorkUnit
    epochs: dict[tuple[int, int, str], npt.NDArray[np.float64]]

    @property
    def index(self) -> int:
        return self.unit.index

    @property
    def n_positions(self) -> int:
        return self.unit.n_positions

    def work_pixels(self, width: int, height: int, profile: ServiceProfile) -> float:
        """Its CPU work for a strategy that decodes whole rows: its unit's, once per warp
        file listed for each skycell (:func:`ps1dask.planning.unit_work_pixels`)."""
        images: dict[tuple[int, int], int] = {}
        for (projcell, subcell, _), mjds in self.epochs.items():
            images[(projcell, subcell)] = images.get((projcell, subcell), 0) + len(mjds)
        return unit_work_pixels(self.unit, width, height, profile, images)


@functools.lru_cache(maxsize=16)
def coverage_weights(
    width: int, height: int, radius: float = COVERAGE_RADIUS
) -> npt.NDArray[np.bool_]:
    """Pixels within ``radius`` of the cutout's target pixel (W//2, H//2) (read-only: one
    array per size, shared by the units of a process)."""
    y, x = np.ogrid[:height, :width]
    near = (x - width // 2) ** 2 + (y - height // 2) ** 2 <= radius**2
    near.setflags(write=False)
    return near


class WarpUnitFetcher(UnitFetcher):
    """Fetch all warp cutouts of one unit (one Dask task)."""

    variables = WARP_VARIABLES

    def __init__(
        self,
        work: WarpUnit,
        *,
        filters: str,
        types: tuple[str, ...],
        n_epochs_max: int,
        width: int,
        height: int,
        strategy: str,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
        strategies: Mapping[str, FetchStrategy] | None = None,
    ) -> None:
        n, nf, ne = work.unit.n_positions, len(filters), n_epochs_max
        super().__init__(
            work.unit,
            inner=(nf, ne),
            filters=filters,
            types=types,
            width=width,
            height=height,
            strategy=strategy,
            service=service,
            cache=cache,
            profile=profile,
            strategies=strategies,
        )
        self.epochs = work.epochs
        self.n_epochs = n_epochs_max
        self.shape = (n, nf, ne)
        self.set_images(WARP_VARIABLES, types, (n, nf, ne, height, width))
        self.meta = empty_per_cell(WARP_EPOCH_VARIABLES, self.shape)
        self.status = np.zeros(self.shape, dtype=np.uint8)
        self._near = coverage_weights(width, height)

    def describe(self, cell: Cell) -> str:
        return f"{super().describe(cell)} epoch {cell[2]}"

    def on_cutout(self, cell: Cell, image_type: str, pixels: np.ndarray, header: Any) -> None:
        name, dtype, _, _ = WARP_VARIABLES[image_type]
        store_pixels(self.images[name][cell], pixels, dtype)
        if image_type != "warp":
            return
        exptime = float(header.get("EXPTIME", np.nan))
        mjd_obs = float(header.get("MJD-OBS", np.nan))
        self.meta["warp_mjd_obs_tai"][cell] = mjd_obs
        self.meta["warp_exptime"][cell] = exptime
        if np.isfinite(mjd_obs) and np.isfinite(exptime):
            self.meta["warp_mjd"][cell] = mid_exposure_mjd_utc(mjd_obs, exptime)[0]
        if "PSF_FWHM" in header:
            self.meta["warp_psf_fwhm"][cell] = float(header["PSF_FWHM"])
        if "FPA.ZP" in header and exptime > 0:
            self.meta["warp_zeropoint"][cell] = warp_zeropoint(float(header["FPA.ZP"]), exptime)

    def groups(self) -> list[ImageGroup]:
        out = []
        for (projcell, subcell), members in self.unit.skycell_groups():
            sid = SkycellId(projcell, subcell)
            for bi, band in enumerate(self.filters):
                for ei, mjd in enumerate(
                    self.epochs.get((projcell, subcell, band), np.empty(0)).tolist()
                ):
                    for ti, image_type in enumerate(self.types):
                        out.append(
                            self._group(
                                image_filename(sid, band, image_type, mjd), members, bi, ei, ti
                            )
                        )
        return out

    def combine(self) -> None:
        flux = self.images["warp_flux"]
        mask = self.images.get("warp_mask")
        for i, bi, ei, image_type in list(self._outcome):
            if image_type != "warp":
                continue
            outcomes = [self._outcome.get((i, bi, ei, t), STATUS["failed"]) for t in self.types]
            main = self._outcome[(i, bi, ei, "warp")]
            if STATUS["failed"] in outcomes:
                self.status[i, bi, ei] = STATUS["failed"]
                continue
            if main == STATUS["no_data"]:
                self.status[i, bi, ei] = STATUS["no_data"]
                continue
            usable = np.isfinite(flux[i, bi, ei])
            if mask is not None:
                usable &= ~bad_pixels(mask[i, bi, ei])
            near = usable[self._near]
            coverage = float(near.mean()) if near.size else 0.0
            self.meta["warp_coverage"][i, bi, ei] = coverage
            # no usable pixel near the position: a blank warp, recorded and never refetched
            self.status[i, bi, ei] = (
                STATUS["ok"]
                if np.any(np.isfinite(flux[i, bi, ei][self._near]))
                else STATUS["blank"]
            )
        # positions outside the footprint have no epochs; their status stays 0 (padding)
