"""The emulator's survey model, shared by the synthetic sky and the renderer.

Pure functions of ``(seed, ...)``: survey constants, seeded hashing, projection-cell pixel
frames, the value types of images and exposures (:class:`ImageRef`, :class:`WarpEpoch`), the
warp epochs of every projection cell and filter, and the star tables of sky tiles.
:mod:`ps1dask.emulator.sky` builds the public sky (listings, truth) on it and
:mod:`ps1dask.emulator.render` the pixels and headers; neither imports the other's internals.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.emulator.service_rules import (
    FILTERS,
    IMAGE_TYPES,
    file_name,
    is_warp_type,
    mid_exposure_utc,
    parse_file_name,
    utc_to_tai,
)
from ps1dask.exceptions import InvalidParameterError, NotFoundError
from ps1dask.tessellation import (
    FIRST_FOOTPRINT_PROJCELL,
    HEADER_CDELT_DEG,
    PIXEL_SCALE_DEG,
    SKYCELL_PAD,
    SkycellId,
    deproject,
    project,
    skycell_geometry,
)

__all__ = ["ImageRef", "WarpEpoch"]

_FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------------------
# survey constants
# --------------------------------------------------------------------------------------

BAND_INDEX = {b: i for i, b in enumerate(FILTERS)}
#: Single-exposure times of the PS1 3pi survey (s).
WARP_EXPTIME = {"g": 43.0, "r": 40.0, "i": 45.0, "z": 30.0, "y": 30.0}
#: Nominal FPA.ZP (AB mag giving 1 count/s) at airmass 1 in clear weather.
FPA_ZP_NOMINAL = {"g": 24.58, "r": 24.78, "i": 24.74, "z": 24.52, "y": 24.46}
#: Median single-exposure seeing (arcsec FWHM) per filter.
SEEING_MEDIAN = {"g": 1.31, "r": 1.19, "i": 1.11, "z": 1.07, "y": 1.02}
#: 5-sigma point-source depth of one warp at nominal seeing and zero point.
WARP_DEPTH = {"g": 22.0, "r": 21.8, "i": 21.5, "z": 20.9, "y": 19.7}
#: 5-sigma point-source depth of a stack of ``STACK_DEPTH_NREF`` exposures.
STACK_DEPTH = {"g": 23.3, "r": 23.2, "i": 23.1, "z": 22.3, "y": 21.3}
STACK_DEPTH_NREF = 20
#: Warp counts above which a detector pixel saturates.
SATURATION_COUNTS = 55000.0

_SURVEY_START_MJD = 54983.0  # 2009-06-01
_SURVEY_END_MJD = 56747.0  # 2014-03-31
_MARCH_EQUINOX_MJD = 55275.73  # 2010-03-20 17:32 UTC: the Sun at RA 0
_YEAR_DAYS = 365.2422
_SITE_LATITUDE_DEG = 20.7083  # Haleakala
_SITE_UTC_OFFSET_H = 10.0  # HST = UTC - 10 h
#: Radius of the GPC1 field of view (3 deg diameter) in skycell pixels.
_FOV_RADIUS_PX = round(1.5 / PIXEL_SCALE_DEG)

_MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------
# hashing and seeding
# --------------------------------------------------------------------------------------


def _mix64(z: int) -> int:
    """The splitmix64 finaliser on a Python int (a bijection of 64-bit values)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def hash_ints(*values: int) -> int:
    """A 64-bit hash of a sequence of integers (any sign), stable across runs and machines."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _mix64((h + (int(v) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64)
    return h


def seeded_rng(*values: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(hash_ints(*values)))


# stream tags, so that no two uses of (seed, ...) share a generator
TAG_TILE, _TAG_EPOCHS, TAG_STACK, TAG_WARP, _TAG_NIGHT, TAG_CR = 11, 12, 13, 14, 15, 16


# --------------------------------------------------------------------------------------
# projection-cell frames
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjcellFrame:
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
        :func:`~ps1dask.emulator.service_rules.header_pixel`, so a star sits exactly where its image
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
def projcell_frame(projcell: int) -> ProjcellFrame:
    geo = skycell_geometry(projcell, 55)
    return ProjcellFrame(
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
        if self.band not in BAND_INDEX:
            raise InvalidParameterError(f"filter {self.band!r} is not one of {FILTERS!r}")
        if self.image_type not in IMAGE_TYPES:
            raise InvalidParameterError(
                f"unknown image type {self.image_type!r}; known: {sorted(IMAGE_TYPES)}"
            )
        if is_warp_type(self.image_type):
            if self.mjd is None or not math.isfinite(float(self.mjd)) or float(self.mjd) <= 0:
                raise InvalidParameterError(f"a {self.image_type} image needs its MJD")
            object.__setattr__(self, "mjd", float(self.mjd))
        else:
            if self.mjd not in (None, 0, 0.0):
                raise InvalidParameterError(f"a {self.image_type} image has no MJD ({self.mjd!r})")
            object.__setattr__(self, "mjd", None)

    @property
    def is_warp(self) -> bool:
        return is_warp_type(self.image_type)

    @property
    def filename(self) -> str:
        return file_name(self.skycell, self.band, self.image_type, self.mjd)

    @property
    def shortname(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @classmethod
    def from_filename(cls, name: str) -> ImageRef:
        parsed = parse_file_name(name)
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
        return mid_exposure_utc(self.mjd_obs_tai, self.exptime)


@dataclass(frozen=True)
class Layout:
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
class Exposure:
    """Everything the renderer needs about one warp epoch (private to the emulator)."""

    epoch: WarpEpoch
    band: str
    projcell: int
    layout: Layout
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
def projcell_exposures(seed: int, projcell: int, band: str) -> tuple[Exposure, ...]:
    """All the exposures of one projection cell in one filter, sorted by time (cached)."""
    if projcell < FIRST_FOOTPRINT_PROJCELL:
        return ()
    frame = projcell_frame(projcell)
    bidx = BAND_INDEX[band]
    rng = seeded_rng(seed, _TAG_EPOCHS, projcell, bidx)
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

    exptime = WARP_EXPTIME[band]
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
        # median seeing including airmass (~1.2**0.6 = 1.12) is SEEING_MEDIAN
        seeing_base = SEEING_MEDIAN[band] / 1.12 * math.exp(0.2 * _normal(u[6], u[7]))
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
        layout = Layout(
            ox=int(u[14] * (8 * cell_x + 100)),
            oy=int(u[15] * (8 * cell_y + 100)),
            cell_x=cell_x,
            cell_y=cell_y,
            cell_gap_x=8 + int(u[16] * 7),
            cell_gap_y=8 + int(u[17] * 7),
            ota_gap_x=40 + int(u[18] * 61),
            ota_gap_y=40 + int(u[19] * 61),
            dead_cell_key=hash_ints(seed, _TAG_NIGHT, projcell, bidx, night_no),
            circle=circle,
        )
        for member in range(size):
            t_utc = start_utc + member * pair_dt
            hour_angle = obs_h + member * pair_dt * 24.0 - transit_h
            airmass = _airmass(frame.crval2, hour_angle)
            jitter = u[20 + 2 * member : 22 + 2 * member]
            zp = FPA_ZP_NOMINAL[band] - 0.12 * (airmass - 1.0) - cloud + 0.02 * _normal(*jitter)
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
    t_tai = np.round(np.array([utc_to_tai(float(t)) for t in t_utc]), 8)
    t_mid = [mid_exposure_utc(float(t), exptime) for t in t_tai]
    out = []
    seq_per_night: dict[int, int] = {}
    for i, rec in enumerate(records):
        tai = float(t_tai[i])
        night_mjd = math.floor(rec["t_utc"] - _SITE_UTC_OFFSET_H / 24.0)
        seq = seq_per_night.setdefault(night_mjd, 37 + (hash_ints(projcell, bidx, night_mjd) % 400))
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
            Exposure(
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


def skycell_exposures(seed: int, skycell: SkycellId, band: str) -> tuple[Exposure, ...]:
    """The exposures of a skycell's projection cell whose footprint reaches the skycell."""
    exposures = projcell_exposures(seed, skycell.projcell, band)
    if not exposures:
        return ()
    frame = projcell_frame(skycell.projcell)
    ox, oy = frame.offset(skycell.subcell)
    box = (ox, ox + frame.naxis1, oy, oy + frame.naxis2)
    return tuple(
        e
        for e in exposures
        if e.layout.circle is None or _circle_reaches_box(e.layout.circle, *box)
    )


def exposure_of(seed: int, ref: ImageRef) -> Exposure:
    """The exposure behind a warp reference; NotFoundError if the skycell has none then."""
    if not ref.is_warp:
        raise InvalidParameterError(f"{ref.shortname} is not a warp")
    for e in skycell_exposures(seed, ref.skycell, ref.band):
        if abs(e.epoch.mjd_listed - float(ref.mjd or 0.0)) < 5e-6:
            return e
    raise NotFoundError(f"no such warp: {ref.shortname}", status=404)


def check_image(seed: int, ref: ImageRef) -> None:
    """Raise NotFoundError unless the service would have this file."""
    if ref.skycell.projcell < FIRST_FOOTPRINT_PROJCELL:
        raise NotFoundError(f"no PS1 data for {ref.skycell} ({ref.shortname})", status=404)
    if ref.is_warp:
        exposure_of(seed, ref)
