"""The emulator's star catalogue: seeded sky tiles of stars, variables and transients.

The sphere is cut into tiles (declination bands of ``0.05 deg``, each cut into
``floor(360 cos(dec) / 0.05)`` equal RA steps); a tile's stars come from a generator seeded by
``(seed, tile)``, so truth queries and the renders of every skycell see the same stars.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.emulator.service_rules import FILTERS
from ps1dask.emulator.survey import (
    BAND_INDEX,
    TAG_TILE,
    projcell_exposures,
    projcell_frame,
    seeded_rng,
)
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import FIRST_FOOTPRINT_PROJCELL, locate_arrays

_FloatArray = npt.NDArray[np.float64]

#: Reference epoch (UTC MJD) of the phases of periodic variables.
_PHASE_EPOCH_MJD = 55000.0
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
C_ID, C_RA, C_DEC = 0, 1, 2
C_MAG = 3  # .. 7: mean (baseline) AB mag in g r i z y
_C_KIND = 8  # 0 constant, 1 periodic, 2 transient
_C_PERIOD, _C_AMP, _C_PHASE = 9, 10, 11
_C_PEAK, _C_RISE, _C_DECLINE = 12, 13, 14
_C_PEAKMAG = 15  # .. 19: transient-only AB mag at peak in g r i z y
_N_COLS = 20
_KIND_CONSTANT, _KIND_PERIODIC, _KIND_TRANSIENT = 0, 1, 2
_KIND_NAMES = {_KIND_CONSTANT: "constant", _KIND_PERIODIC: "periodic", _KIND_TRANSIENT: "transient"}


@functools.lru_cache(maxsize=1024)
def _projcell_mid_times(seed: int, projcell: int) -> _FloatArray:
    times = [e.t_mid_utc for b in FILTERS for e in projcell_exposures(seed, projcell, b)]
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
    rng = seeded_rng(seed, TAG_TILE, band_index, ra_index)
    s0, s1 = math.sin(math.radians(dec0)), math.sin(math.radians(dec1))
    area = math.radians(step) * (s1 - s0) * (180.0 / math.pi) ** 2
    density = _star_density(ra0 + 0.5 * step, 0.5 * (dec0 + dec1))
    n = int(min(rng.poisson(density * area), _IDS_PER_TILE - 1))
    out = np.zeros((n, _N_COLS), dtype=np.float64)
    if n == 0:
        out.setflags(write=False)
        return out
    u = rng.random((n, 20))
    out[:, C_ID] = (int(first[band_index]) + ra_index) * _IDS_PER_TILE + np.arange(n)
    out[:, C_RA] = ra0 + u[:, 0] * step
    out[:, C_DEC] = np.degrees(np.arcsin(s0 + u[:, 1] * (s1 - s0)))
    # magnitudes: N(<m) ~ 10**(0.3 m) between _MAG_BRIGHT and _MAG_FAINT (r band)
    lo = 10.0 ** (_COUNT_SLOPE * (_MAG_BRIGHT - _MAG_FAINT))
    mag_r = _MAG_FAINT + np.log10(lo + u[:, 2] * (1.0 - lo)) / _COUNT_SLOPE
    # g-r colour: a main-sequence spread plus a red (M dwarf) population and a few blue stars
    c = np.where(
        u[:, 3] < 0.25,
        1.2 + 0.45 * u[:, 4],
        np.where(u[:, 3] < 0.32, -0.3 + 0.6 * u[:, 4], 0.3 + 0.9 * u[:, 4]),
    )
    out[:, C_MAG : C_MAG + 5] = mag_r[:, None] + _colours(c)
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
        out[tr, C_MAG : C_MAG + 5] = base_r[:, None] + _colours(0.3 + 0.6 * u[tr, 10])
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


def tile_ranges_for_cap(
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


def stars_in_tiles(seed: int, tiles: Sequence[tuple[int, int]]) -> _FloatArray:
    tables = [_tile_stars(seed, ib, ia) for ib, ia in sorted(set(tiles))]
    tables = [t for t in tables if t.shape[0]]
    if not tables:
        return np.zeros((0, _N_COLS))
    return np.concatenate(tables, axis=0)


def stars_for_global_box(
    seed: int, projcell: int, x0: float, x1: float, y0: float, y1: float
) -> tuple[_FloatArray, _FloatArray, _FloatArray]:
    """Stars whose global pixel position lies in [x0, x1] x [y0, y1] (a superset is fine).

    Returns (table sorted by id, X, Y).
    """
    frame = projcell_frame(projcell)
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
    tiles = tile_ranges_for_cap(dec_lo, dec_hi, ra_lo, ra_hi, full_ra)
    table = stars_in_tiles(seed, tiles)
    if table.shape[0] == 0:
        return table, np.zeros(0), np.zeros(0)
    gx, gy = frame.to_global(table[:, C_RA], table[:, C_DEC])
    keep = (gx >= x0) & (gx <= x1) & (gy >= y0) & (gy <= y1)
    # behind the tangent plane (impossible for real boxes, but be safe)
    keep &= np.isfinite(gx) & np.isfinite(gy)
    table, gx, gy = table[keep], gx[keep], gy[keep]
    order = np.argsort(table[:, C_ID], kind="stable")
    return table[order], gx[order], gy[order]


def star_index(seed: int, source_id: int) -> tuple[_FloatArray, int]:
    n_ra, first = _tile_table()
    tile_gid, k = divmod(int(source_id), _IDS_PER_TILE)
    ib = int(np.searchsorted(first, tile_gid, side="right")) - 1
    if ib < 0 or ib >= _N_DEC_BANDS or tile_gid - first[ib] >= n_ra[ib]:
        raise InvalidParameterError(f"no source with id {source_id}")
    table = _tile_stars(seed, ib, int(tile_gid - first[ib]))
    if k >= table.shape[0]:
        raise InvalidParameterError(f"no source with id {source_id}")
    return table, k


def star_mags_at(table: _FloatArray, band: str, mjd_utc: float | _FloatArray) -> _FloatArray:
    """True AB magnitudes of the stars of ``table`` in ``band`` at UTC MJD(s) (broadcast)."""
    b = BAND_INDEX[band]
    t = np.asarray(mjd_utc, dtype=np.float64)
    mag = table[:, C_MAG + b]
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


def source_dict(row: _FloatArray) -> dict[str, Any]:
    kind = int(row[_C_KIND])
    out: dict[str, Any] = {
        "id": int(row[C_ID]),
        "ra": float(row[C_RA]),
        "dec": float(row[C_DEC]),
    }
    for i, b in enumerate(FILTERS):
        out[f"mag_{b}"] = float(row[C_MAG + i])
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
