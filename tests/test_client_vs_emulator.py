"""The client's repaired FITS cutouts against the emulator's truth, end to end.

The emulator writes cutout headers by its own rules (``ps1dask.emulator.service_rules``); the
client repairs them (``ps1dask.conventions.repair_header``). A truth star must land on its
pixel through the repaired WCS, and the repaired time system must give the truth epoch.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.time import Time, TimeDelta
from astropy.wcs import WCS

from ps1dask.client import PS1Service
from ps1dask.emulator.sky import ImageRef
from ps1dask.tessellation import SkycellId, skycell_center

CELL = SkycellId(1405, 53)
SIZE = 81  # pixels (about 20 arcsec)


@pytest.fixture(scope="module")
def bright_star(job_emulator):
    ra0, dec0 = skycell_center(CELL)
    stars = [
        s
        for s in job_emulator.sky.sources(ra0, dec0, 400.0)  # well inside the skycell
        if s["variability"]["kind"] == "constant" and 15.0 < s["mag_r"] < 17.0
    ]
    assert stars, "the field has bright constant stars"
    # the one with no other star within the cutout's reach
    for star in stars:
        neighbours = job_emulator.sky.sources(star["ra"], star["dec"], 30.0)
        if all(n["id"] == star["id"] or n["mag_r"] > star["mag_r"] + 3 for n in neighbours):
            return star
    pytest.fail("no isolated bright star")


def _brightest_pixel(data: np.ndarray) -> tuple[int, int]:
    iy, ix = np.unravel_index(np.nanargmax(data), data.shape)
    return int(ix), int(iy)


@pytest.mark.parametrize("image_type", ["stack", "warp"])
def test_repaired_cutout_wcs_puts_a_truth_star_on_its_pixel(job_emulator, bright_star, image_type):
    sky = job_emulator.sky
    if image_type == "stack":
        ref = ImageRef(CELL, "r", "stack")
    else:
        epoch = sky.warp_epochs(CELL, "r")[0]
        ref = ImageRef(CELL, "r", "warp", epoch.mjd_listed)
    svc = PS1Service(job_emulator.url)
    # centred 4 arcsec east and 2.5 arcsec north of the star: a flipped or shifted WCS shows
    cosd = np.cos(np.radians(bright_star["dec"]))
    ra = bright_star["ra"] + 4.0 / 3600.0 / cosd
    dec = bright_star["dec"] + 2.5 / 3600.0
    hdu = svc.cutout_fits(ref.filename, ra, dec, size=SIZE)
    data = np.asarray(hdu.data, dtype=np.float64)
    assert np.isfinite(data).mean() > 0.9  # this warp covers the star (seed 0)
    wcs = WCS(hdu.header)
    assert wcs.wcs.radesys == "FK5" and wcs.wcs.equinox == 2000.0
    x, y = wcs.all_world2pix(bright_star["ra"], bright_star["dec"], 0)
    ix, iy = _brightest_pixel(data)
    assert abs(float(x) - ix) <= 1.0 and abs(float(y) - iy) <= 1.0, ((x, y), (ix, iy))
    # the star sits west (x grows to the west in PS1) and south of the cutout's centre
    assert ix - SIZE // 2 in range(15, 18) and SIZE // 2 - iy in range(9, 12)


def test_repaired_warp_header_gives_the_truth_mid_exposure_time(job_emulator):
    sky = job_emulator.sky
    epoch = sky.warp_epochs(CELL, "g")[1]
    ref = ImageRef(CELL, "g", "warp", epoch.mjd_listed)
    hdu = PS1Service(job_emulator.url).cutout_fits(ref.filename, *skycell_center(CELL), size=8)
    h = hdu.header
    start = Time(h["MJD-OBS"], format="mjd", scale=h["TIMESYS"].lower())
    mid_utc = (start + TimeDelta(h["EXPTIME"] / 2.0, format="sec")).utc.mjd
    assert mid_utc == pytest.approx(epoch.mjd_mid_utc, abs=1e-8)
