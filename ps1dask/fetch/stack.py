"""One work unit of a stack job: every (position, filter, stack type) cutout of the unit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ps1dask.client import PS1Service
from ps1dask.conventions import header_zeropoint, image_filename
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import FetchStrategy
from ps1dask.fetch.unit import Cell, UnitFetcher, store_pixels
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage.layout import (
    STACK_FILTER_VARIABLES,
    STACK_VARIABLES,
    STATUS,
    empty_per_cell,
)
from ps1dask.tessellation import SkycellId


class StackUnitFetcher(UnitFetcher):
    """Fetch all stack cutouts of one :class:`WorkUnit` (one Dask task)."""

    variables = STACK_VARIABLES

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
        strategies: Mapping[str, FetchStrategy] | None = None,
    ) -> None:
        n, nf = unit.n_positions, len(filters)
        super().__init__(
            unit,
            inner=(nf,),
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
        self.set_images(STACK_VARIABLES, types, (n, nf, height, width))
        self.status = (
            np.where(unit.fetch, STATUS["pending"], STATUS["outside_footprint"])[:, None]
            .repeat(nf, 1)
            .astype(np.uint8)
        )
        self.meta = empty_per_cell(STACK_FILTER_VARIABLES, (n, nf))

    def on_cutout(self, cell: Cell, image_type: str, pixels: np.ndarray, header: Any) -> None:
        name, dtype, _, _ = STACK_VARIABLES[image_type]
        store_pixels(self.images[name][cell], pixels, dtype)
        if image_type == "stack" and "EXPTIME" in header:
            self.meta["stack_zeropoint"][cell] = header_zeropoint(header)

    def groups(self) -> list[ImageGroup]:
        out = []
        for (projcell, subcell), members in self.unit.skycell_groups():
            sid = SkycellId(projcell, subcell)
            for bi, band in enumerate(self.filters):
                for ti, image_type in enumerate(self.types):
                    out.append(self._group(image_filename(sid, band, image_type), members, bi, ti))
        return out

    def combine(self) -> None:
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
