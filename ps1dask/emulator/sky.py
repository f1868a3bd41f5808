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
  :mod:`ps1dask.emulator.render`), so overlapping skycells of one projection cell agree.

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

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ps1dask.conventions import (
    FILTERS,
    IMAGE_TYPES,
    STACK_TYPES,
    WARP_TYPES,
    image_filename,
    mid_exposure_mjd_utc,
    parse_filename,
    parse_filters,
    parse_types,
    utc_to_tai_mjd,
)
from ps1dask.exceptions import InvalidParameterError, NotFoundError
from ps1dask.tessellation import FIRST_FOOTPRINT_PROJCELL, SkycellId
from ps1dask.tessellation._core import (
    HEADER_CDELT_DEG,
    PIXEL_SCALE_DEG,
    SKYCELL_PAD,
    deproject,
    locate_arrays,
    project,
    skycell_geometry,
)

if TYPE_CHECKING:  # pragma: no cover
    from astropy.io import fits

__all__ = ["ImageRef", "SyntheticSky", "WarpEpoch"]

_FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------------------
# survey constants
# --------------------------------------------------------------------------------------

_BAND_INDEX = {b: i for i, b in enumerate(FILTERS)}
#: Single-exposure times of the PS1 3pi survey (s).
_WARP_EXPTIME = {"g": 43.0, "r": 40.0, "i": 45.0, "z": 30.0, "y": 30.0}
#: Nominal FPA.ZP (AB mag giving 1 count/s) at airmass 1 in clear weather.
_FPA_ZP_NOMINAL = {"g": 24.58, "r": 24.78, "i": 24.74, "z": 24.52, "y": 24.46}
#: Median single-exposure seeing (arcsec FWHM) per filter.
_SEEING_MEDIAN = {"g": 1.31, "r": 1.19, "i": 1.11, "z": 1.07, "y": 1.02}
#: 5-sigma point-source depth of one warp at nominal seeing and zero point.
_WARP_DEPTH = {"g": 22.0, "r": 21.8, "i": 21.5, "z": 20.9, "y": 19.7}
#: 5-sigma point-source depth of a stack of ``_STACK_DEPTH_NREF`` exposures.
_STACK_DEPTH = {"g": 23.3, "r": 23.2, "i": 23.1, "z": 22.3, "y": 21.3}
_STACK_DEPTH_NREF = 20
#: Warp counts above which a detector pixel saturates.
_SATURATION_COUNTS = 55000.0

_SURVEY_START_MJD = 54983.0  # 2009-06-01
_SURVEY_END_MJD = 56747.0  # 2014-03-31
_MARCH_EQUINOX_MJD = 55275.73  # 2010-03-20 17:32 UTC: the Sun at RA 0
_YEAR_DAYS = 365.2422
_SITE_LATITUDE_DEG = 20.7083  # Haleakala
_SITE_UTC_OFFSET_H = 10.0  # HST = UTC - 10 h
#: Reference epoch (UTC MJD) of the phases of periodic variables.
_PHASE_EPOCH_MJD = 55000.0
#: Radius of the GPC1 field of view (3 deg diameter) in skycell pixels.
_FOV_RADIUS_PX = round(1.5 / PIXEL_SCALE_DEG)

# star field
_TILE_DEG = 0.05
_N_DEC_BANDS = round(180.0 / _TILE_DEG)
_IDS_PER_TILE = 1000
_MAG_BRIGHT = 13.0
_MAG_FAINT = 23.5
_COUNT_SLOPE = 0.3  # N(<m) ~ 10**(0.3 m)
_FRAC_PERIODIC = 0.04
_FRAC_TRANSIENT = 0.01

# columns of a tile's star table (one float64 row per star)
_C_ID, _C_RA, _C_DEC = 0, 1, 2
_C_MAG = 3  # .. 7: mean (baseline) AB mag in g r i z y
_C_KIND = 8  # 0 constant, 1 periodic, 2 transient
_C_PERIOD, _C_AMP, _C_PHASE = 9, 10, 11
_C_PEAK, _C_RISE, _C_DECLINE = 12, 13, 14
_C_PEAKMAG = 15  # .. 19: transient-only AB mag at peak in g r i z y
_N_COLS = 20
_KIND_CONSTANT, _KIND_PERIODIC, _KIND_TRANSIENT = 0, 1, 2
_KIND_NAMES = {_KIND_CONSTANT: "constant", _KIND_PERIODIC: "periodic", _KIND_TRANSIENT: "transient"}

_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------
# hashing and seeding
# --------------------------------------------------------------------------------------


def _mix64(z: int) -> int:
    """The splitmix64 finaliser on a Python int (a bijection of 64-bit values)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _hash_ints(*values: int) -> int:
    """A 64-bit hash of a sequence of integers (any sign), stable across runs and machines."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _mix64((h + (int(v) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64)
    return h


def _rng(*values: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(_hash_ints(*values)))


