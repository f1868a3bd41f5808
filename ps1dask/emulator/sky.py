"""The emulator's deterministic synthetic sky: stars, variables, transients and warp epochs.

Everything is a pure function of ``(seed, ...)``:

- **Sources** live on the sky. The sphere is cut into tiles (declination bands of
  ``0.05 deg``, each cut into ``floor(360 cos(dec) / 0.05)`` equal RA steps); a tile's stars come
  from a random generator seeded by ``(seed, tile)``. Truth queries, renders of every skycell
  and of neighbouring projection cells therefore see the same stars. A source id is
  ``1000 * global_tile_index + k`` (below 2**53, so it survives JSON).
- **Warp epochs** (single exposures) are drawn per projection cell and filter, so all the
  skycells of a projection cell share them. Exposures come in TTI pairs 15-30 min apart on
  nights when the field is up (PS1 3pi: 2009-06 .. 2014-03), with per-exposure FPA.ZP,
  seeing, airmass and a detector layout (cell and OTA gaps, dead cells, sometimes the edge of
  the 3-degree field of view).
- **Pixels** are defined in the projection cell's integer pixel grid (see
  :mod:`ps1dask.emulator.render`, on the frames of :mod:`ps1dask.emulator.survey`), so overlapping skycells of one projection cell agree.

Magnitudes are AB. ``mag_g .. mag_y`` of a source are its *mean* magnitudes: for a periodic
variable the magnitude of its time-averaged flux, for a transient the quiescent baseline
(what the stacks show). :meth:`SyntheticSky.true_mag` gives the magnitude at any UTC MJD,
which is what a warp exposed at that (mid-exposure) time contains.

Periodic variables are sinusoids in *flux*::

    flux(t) = F_mean * (1 + flux_amplitude * sin(2 pi (t - epoch_mjd) / period + phase))

with ``flux_amplitude = 10**(0.4 * amplitude) - 1``: ``amplitude`` (mag) is how much brighter
than ``mag_*`` the star gets at maximum (the bright-side semi-amplitude; achromatic).

Transients add to their baseline ``F_peak * shape(t - peak_mjd)``, with
``shape = exp(-dt**2 / (2 rise_days**2))`` before the peak and
``10**(-0.4 * decline_mag_per_day * dt)`` after it; ``peak_mags[band]`` is the magnitude of
the transient flux alone at its peak (``peak_mag`` is the r-band value). Peaks fall near one
of the exposures of the source's projection cell (within their time span), so warps see them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ps1dask.emulator import headers, render
from ps1dask.emulator.service_rules import (
    FILTERS,
    STACK_SUFFIXES,
    WARP_SUFFIXES,
    parse_filters,
    parse_types,
)
from ps1dask.emulator.stars import (
    C_DEC,
    C_ID,
    C_RA,
    source_dict,
    star_index,
    star_mags_at,
    stars_in_tiles,
    tile_ranges_for_cap,
)
from ps1dask.emulator.survey import BAND_INDEX, ImageRef, WarpEpoch, check_image, skycell_exposures
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import FIRST_FOOTPRINT_PROJCELL, SkycellId

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io import fits

__all__ = ["ImageRef", "SyntheticSky", "WarpEpoch"]

_FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------
# the public sky
# --------------------------------------------------------------------------------------

# Service order of filters in ps1filenames.py answers: the one real sample lists g, i, r, y, z.
_LIST_FILTER_ORDER = "girzy"
#: Largest truth query (2 degrees: about 5000 sky tiles).
_MAX_TRUTH_RADIUS_ARCSEC = 7200.0


class SyntheticSky:
    """A deterministic synthetic PS1 sky (see the module docstring).

    Thread-safe: the object holds only its seed; caches are process-wide and keyed by seed.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"SyntheticSky(seed={self.seed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SyntheticSky) and other.seed == self.seed

    def __hash__(self) -> int:
        return hash(("SyntheticSky", self.seed))

    # -- listings --------------------------------------------------------------------

    def has_data(self, skycell: SkycellId | str) -> bool:
        sid = skycell if isinstance(skycell, SkycellId) else SkycellId.parse(skycell)
        return sid.projcell >= FIRST_FOOTPRINT_PROJCELL

    def warp_epochs(self, skycell: SkycellId | str, band: str) -> list[WarpEpoch]:
        sid = skycell if isinstance(skycell, SkycellId) else SkycellId.parse(skycell)
        if band not in BAND_INDEX:
            raise InvalidParameterError(f"filter {band!r} is not one of {FILTERS!r}")
        return [e.epoch for e in skycell_exposures(self.seed, sid, band)]

    def images(
        self, skycell: SkycellId | str, bands: str | Sequence[str], types: str | Sequence[str]
    ) -> list[ImageRef]:
        """What ``ps1filenames.py`` lists: stacks first, then warps by filter and epoch.

        Filters come in the order the real service uses (g, i, r, y, z); image types of
        each group in the canonical order of :data:`~ps1dask.emulator.service_rules.IMAGE_TYPES`.
        """
        sid = skycell if isinstance(skycell, SkycellId) else SkycellId.parse(skycell)
        chosen = parse_filters(bands if isinstance(bands, str) else tuple(bands))
        wanted = set(parse_types(types if isinstance(types, str) else tuple(types)))
        if not self.has_data(sid):
            return []
        order = [b for b in _LIST_FILTER_ORDER if b in chosen]
        stack_types = [t for t in STACK_SUFFIXES if t in wanted]
        warp_types = [t for t in WARP_SUFFIXES if t in wanted]
        out = [ImageRef(sid, b, t) for b in order for t in stack_types]
        if warp_types:
            for b in order:
                for ep in self.warp_epochs(sid, b):
                    out.extend(ImageRef(sid, b, t, ep.mjd_listed) for t in warp_types)
        return out

    def check(self, ref: ImageRef) -> None:
        """Raise :class:`~ps1dask.exceptions.NotFoundError` unless the service has this file."""
        check_image(self.seed, ref)

    # -- truth -----------------------------------------------------------------------

    def sources(self, ra: float, dec: float, radius_arcsec: float) -> list[dict[str, Any]]:
        """Truth: every source within ``radius_arcsec`` of (ra, dec), sorted by id."""
        ra, dec, radius = float(ra) % 360.0, float(dec), float(radius_arcsec)
        if not (math.isfinite(ra) and math.isfinite(dec) and abs(dec) <= 90.0):
            raise InvalidParameterError(f"invalid position ({ra}, {dec})")
        if not (math.isfinite(radius) and 0.0 <= radius <= _MAX_TRUTH_RADIUS_ARCSEC):
            raise InvalidParameterError(
                f"radius {radius_arcsec!r} must be 0..{_MAX_TRUTH_RADIUS_ARCSEC:g} arcsec"
            )
        r_deg = radius / 3600.0
        dec_lo, dec_hi = max(dec - r_deg, -90.0), min(dec + r_deg, 90.0)
        full = dec_hi >= 89.999 or dec_lo <= -89.999
        half = 180.0
        if not full:
            cosd = math.cos(math.radians(max(abs(dec_lo), abs(dec_hi))))
            half = min(180.0, r_deg / max(cosd, 1e-9) + 1e-6)
        tiles = tile_ranges_for_cap(dec_lo, dec_hi, ra - half, ra + half, full or half >= 180.0)
        table = stars_in_tiles(self.seed, tiles)
        if table.shape[0] == 0:
            return []
        d1, d2 = np.radians(dec), np.radians(table[:, C_DEC])
        dra = np.radians(table[:, C_RA] - ra)
        hav = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(dra / 2) ** 2
        sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))) * 3600.0
        rows = table[sep <= radius]
        rows = rows[np.argsort(rows[:, C_ID], kind="stable")]
        return [source_dict(r) for r in rows]

    def _source(self, source_id: int) -> dict[str, Any]:
        """Truth of one source by id."""
        table, k = star_index(self.seed, source_id)
        return source_dict(table[k])

    def true_mag(
        self, source: dict[str, Any] | int, band: str, mjd_utc: float | npt.ArrayLike
    ) -> float | _FloatArray:
        """True AB magnitude of a source at UTC MJD(s): what a warp exposed then contains."""
        sid = int(source["id"]) if isinstance(source, dict) else int(source)
        if band not in BAND_INDEX:
            raise InvalidParameterError(f"filter {band!r} is not one of {FILTERS!r}")
        table, k = star_index(self.seed, sid)
        t = np.asarray(mjd_utc, dtype=np.float64)
        mags = star_mags_at(table[k : k + 1], band, t)
        if t.ndim == 0:
            return float(mags[0])
        return np.asarray(mags[0]).reshape(t.shape)

    # -- pixels ----------------------------------------------------------------------

    def image_header(self, ref: ImageRef) -> fits.Header:
        """The image HDU's header of ``ref``'s whole file (a copy)."""
        return headers.image_header(self.seed, ref)

    def render_disk(self, ref: ImageRef, rows: slice, cols: slice) -> npt.NDArray[np.int16]:
        """Stored int16 pixels of a region (0-based row and column slices) of ``ref``."""
        return render.render_disk(self.seed, ref, rows, cols)

    def render_whole(self, ref: ImageRef) -> npt.NDArray[np.int16]:
        """Stored int16 pixels of ``ref``'s whole image."""
        return render.render_whole(self.seed, ref)
