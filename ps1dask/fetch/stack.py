"""One work unit of a stack job: every (position, filter, stack type) cutout of the unit."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.conventions import header_zeropoint, image_filename
from ps1dask.exceptions import NotFoundError, ServiceError, ServiceUnavailableError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.engine import CutoutEngine, ImageGroup
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage.layout import MASK_OFF_IMAGE, STACK_VARIABLES, STATUS
from ps1dask.tessellation import SkycellId


@dataclass
class UnitResult:
    """What a unit fetched, ready to be written to its chunks."""

    images: dict[str, np.ndarray]
    status: npt.NDArray[np.uint8]
    zeropoint: npt.NDArray[np.float32]
    strategies: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False
    seconds: float = 0.0


def to_store_dtype(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """Linear float pixels to a store variable's dtype (masks: NaN -> the BLANK bit)."""
    if dtype == "uint16":
        return np.where(np.isnan(pixels), MASK_OFF_IMAGE, pixels).astype(np.uint16)
    return pixels


def empty_images(variables: dict[str, tuple[str, str, str, str]], types: tuple[str, ...], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Arrays of a unit's images, filled as the store's fill values."""
    out = {}
    for t in types:
        name, dtype, _, _ = variables[t]
        out[name] = np.full(shape, MASK_OFF_IMAGE if dtype == "uint16" else np.nan, dtype=dtype)
    return out


class FailureLog:
    """Errors of a unit (first few kept) and whether the service kept refusing us."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unavailable = False
        self._lock = threading.Lock()

    def outcome(self, what: str, err: ServiceError) -> int:
        """The status an error gives: ``no_data`` for 404, else ``failed`` (logged)."""
        if isinstance(err, NotFoundError):
            return STATUS["no_data"]
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(f"{what}: {err}")
            if isinstance(err, ServiceUnavailableError):
                self.unavailable = True
        return STATUS["failed"]


class StackUnitFetcher:
    """Fetch all stack cutouts of one :class:`WorkUnit` (one Dask task)."""

    def __init__(
        self,
        unit: WorkUnit,
        *,
        filters: str,
        types: tuple[str, ...],
        width: int,
        height: int,
        strategy: str,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
    ) -> None:
        self.unit = unit
        self.filters = filters
        self.types = types
        self.strategy = strategy
        n, nf = unit.n_positions, len(filters)
        self.images = empty_images(STACK_VARIABLES, types, (n, nf, height, width))
        self.status = np.where(unit.fetch, STATUS["pending"], STATUS["outside_footprint"])[:, None].repeat(nf, 1).astype(np.uint8)
        self.zeropoint = np.full((n, nf), np.nan, dtype=np.float32)
        self.log = FailureLog()
        self._outcome: dict[tuple[int, int, str], int] = {}
        self._lock = threading.Lock()
        self.engine = CutoutEngine(
            width=width, height=height, service=service, cache=cache, profile=profile,
            on_cutout=self._on_cutout, on_failure=self._on_failure,
        )
        self._groups: list[tuple[ImageGroup, int, str]] = []

    def _on_cutout(self, member: int, pixels: np.ndarray, header: Any) -> None:
        i, bi, image_type = self._decode(member)
        name, dtype, _, _ = STACK_VARIABLES[image_type]
        with self._lock:
            self.images[name][i, bi] = to_store_dtype(pixels, dtype)
            if image_type == "stack" and "EXPTIME" in header:
                self.zeropoint[i, bi] = header_zeropoint(header)
            self._outcome[(i, bi, image_type)] = STATUS["ok"]

    def _on_failure(self, members: Any, err: ServiceError) -> None:
        for member in members:
            i, bi, image_type = self._decode(int(member))
            outcome = self.log.outcome(f"{self.unit_position(i)} {self.filters[bi]} {image_type}", err)
            with self._lock:
                self._outcome[(i, bi, image_type)] = outcome

    # members encode (position in unit, band, type) in one integer
    def _encode(self, i: np.ndarray, bi: int, ti: int) -> np.ndarray:
        return (i * len(self.filters) + bi) * len(self.types) + ti

    def _decode(self, member: int) -> tuple[int, int, str]:
        rest, ti = divmod(member, len(self.types))
        i, bi = divmod(rest, len(self.filters))
        return i, bi, self.types[ti]

    def unit_position(self, i: int) -> str:
        return f"ra={self.unit.ra[i]:.6f} dec={self.unit.dec[i]:.6f}"

    def groups(self) -> list[ImageGroup]:
        out = []
        for (projcell, subcell), members in self.unit.skycell_groups():
            sid = SkycellId(projcell, subcell)
            for bi, band in enumerate(self.filters):
                for ti, image_type in enumerate(self.types):
                    group = ImageGroup.for_unit(
                        self.unit, image_filename(sid, band, image_type), members, self._encode(members, bi, ti)
                    )
                    group.strategy = self.engine.choose(group, self.strategy)
                    out.append(group)
        return out

    def run(self) -> UnitResult:
        t0 = time.perf_counter()
        strategies = self.engine.run(self.groups())
        self._combine()
        return UnitResult(
            images=self.images, status=self.status, zeropoint=self.zeropoint, strategies=strategies,
            errors=self.log.errors, unavailable=self.log.unavailable, seconds=time.perf_counter() - t0,
        )

    def _combine(self) -> None:
        flux = self.images["stack_flux"]
        for i in np.flatnonzero(self.unit.fetch).tolist():
            for bi in range(len(self.filters)):
                outcomes = [self._outcome.get((i, bi, t), STATUS["failed"]) for t in self.types]
                main = self._outcome.get((i, bi, "stack"), STATUS["failed"])
                if STATUS["failed"] in outcomes:
                    self.status[i, bi] = STATUS["failed"]
                elif main == STATUS["no_data"]:
                    self.status[i, bi] = STATUS["no_data"]
                elif not np.any(np.isfinite(flux[i, bi])):
                    self.status[i, bi] = STATUS["blank"]
                else:
                    self.status[i, bi] = STATUS["ok"]