# stream tags, so that no two uses of (seed, ...) share a generator
_TAG_TILE, _TAG_EPOCHS, _TAG_STACK, _TAG_WARP, _TAG_NIGHT, _TAG_CR = 11, 12, 13, 14, 15, 16


# --------------------------------------------------------------------------------------
# projection-cell frames
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProjcellFrame:
    """The integer pixel grid shared by the 100 skycells of one projection cell.

    Global pixel ``(X, Y)`` of skycell ``k, j`` (subcell ``10 j + k``) is its 0-based
    ``(col, row)`` plus ``(off_x, off_y) = (-px (5 - k), -py (5 - j))``; the tangent point sits
    at ``X = crpix1 - 1, Y = crpix2 - 1`` (the zone's CRPIX, possibly half-integer).
    """

    projcell: int
    zone: int
    crval1: float
    crval2: float
    crpix1: float  #: zone CRPIX1 (that of subcell k=5, j=5)
    crpix2: float
    px: int  #: XCELL - 480, the step between skycell columns
    py: int
    naxis1: int
    naxis2: int

    @property
    def x_min(self) -> int:
        return -5 * self.px

    @property
    def x_max(self) -> int:  # exclusive
        return 4 * self.px + self.naxis1

    @property
    def y_min(self) -> int:
        return -5 * self.py

    @property
    def y_max(self) -> int:
        return 4 * self.py + self.naxis2

    def offset(self, subcell: int) -> tuple[int, int]:
        """(off_x, off_y): global pixel = skycell 0-based pixel + offset."""
        k, j = subcell % 10, subcell // 10
        return -self.px * (5 - k), -self.py * (5 - j)

    def to_global(self, ra: _FloatArray, dec: _FloatArray) -> tuple[_FloatArray, _FloatArray]:
        """Sky to global (fractional) pixel coordinates, pixel centres at integers.

        Uses the scale the headers write (CDELT = HEADER_CDELT_DEG) with the arithmetic of
        :func:`ps1dask.conventions.position_pixel`, so a star sits exactly where its image
        header's WCS puts it.
        """
        x, y = project(ra, dec, self.crval1, self.crval2, HEADER_CDELT_DEG)  # type: ignore[arg-type]
        return x + (self.crpix1 - 1.0), y + (self.crpix2 - 1.0)

    def to_sky(self, gx: _FloatArray, gy: _FloatArray) -> tuple[_FloatArray, _FloatArray]:
        """Approximate inverse of :meth:`to_global` (exact 0.25" scale; RA in [0, 360))."""
        return deproject(
            np.asarray(gx, dtype=np.float64) - (self.crpix1 - 1.0),
            np.asarray(gy, dtype=np.float64) - (self.crpix2 - 1.0),
            self.crval1,  # type: ignore[arg-type]
            self.crval2,  # type: ignore[arg-type]
        )


@functools.lru_cache(maxsize=4096)
def _projcell_frame(projcell: int) -> _ProjcellFrame:
    geo = skycell_geometry(projcell, 55)
    return _ProjcellFrame(
        projcell=projcell,
        zone=geo.zone,
        crval1=geo.crval1,
        crval2=geo.crval2,
        crpix1=geo.crpix1,
        crpix2=geo.crpix2,
        px=geo.naxis1 - SKYCELL_PAD,
        py=geo.naxis2 - SKYCELL_PAD,
        naxis1=geo.naxis1,
        naxis2=geo.naxis2,
    )


