"""One work unit of a warp job: every (position, filter, epoch, warp type) cutout."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.conventions import bad_pixels, image_filename, mid_exposure_mjd_utc, warp_zeropoint
from ps1dask.exceptions import ServiceError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.engine import CutoutEngine, ImageGroup
from ps1dask.fetch.stack import FailureLog, empty_images, to_store_dtype
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage.layout import STATUS, WARP_VARIABLES
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


@dataclass
class WarpUnitResult:
    images: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]
    status: npt.NDArray[np.uint8]
    strategies: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False
    seconds: float = 0.0


def coverage_weights(width: int, height: int, radius: float = COVERAGE_RADIUS) -> npt.NDArray[np.bool_]:
    """Pixels within ``radius`` of the cutout's target pixel (W//2, H//2)."""
    y, x = np.mgrid[:height, :width]
    return (x - width // 2) ** 2 + (y - height // 2) ** 2 <= radius**2


class WarpUnitFetcher:
    """Fetch all warp cutouts of one unit (one Dask task)."""

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
    ) -> None:
        self.unit = work.unit
        self.epochs = work.epochs
        self.filters = filters
        self.types = types
        self.strategy = strategy
        self.n_epochs = n_epochs_max
        n, nf, ne = self.unit.n_positions, len(filters), n_epochs_max
        self.shape = (n, nf, ne)
        self.images = empty_images(WARP_VARIABLES, types, (n, nf, ne, height, width))
        self.meta = {
            "warp_mjd": np.full(self.shape, np.nan),
            "warp_mjd_obs_tai": np.full(self.shape, np.nan),
            "warp_exptime": np.full(self.shape, np.nan, dtype=np.float32),
            "warp_zeropoint": np.full(self.shape, np.nan, dtype=np.float32),
            "warp_coverage": np.full(self.shape, np.nan, dtype=np.float32),
            "warp_psf_fwhm": np.full(self.shape, np.nan, dtype=np.float32),
        }
        self.status = np.zeros(self.shape, dtype=np.uint8)
        self.log = FailureLog()
        self._outcome: dict[tuple[int, int, int, str], int] = {}
        self._lock = threading.Lock()
        self._near = coverage_weights(width, height)
        self.engine = CutoutEngine(
            width=width, height=height, service=service, cache=cache, profile=profile,
            on_cutout=self._on_cutout, on_failure=self._on_failure,
        )

    # members encode (position in unit, band, epoch, type) in one integer
    def _encode(self, i: np.ndarray, bi: int, ei: int, ti: int) -> np.ndarray:
        return ((i * len(self.filters) + bi) * self.n_epochs + ei) * len(self.types) + ti

    def _decode(self, member: int) -> tuple[int, int, int, str]:
        rest, ti = divmod(member, len(self.types))
        rest, ei = divmod(rest, self.n_epochs)
        i, bi = divmod(rest, len(self.filters))
        return i, bi, ei, self.types[ti]

    def _on_cutout(self, member: int, pixels: np.ndarray, header: Any) -> None:
        i, bi, ei, image_type = self._decode(member)
        name, dtype, _, _ = WARP_VARIABLES[image_type]
        with self._lock:
            self.images[name][i, bi, ei] = to_store_dtype(pixels, dtype)
            if image_type == "warp":
                exptime = float(header.get("EXPTIME", np.nan))
                mjd_obs = float(header.get("MJD-OBS", np.nan))
                self.meta["warp_mjd_obs_tai"][i, bi, ei] = mjd_obs
                self.meta["warp_exptime"][i, bi, ei] = exptime
                if np.isfinite(mjd_obs) and np.isfinite(exptime):
                    self.meta["warp_mjd"][i, bi, ei] = mid_exposure_mjd_utc(mjd_obs, exptime)[0]
                if "PSF_FWHM" in header:
                    self.meta["warp_psf_fwhm"][i, bi, ei] = float(header["PSF_FWHM"])
                if "FPA.ZP" in header and exptime > 0:
                    self.meta["warp_zeropoint"][i, bi, ei] = warp_zeropoint(float(header["FPA.ZP"]), exptime)
            self._outcome[(i, bi, ei, image_type)] = STATUS["ok"]

    def _on_failure(self, members: Any, err: ServiceError) -> None:
        for member in members:
            i, bi, ei, image_type = self._decode(int(member))
            outcome = self.log.outcome(f"ra={self.unit.ra[i]:.6f} dec={self.unit.dec[i]:.6f} {self.filters[bi]} epoch {ei} {image_type}", err)
            with self._lock:
                self._outcome[(i, bi, ei, image_type)] = outcome

    def groups(self) -> list[ImageGroup]:
        out = []
        for (projcell, subcell), members in self.unit.skycell_groups():
            sid = SkycellId(projcell, subcell)
            for bi, band in enumerate(self.filters):
                for ei, mjd in enumerate(self.epochs.get((projcell, subcell, band), np.empty(0)).tolist()):
                    for ti, image_type in enumerate(self.types):
                        group = ImageGroup.for_unit(
                            self.unit, image_filename(sid, band, image_type, mjd), members,
                            self._encode(members, bi, ei, ti),
                        )
                        group.strategy = self.engine.choose(group, self.strategy)
                        out.append(group)
        return out

    def run(self) -> WarpUnitResult:
        t0 = time.perf_counter()
        strategies = self.engine.run(self.groups())
        self._combine()
        return WarpUnitResult(
            images=self.images, meta=self.meta, status=self.status, strategies=strategies,
            errors=self.log.errors, unavailable=self.log.unavailable, seconds=time.perf_counter() - t0,
        )

    def _combine(self) -> None:
        flux = self.images["warp_flux"]
        mask = self.images.get("warp_mask")
        for (i, bi, ei, image_type) in list(self._outcome):
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
            self.status[i, bi, ei] = STATUS["ok"] if np.any(np.isfinite(flux[i, bi, ei][self._near])) else STATUS["blank"]
        # positions outside the footprint have no epochs; their status stays 0 (padding)