# --------------------------------------------------------------------------------------
# public value types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """One PS1 image file: skycell, filter, image type and (warps) the listed MJD."""

    skycell: SkycellId
    band: str
    image_type: str
    mjd: float | None = None

    def __post_init__(self) -> None:
        sid = self.skycell if isinstance(self.skycell, SkycellId) else SkycellId.parse(self.skycell)
        object.__setattr__(self, "skycell", sid)
        if self.band not in _BAND_INDEX:
            raise InvalidParameterError(f"filter {self.band!r} is not one of {FILTERS!r}")
        if self.image_type not in IMAGE_TYPES:
            raise InvalidParameterError(
                f"unknown image type {self.image_type!r}; known: {sorted(IMAGE_TYPES)}"
            )
        if self.image_type in WARP_TYPES:
            if self.mjd is None or not math.isfinite(float(self.mjd)) or float(self.mjd) <= 0:
                raise InvalidParameterError(f"a {self.image_type} image needs its MJD")
            object.__setattr__(self, "mjd", float(self.mjd))
        else:
            if self.mjd not in (None, 0, 0.0):
                raise InvalidParameterError(f"a {self.image_type} image has no MJD ({self.mjd!r})")
            object.__setattr__(self, "mjd", None)

    @property
    def is_warp(self) -> bool:
        return self.image_type in WARP_TYPES

    @property
    def filename(self) -> str:
        return image_filename(self.skycell, self.band, self.image_type, self.mjd)

    @property
    def shortname(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @classmethod
    def from_filename(cls, name: str) -> ImageRef:
        parsed = parse_filename(name)
        return cls(parsed.skycell, parsed.band, parsed.image_type, parsed.mjd)


@dataclass(frozen=True)
class WarpEpoch:
    """One single exposure of a projection cell in one filter.

    ``index`` is the exposure's position among all the exposures of its projection cell and
    filter (a stable id: a skycell that one exposure does not reach skips its index).
    """

    index: int
    mjd_obs_tai: float
    mjd_listed: float
    exptime: float
    fpa_zp: float
    seeing_fwhm_arcsec: float
    airmass: float = 1.0
    exposure_name: str = ""

    @property
    def mjd_mid_utc(self) -> float:
        return float(mid_exposure_mjd_utc(self.mjd_obs_tai, self.exptime)[0])


@dataclass(frozen=True)
class _Layout:
    """Where one exposure has pixels, in its projection cell's global pixel grid.

    Along each axis the camera is a periodic row of OTAs, each 8 cells of ``cell`` pixels
    (the first ``cell_gap`` of them dead) followed by an OTA gap: ``period = 8 cell + ota_gap``.
    A few cells are dead (``dead_cell_key``); ``circle`` (cx, cy, R) is the field-of-view edge
    for exposures whose footprint leaves part of the projection cell uncovered.
    """

    ox: int
    oy: int
    cell_x: int
    cell_y: int
    cell_gap_x: int
    cell_gap_y: int
    ota_gap_x: int
    ota_gap_y: int
    dead_cell_key: int
    circle: tuple[int, int, int] | None = None

    @property
    def period_x(self) -> int:
        return 8 * self.cell_x + self.ota_gap_x

    @property
    def period_y(self) -> int:
        return 8 * self.cell_y + self.ota_gap_y


@dataclass(frozen=True)
class _Exposure:
    """Everything the renderer needs about one warp epoch (private to the emulator)."""

    epoch: WarpEpoch
    band: str
    projcell: int
    layout: _Layout
    t_mid_utc: float
    night: int


# --------------------------------------------------------------------------------------
# warp epochs
# --------------------------------------------------------------------------------------

_EDGE_NIGHT_PROB = 0.4
_MAX_EDGE_EXPOSURES = 12


def _airmass(dec_deg: float, hour_angle_h: float) -> float:
    phi, dec = math.radians(_SITE_LATITUDE_DEG), math.radians(dec_deg)
    cos_z = math.sin(phi) * math.sin(dec) + math.cos(phi) * math.cos(dec) * math.cos(
        math.radians(15.0 * hour_angle_h)
    )
    return float(min(max(1.0 / max(cos_z, 0.2), 1.0), 3.0))


@functools.lru_cache(maxsize=2048)
def _projcell_exposures(seed: int, projcell: int, band: str) -> tuple[_Exposure, ...]:
    """All the exposures of one projection cell in one filter, sorted by time (cached)."""
    if projcell < FIRST_FOOTPRINT_PROJCELL:
        return ()
    frame = _projcell_frame(projcell)
    bidx = _BAND_INDEX[band]
    rng = _rng(seed, _TAG_EPOCHS, projcell, bidx)
    n_exp = int(rng.integers(10, 31))
    sizes = [2] * (n_exp // 2) + [1] * (n_exp % 2)
    sizes = [sizes[i] for i in rng.permutation(len(sizes))]

    # observing seasons: the field is best placed at night around opposition to the Sun
    ra0 = frame.crval1
    t_opp0 = _MARCH_EQUINOX_MJD + ((ra0 + 180.0) % 360.0) / 360.0 * _YEAR_DAYS
    seasons = []
    for year in range(-3, 7):
        t_opp = t_opp0 + year * _YEAR_DAYS
        lo, hi = max(t_opp - 100.0, _SURVEY_START_MJD), min(t_opp + 100.0, _SURVEY_END_MJD)
        if hi - lo >= 20.0:
            seasons.append((t_opp, lo, hi))

    exptime = _WARP_EXPTIME[band]
    full_needed = 10
    full_left = n_exp
    edge_used = 0
    records: list[dict[str, Any]] = []
    used_nights: set[int] = set()
    for night_no, size in enumerate(sizes):
        # a fixed number of draws per night, whatever branch is taken
        u = rng.random(26)
        s_opp, s_lo, s_hi = seasons[int(u[0] * len(seasons))]
        day = s_lo + u[1] * (s_hi - s_lo)
        step = 1.0 if u[24] < 0.5 else -1.0
        while math.floor(day) in used_nights:  # one visit per night and filter
            day += step
            if not s_lo <= day <= s_hi:
                step, day = -step, s_lo + u[1] * (s_hi - s_lo)
        used_nights.add(math.floor(day))
        transit_h = -(day - s_opp) * 24.0 / _YEAR_DAYS
        obs_h = transit_h + (u[2] - 0.5) * 5.0
        if abs(obs_h) > 5.0:  # keep to the dark hours (19:00 .. 05:00 local)
            obs_h = math.copysign(5.0 - 1.5 * u[25], obs_h)
        start_utc = math.floor(day) + (_SITE_UTC_OFFSET_H + obs_h) / 24.0
        pair_dt = (15.0 + 15.0 * u[3]) / 1440.0
        cloud = 0.15 * u[5] if u[4] < 0.1 else 0.0
        # median seeing including airmass (~1.2**0.6 = 1.12) is _SEEING_MEDIAN
        seeing_base = _SEEING_MEDIAN[band] / 1.12 * math.exp(0.2 * _normal(u[6], u[7]))
        edge = False
        if (
            u[8] < _EDGE_NIGHT_PROB
            and full_left - size >= full_needed
            and edge_used + size <= _MAX_EDGE_EXPOSURES
        ):
            edge = True
            full_left -= size
            edge_used += size
        circle = None
        if edge:
            qx = frame.x_min + u[9] * (frame.x_max - frame.x_min)
            qy = frame.y_min + u[10] * (frame.y_max - frame.y_min)
            theta = 2.0 * math.pi * u[11]
            circle = (
                round(qx + _FOV_RADIUS_PX * math.cos(theta)),
                round(qy + _FOV_RADIUS_PX * math.sin(theta)),
                _FOV_RADIUS_PX,
            )
        cell_x, cell_y = 600 + int(u[12] * 17), 600 + int(u[13] * 17)
        layout = _Layout(
            ox=int(u[14] * (8 * cell_x + 100)),
            oy=int(u[15] * (8 * cell_y + 100)),
            cell_x=cell_x,
            cell_y=cell_y,
            cell_gap_x=8 + int(u[16] * 7),
            cell_gap_y=8 + int(u[17] * 7),
            ota_gap_x=40 + int(u[18] * 61),
            ota_gap_y=40 + int(u[19] * 61),
            dead_cell_key=_hash_ints(seed, _TAG_NIGHT, projcell, bidx, night_no),
            circle=circle,
        )
        for member in range(size):
            t_utc = start_utc + member * pair_dt
            hour_angle = obs_h + member * pair_dt * 24.0 - transit_h
            airmass = _airmass(frame.crval2, hour_angle)
            jitter = u[20 + 2 * member : 22 + 2 * member]
            zp = _FPA_ZP_NOMINAL[band] - 0.12 * (airmass - 1.0) - cloud + 0.02 * _normal(*jitter)
            seeing = seeing_base * airmass**0.6 * math.exp(0.04 * _normal(jitter[1], jitter[0]))
            records.append(
                {
                    "t_utc": t_utc,
                    "zp": round(min(max(zp, 24.3), 25.0), 4),
                    "seeing": round(min(max(seeing, 0.8), 1.8), 3),
                    "airmass": round(airmass, 3),
                    "layout": layout,
                    "night": night_no,
                }
            )
    records.sort(key=lambda r: r["t_utc"])
    t_utc = np.array([r["t_utc"] for r in records])
    t_tai = np.round(utc_to_tai_mjd(t_utc), 8)
    t_mid = mid_exposure_mjd_utc(t_tai, exptime)
    out = []
    seq_per_night: dict[int, int] = {}
    for i, rec in enumerate(records):
        tai = float(t_tai[i])
        night_mjd = math.floor(rec["t_utc"] - _SITE_UTC_OFFSET_H / 24.0)
        seq = seq_per_night.setdefault(
            night_mjd, 37 + (_hash_ints(projcell, bidx, night_mjd) % 400)
        )
        seq_per_night[night_mjd] = seq + 1
        epoch = WarpEpoch(
            index=i,
            mjd_obs_tai=tai,
            mjd_listed=float(f"{tai:.5f}"),
            exptime=exptime,
            fpa_zp=rec["zp"],
            seeing_fwhm_arcsec=rec["seeing"],
            airmass=rec["airmass"],
            exposure_name=f"o{night_mjd - 50000}g{seq:04d}o",
        )
        out.append(
            _Exposure(
                epoch=epoch,
                band=band,
                projcell=projcell,
                layout=rec["layout"],
                t_mid_utc=float(t_mid[i]),
                night=rec["night"],
            )
        )
    return tuple(out)


def _normal(u1: float, u2: float) -> float:
    """A standard normal variate from two uniforms (Box-Muller)."""
    return math.sqrt(-2.0 * math.log(max(u1, 1e-300))) * math.cos(2.0 * math.pi * u2)


def _circle_reaches_box(circle: tuple[int, int, int], x0: int, x1: int, y0: int, y1: int) -> bool:
    """True if some integer pixel of [x0, x1) x [y0, y1) lies within the circle."""
    cx, cy, r = circle
    nx = min(max(cx, x0), x1 - 1)
    ny = min(max(cy, y0), y1 - 1)
    return (nx - cx) ** 2 + (ny - cy) ** 2 <= r * r


def _skycell_exposures(seed: int, skycell: SkycellId, band: str) -> tuple[_Exposure, ...]:
    """The exposures of a skycell's projection cell whose footprint reaches the skycell."""
    exposures = _projcell_exposures(seed, skycell.projcell, band)
    if not exposures:
        return ()
    frame = _projcell_frame(skycell.projcell)
    ox, oy = frame.offset(skycell.subcell)
    box = (ox, ox + frame.naxis1, oy, oy + frame.naxis2)
    return tuple(
        e
        for e in exposures
        if e.layout.circle is None or _circle_reaches_box(e.layout.circle, *box)
    )


@functools.lru_cache(maxsize=1024)
def _projcell_mid_times(seed: int, projcell: int) -> _FloatArray:
    times = [e.t_mid_utc for b in FILTERS for e in _projcell_exposures(seed, projcell, b)]
    out = np.sort(np.array(times, dtype=np.float64))
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------------------
# star tiles
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _tile_table() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(n_ra, first global index) of every declination band."""
    centres = -90.0 + (np.arange(_N_DEC_BANDS) + 0.5) * _TILE_DEG
    n_ra = np.maximum(1, np.floor(360.0 * np.cos(np.deg2rad(centres)) / _TILE_DEG)).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(n_ra)[:-1]]).astype(np.int64)
    return n_ra, first


def _dec_band(dec: float) -> int:
    return int(min(max(math.floor((dec + 90.0) / _TILE_DEG), 0), _N_DEC_BANDS - 1))


# unit vector of the north galactic pole (J2000)
_NGP = np.array(
    [
        math.cos(math.radians(27.12825)) * math.cos(math.radians(192.85948)),
        math.cos(math.radians(27.12825)) * math.sin(math.radians(192.85948)),
        math.sin(math.radians(27.12825)),
    ]
)


def _star_density(ra: float, dec: float) -> float:
    """Stars per square degree down to r = 23.5 (denser towards the Galactic plane)."""
    v = np.array(
        [
            math.cos(math.radians(dec)) * math.cos(math.radians(ra)),
            math.cos(math.radians(dec)) * math.sin(math.radians(ra)),
            math.sin(math.radians(dec)),
        ]
    )
    b = math.degrees(math.asin(float(np.clip(v @ _NGP, -1.0, 1.0))))
    return 2000.0 + 3000.0 * math.exp(-abs(b) / 12.0)


def _colours(c: _FloatArray) -> _FloatArray:
    """Offsets (mag_band - mag_r) in grizy for a g-r colour c."""
    r_i = 0.42 * c - 0.07 + np.where(c > 1.25, 2.4 * (c - 1.25), 0.0)
    i_z = 0.3 * r_i + 0.02
    z_y = 0.2 * r_i + 0.02
    return np.stack([c, np.zeros_like(c), -r_i, -r_i - i_z, -r_i - i_z - z_y], axis=1)


@functools.lru_cache(maxsize=16384)
def _tile_stars(seed: int, band_index: int, ra_index: int) -> _FloatArray:
    """The star table of one sky tile (rows sorted by id; read-only)."""
    n_ra, first = _tile_table()
    nr = int(n_ra[band_index])
    step = 360.0 / nr
    dec0 = -90.0 + band_index * _TILE_DEG
    dec1 = dec0 + _TILE_DEG
    ra0 = ra_index * step
    rng = _rng(seed, _TAG_TILE, band_index, ra_index)
    s0, s1 = math.sin(math.radians(dec0)), math.sin(math.radians(dec1))
    area = math.radians(step) * (s1 - s0) * (180.0 / math.pi) ** 2
    density = _star_density(ra0 + 0.5 * step, 0.5 * (dec0 + dec1))
    n = int(min(rng.poisson(density * area), _IDS_PER_TILE - 1))
    out = np.zeros((n, _N_COLS), dtype=np.float64)
    if n == 0:
        out.setflags(write=False)
        return out
    u = rng.random((n, 20))
    out[:, _C_ID] = (int(first[band_index]) + ra_index) * _IDS_PER_TILE + np.arange(n)
    out[:, _C_RA] = ra0 + u[:, 0] * step
    out[:, _C_DEC] = np.degrees(np.arcsin(s0 + u[:, 1] * (s1 - s0)))
    # magnitudes: N(<m) ~ 10**(0.3 m) between _MAG_BRIGHT and _MAG_FAINT (r band)
    lo = 10.0 ** (_COUNT_SLOPE * (_MAG_BRIGHT - _MAG_FAINT))
    mag_r = _MAG_FAINT + np.log10(lo + u[:, 2] * (1.0 - lo)) / _COUNT_SLOPE
    # g-r colour: a main-sequence spread plus a red (M dwarf) population and a few blue stars
    c = np.where(
        u[:, 3] < 0.25,
        1.2 + 0.45 * u[:, 4],
        np.where(u[:, 3] < 0.32, -0.3 + 0.6 * u[:, 4], 0.3 + 0.9 * u[:, 4]),
    )
    out[:, _C_MAG : _C_MAG + 5] = mag_r[:, None] + _colours(c)
    kind = np.where(
        u[:, 5] < _FRAC_PERIODIC,
        _KIND_PERIODIC,
        np.where(u[:, 5] < _FRAC_PERIODIC + _FRAC_TRANSIENT, _KIND_TRANSIENT, _KIND_CONSTANT),
    )
    out[:, _C_KIND] = kind
    per = kind == _KIND_PERIODIC
    out[per, _C_PERIOD] = 10.0 ** (
        math.log10(0.2) + u[per, 6] * (math.log10(50.0) - math.log10(0.2))
    )
    out[per, _C_AMP] = 10.0 ** (math.log10(0.03) + u[per, 7] * (math.log10(0.5) - math.log10(0.03)))
    out[per, _C_PHASE] = 2.0 * math.pi * u[per, 8]
    tr = kind == _KIND_TRANSIENT
    if np.any(tr):
        # quiescent baseline (what stacks show) 24-27 mag, a blue-ish outburst peaking at
        # 16-21 mag near one of the exposures of the field, so that warps catch it
        base_r = 24.0 + 3.0 * u[tr, 9]
        out[tr, _C_MAG : _C_MAG + 5] = base_r[:, None] + _colours(0.3 + 0.6 * u[tr, 10])
        peak_r = 16.0 + 5.0 * u[tr, 11]
        out[tr, _C_PEAKMAG : _C_PEAKMAG + 5] = peak_r[:, None] + _colours(-0.3 + 0.8 * u[tr, 12])
        times = _transient_epochs(seed, ra0 + 0.5 * step, 0.5 * (dec0 + dec1))
        if times.size:
            pick = times[np.minimum((u[tr, 13] * times.size).astype(np.int64), times.size - 1)]
        else:
            pick = 55000.0 + 1700.0 * u[tr, 13]
        peak = pick - 15.0 + 25.0 * u[tr, 14]
        if times.size:  # within the span of the field's exposures
            peak = np.clip(peak, times[0], times[-1])
        out[tr, _C_PEAK] = peak
        out[tr, _C_RISE] = 2.0 + 10.0 * u[tr, 15]
        out[tr, _C_DECLINE] = 0.02 + 0.08 * u[tr, 16]
    out.setflags(write=False)
    return out


def _transient_epochs(seed: int, ra: float, dec: float) -> _FloatArray:
    loc = locate_arrays(np.array([ra]), np.array([dec]))
    if not loc.covered[0] or loc.projcell[0] < FIRST_FOOTPRINT_PROJCELL:
        return np.zeros(0)
    return _projcell_mid_times(seed, int(loc.projcell[0]))


def _tile_ranges_for_cap(
    dec_lo: float, dec_hi: float, ra_lo: float, ra_hi: float, full_ra: bool
) -> list[tuple[int, int]]:
    """Tiles overlapping the box dec in [dec_lo, dec_hi], RA in [ra_lo, ra_hi] (may wrap)."""
    n_ra, _ = _tile_table()
    tiles: list[tuple[int, int]] = []
    for ib in range(_dec_band(dec_lo), _dec_band(dec_hi) + 1):
        nr = int(n_ra[ib])
        if full_ra or ra_hi - ra_lo >= 360.0:
            tiles.extend((ib, ia) for ia in range(nr))
            continue
        step = 360.0 / nr
        a0, a1 = math.floor(ra_lo / step), math.floor(ra_hi / step)
        seen = set()
        for a in range(a0, a1 + 1):
            ia = a % nr
            if ia not in seen:
                seen.add(ia)
                tiles.append((ib, ia))
    return tiles


def _stars_in_tiles(seed: int, tiles: Sequence[tuple[int, int]]) -> _FloatArray:
    tables = [_tile_stars(seed, ib, ia) for ib, ia in sorted(set(tiles))]
    tables = [t for t in tables if t.shape[0]]
    if not tables:
        return np.zeros((0, _N_COLS))
    return np.concatenate(tables, axis=0)


def _stars_for_global_box(
    seed: int, projcell: int, x0: float, x1: float, y0: float, y1: float
) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """Stars whose global pixel position lies in [x0, x1] x [y0, y1] (a superset is fine).

    Returns (table sorted by id, X, Y).
    """
    frame = _projcell_frame(projcell)
    # sample the box outline on the sky (TAN projection: extremes lie on the outline)
    n = 33
    t = np.linspace(0.0, 1.0, n)
    bx = np.concatenate([x0 + (x1 - x0) * t, np.full(n, x1), x0 + (x1 - x0) * t, np.full(n, x0)])
    by = np.concatenate([np.full(n, y0), y0 + (y1 - y0) * t, np.full(n, y1), y0 + (y1 - y0) * t])
    ra, dec = frame.to_sky(bx, by)
    margin = 20.0 / 3600.0  # far more than the sampling error of the outline
    dec_lo, dec_hi = float(dec.min()) - margin, float(dec.max()) + margin
    # does the box contain a pole?
    full_ra = False
    for pole in (90.0, -90.0):
        if abs(frame.crval2 - pole) < 60.0:
            px_, py_ = frame.to_global(np.array([0.0]), np.array([pole]))
            if x0 - 1 <= px_[0] <= x1 + 1 and y0 - 1 <= py_[0] <= y1 + 1:
                full_ra = True
                dec_lo, dec_hi = (min(dec_lo, pole), max(dec_hi, pole))
    dec_lo, dec_hi = max(dec_lo, -90.0), min(dec_hi, 90.0)
    if not full_ra:
        rel = (ra - frame.crval1 + 180.0) % 360.0 - 180.0
        cosd = max(math.cos(math.radians(max(abs(dec_lo), abs(dec_hi)))), 1e-6)
        ra_margin = margin / cosd
        ra_lo = frame.crval1 + float(rel.min()) - ra_margin
        ra_hi = frame.crval1 + float(rel.max()) + ra_margin
        if dec_hi > 89.9 or dec_lo < -89.9:
            full_ra = True
    else:
        ra_lo, ra_hi = 0.0, 360.0
    tiles = _tile_ranges_for_cap(dec_lo, dec_hi, ra_lo, ra_hi, full_ra)
    table = _stars_in_tiles(seed, tiles)
    if table.shape[0] == 0:
        return table, np.zeros(0), np.zeros(0)
    gx, gy = frame.to_global(table[:, _C_RA], table[:, _C_DEC])
    keep = (gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1)
    # behind the tangent plane (impossible for real boxes, but be safe)
    keep &= np.isfinite(gx) & np.isfinite(gy)
    table, gx, gy = table[keep], gx[keep], gy[keep]
    order = np.argsort(table[:, _C_ID], kind="stable")
    return table[order], gx[order], gy[order]


def _star_index(seed: int, source_id: int) -> tuple[_FloatArray, int]:
    n_ra, first = _tile_table()
    tile_gid, k = divmod(int(source_id), _IDS_PER_TILE)
    ib = int(np.searchsorted(first, tile_gid, side="right")) - 1
    if ib < 0 or ib >= _N_DEC_BANDS or tile_gid - first[ib] >= n_ra[ib]:
        raise InvalidParameterError(f"no source with id {source_id}")
    table = _tile_stars(seed, ib, int(tile_gid - first[ib]))
    if k >= table.shape[0]:
        raise InvalidParameterError(f"no source with id {source_id}")
    return table, k


def _star_mags_at(table: _FloatArray, band: str, mjd_utc: float | _FloatArray) -> _FloatArray:
    """True AB magnitudes of the stars of ``table`` in ``band`` at UTC MJD(s) (broadcast)."""
    b = _BAND_INDEX[band]
    t = np.asarray(mjd_utc, dtype=np.float64)
    mag = table[:, _C_MAG + b]
    kind = table[:, _C_KIND]
    if t.ndim:
        mag = mag[:, None]
        kind = kind[:, None]
        col = lambda c: table[:, c][:, None]
    else:
        col = lambda c: table[:, c]
    out = np.broadcast_to(mag, np.broadcast_shapes(mag.shape, t.shape)).astype(np.float64)
    per = np.broadcast_to(kind == _KIND_PERIODIC, out.shape)
    if np.any(per):
        with np.errstate(divide="ignore", invalid="ignore"):
            af = 10.0 ** (0.4 * col(_C_AMP)) - 1.0
            period = np.where(col(_C_PERIOD) > 0, col(_C_PERIOD), 1.0)
            factor = 1.0 + af * np.sin(
                2.0 * np.pi * (t - _PHASE_EPOCH_MJD) / period + col(_C_PHASE)
            )
            varmag = mag - 2.5 * np.log10(factor)
        out = np.where(per, varmag, out)
    tr = np.broadcast_to(kind == _KIND_TRANSIENT, out.shape)
    if np.any(tr):
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dt = t - col(_C_PEAK)
            rise = np.where(col(_C_RISE) > 0, col(_C_RISE), 1.0)
            shape = np.where(
                dt < 0, np.exp(-0.5 * (dt / rise) ** 2), 10.0 ** (-0.4 * col(_C_DECLINE) * dt)
            )
            flux = 10.0 ** (-0.4 * mag) + 10.0 ** (-0.4 * col(_C_PEAKMAG + b)) * shape
            trmag = -2.5 * np.log10(flux)
        out = np.where(tr, trmag, out)
    return out


def _source_dict(row: _FloatArray) -> dict[str, Any]:
    kind = int(row[_C_KIND])
    out: dict[str, Any] = {
        "id": int(row[_C_ID]),
        "ra": float(row[_C_RA]),
        "dec": float(row[_C_DEC]),
    }
    for i, b in enumerate(FILTERS):
        out[f"mag_{b}"] = float(row[_C_MAG + i])
    var: dict[str, Any] = {"kind": _KIND_NAMES[kind]}
    if kind == _KIND_PERIODIC:
        amp = float(row[_C_AMP])
        var.update(
            period=float(row[_C_PERIOD]),
            amplitude=amp,
            flux_amplitude=float(10.0 ** (0.4 * amp) - 1.0),
            phase=float(row[_C_PHASE]),
            epoch_mjd=_PHASE_EPOCH_MJD,
        )
    elif kind == _KIND_TRANSIENT:
        var.update(
            peak_mjd=float(row[_C_PEAK]),
            peak_mag=float(row[_C_PEAKMAG + 1]),
            peak_mags={b: float(row[_C_PEAKMAG + i]) for i, b in enumerate(FILTERS)},
            rise_days=float(row[_C_RISE]),
            decline_mag_per_day=float(row[_C_DECLINE]),
        )
    out["variability"] = var
    return out


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
        if band not in _BAND_INDEX:
            raise InvalidParameterError(f"filter {band!r} is not one of {FILTERS!r}")
        return [e.epoch for e in _skycell_exposures(self.seed, sid, band)]

    def images(
        self, skycell: SkycellId | str, bands: str | Sequence[str], types: str | Sequence[str]
    ) -> list[ImageRef]:
        """What ``ps1filenames.py`` lists: stacks first, then warps by filter and epoch.

        Filters come in the order the real service uses (g, i, r, y, z); image types of
        each group in the canonical order of :data:`ps1dask.conventions.IMAGE_TYPES`.
        """
        sid = skycell if isinstance(skycell, SkycellId) else SkycellId.parse(skycell)
        chosen = parse_filters(bands if isinstance(bands, str) else tuple(bands))
        wanted = set(parse_types(types if isinstance(types, str) else tuple(types)))
        if not self.has_data(sid):
            return []
        order = [b for b in _LIST_FILTER_ORDER if b in chosen]
        stack_types = [t for t in STACK_TYPES if t in wanted]
        warp_types = [t for t in WARP_TYPES if t in wanted]
        out = [ImageRef(sid, b, t) for b in order for t in stack_types]
        if warp_types:
            for b in order:
                for ep in self.warp_epochs(sid, b):
                    out.extend(ImageRef(sid, b, t, ep.mjd_listed) for t in warp_types)
        return out

    def _exposure_of(self, ref: ImageRef) -> _Exposure:
        """The exposure behind a warp reference; NotFoundError if the skycell has none then."""
        if not ref.is_warp:
            raise InvalidParameterError(f"{ref.shortname} is not a warp")
        for e in _skycell_exposures(self.seed, ref.skycell, ref.band):
            if abs(e.epoch.mjd_listed - float(ref.mjd or 0.0)) < 5e-6:
                return e
        raise NotFoundError(f"no such warp: {ref.shortname}", status=404)

    def _check(self, ref: ImageRef) -> None:
        """Raise NotFoundError unless the service would have this file."""
        if not self.has_data(ref.skycell):
            raise NotFoundError(f"no PS1 data for {ref.skycell} ({ref.shortname})", status=404)
        if ref.is_warp:
            self._exposure_of(ref)

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
        tiles = _tile_ranges_for_cap(dec_lo, dec_hi, ra - half, ra + half, full or half >= 180.0)
        table = _stars_in_tiles(self.seed, tiles)
        if table.shape[0] == 0:
            return []
        d1, d2 = np.radians(dec), np.radians(table[:, _C_DEC])
        dra = np.radians(table[:, _C_RA] - ra)
        hav = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(dra / 2) ** 2
        sep = np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0.0, 1.0)))) * 3600.0
        rows = table[sep <= radius]
        rows = rows[np.argsort(rows[:, _C_ID], kind="stable")]
        return [_source_dict(r) for r in rows]

    def _source(self, source_id: int) -> dict[str, Any]:
        """Truth of one source by id."""
        table, k = _star_index(self.seed, source_id)
        return _source_dict(table[k])

    def true_mag(
        self, source: dict[str, Any] | int, band: str, mjd_utc: float | npt.ArrayLike
    ) -> float | _FloatArray:
        """True AB magnitude of a source at UTC MJD(s): what a warp exposed then contains."""
        sid = int(source["id"]) if isinstance(source, dict) else int(source)
        if band not in _BAND_INDEX:
            raise InvalidParameterError(f"filter {band!r} is not one of {FILTERS!r}")
        table, k = _star_index(self.seed, sid)
        t = np.asarray(mjd_utc, dtype=np.float64)
        mags = _star_mags_at(table[k : k + 1], band, t)
        if t.ndim == 0:
            return float(mags[0])
        return np.asarray(mags[0]).reshape(t.shape)

    # -- pixels ----------------------------------------------------------------------

    def image_header(self, ref: ImageRef) -> fits.Header:
        from ps1dask.emulator.render import _image_header

        return _image_header(self, ref)

    def render_disk(self, ref: ImageRef, rows: slice, cols: slice) -> npt.NDArray[np.int16]:
        from ps1dask.emulator.render import _render_disk

        return _render_disk(self, ref, rows, cols)

    def render_whole(self, ref: ImageRef) -> npt.NDArray[np.int16]:
        from ps1dask.emulator.render import _render_whole

        return _render_whole(self, ref)
