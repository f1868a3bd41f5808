"""Known answers of the emulator's own service rules, worked out by hand from the documented
behaviour (PS1-SERVICE.md sections 4-5), plus property tests of the pure functions.

These pin the emulator's independent implementation (``ps1dask.emulator.service_rules`` and
``ps1dask.emulator.pictures``), which the end-to-end tests then hold the client against.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.emulator.pictures import grey_picture
from ps1dask.emulator.service_rules import (
    asinh_value,
    cut_origin,
    cut_out,
    fitscut_fits,
    fitscut_header,
    linear_flux,
    mid_exposure_utc,
    tai_to_utc,
    to_disk,
    utc_to_tai,
)

# a * ln 2 with a = 2.5 / ln 10: then v = j * BSCALE gives exp(v/a) = 2**j exactly
BSCALE_LN2 = 2.5 * math.log10(2.0)


# --------------------------------------------------------------------------- stack scaling


def test_a_few_pixels_of_a_tiny_stack_file():
    # BOFFSET + BSOFTEN * (2**j - 2**-j): j=0 -> 10, 1 -> 10 + 2*1.5, 2 -> 10 + 2*3.75,
    # -1 -> 10 - 2*1.5; BLANK -> NaN
    header = {"BZERO": 0.0, "BSCALE": BSCALE_LN2, "BLANK": -32768, "BSOFTEN": 2.0, "BOFFSET": 10.0}
    stored = np.array([[0, 1], [2, -1], [-32768, 0]], dtype=np.int16)
    flux = linear_flux(stored, header)
    assert flux.dtype == np.float32 and flux.shape == (3, 2)
    np.testing.assert_allclose(flux[:2], [[10.0, 13.0], [17.5, 7.0]], rtol=1e-6)
    assert np.isnan(flux[2, 0]) and flux[2, 1] == pytest.approx(10.0)


def test_linear_files_only_apply_bzero_and_bscale():
    header = {"BZERO": 100.0, "BSCALE": 0.5, "BLANK": -32768}  # a warp: no BSOFTEN/BOFFSET
    flux = linear_flux(np.array([0, 2, -4, -32768], dtype=np.int16), header)
    np.testing.assert_array_equal(flux[:3], [100.0, 101.0, 98.0])
    assert np.isnan(flux[3])


def test_writing_a_stack_inverts_the_documented_formula():
    # flux 13 with BOFFSET 10, BSOFTEN 2 is v = a ln 2, stored as j = 1 at BSCALE = a ln 2
    v = asinh_value([10.0, 13.0, 17.5, 7.0], 2.0, 10.0)
    np.testing.assert_allclose(v / BSCALE_LN2, [0.0, 1.0, 2.0, -1.0], atol=1e-12)
    np.testing.assert_array_equal(to_disk(v, 0.0, BSCALE_LN2), [0, 1, 2, -1])
    # NaN -> BLANK, out of range clipped to the int16 range short of BLANK
    np.testing.assert_array_equal(to_disk([np.nan, 1e9, -1e9], 0.0, 1.0), [-32768, 32767, -32767])


@settings(max_examples=200, deadline=None)
@given(
    j=st.integers(-32767, 32767),
    bsoften=st.floats(0.01, 100.0),
    boffset=st.floats(-100.0, 100.0),
    bscale=st.floats(1e-4, 1e-3),
)
def test_stored_values_survive_decoding_and_encoding(j, bsoften, boffset, bscale):
    header = {"BZERO": 0.0, "BSCALE": bscale, "BSOFTEN": bsoften, "BOFFSET": boffset}
    flux = float(linear_flux(np.array([j], dtype=np.int16), header)[0])
    if not math.isfinite(flux):
        return  # beyond float32
    again = to_disk(asinh_value([flux], bsoften, boffset), 0.0, bscale)[0]
    # float32 rounding of the flux: at most one step, unless neighbouring steps are closer
    # than float32 resolves at this flux (a large BOFFSET with a tiny BSOFTEN * BSCALE); then
    # the stored value must at least decode to the same float32 flux
    flux_again = float(linear_flux(np.array([again], dtype=np.int16), header)[0])
    # (np.spacing is negative for negative numbers)
    assert abs(int(again) - j) <= 1 or abs(flux_again - flux) <= 2 * abs(
        np.spacing(np.float32(flux))
    )


# --------------------------------------------------------------------------- the cut rule


@pytest.mark.parametrize(
    ("xc", "width", "first_fits_pixel"),
    [
        # x0 = floor(xc - 1 - W//2 + 0.5); the cutout holds FITS pixels x0+1 .. x0+W
        (100.5, 5, 99),  # half-pixel position rounds up: centre pixel 101
        (100.5, 4, 99),  # even: 99..102, the centre pixel 101 right of the middle
        (100.4, 5, 98),  # centre pixel 100
        (100.0, 4, 98),  # 98..101
        (100.0, 1, 100),
        (1.0, 3, 0),  # one column off the image's left edge
    ],
)
def test_cut_box_known_answers(xc, width, first_fits_pixel):
    x0, y0 = cut_origin(xc, xc, width, width)
    assert x0 + 1 == first_fits_pixel and y0 == x0


def test_cut_out_pads_off_image_pixels_with_nan():
    image = np.arange(12, dtype=np.float32).reshape(3, 4)  # naxis1 4, naxis2 3
    out = cut_out(lambda r, c: image[r, c], 4, 3, -1, 1, 3, 3)
    expected = np.array(
        [[np.nan, 4.0, 5.0], [np.nan, 8.0, 9.0], [np.nan, np.nan, np.nan]], dtype=np.float32
    )
    np.testing.assert_array_equal(out, expected)
    assert np.isnan(cut_out(lambda r, c: image[r, c], 4, 3, 10, 10, 2, 2)).all()


@settings(max_examples=300, deadline=None)
@given(xc=st.floats(-50.0, 7000.0), width=st.integers(1, 6000))
def test_cut_box_holds_the_rounded_centre_pixel(xc, width):
    x0, _ = cut_origin(xc, 1.0, width, 1)
    centre = math.floor(xc + 0.5)  # the 1-based pixel the position falls in (halves up)
    assert x0 + 1 <= centre <= x0 + width
    assert centre - (x0 + 1) == width // 2  # W//2 pixels before it


# --------------------------------------------------------------------------- cutout headers


def test_fitscut_header_known_answer():
    source = fits.Header()
    for key, value in [
        ("XTENSION", "IMAGE"),
        ("BITPIX", 16),
        ("NAXIS", 2),
        ("NAXIS1", 6000),
        ("NAXIS2", 6000),
        ("PCOUNT", 0),
        ("GCOUNT", 1),
        ("BSCALE", 0.01),
        ("BZERO", 3.0),
        ("BLANK", -32768),
        ("BSOFTEN", 2.0),
        ("BOFFSET", 1.0),
        ("ZIMAGE", True),
        ("CRPIX1", 3000.5),
        ("CRPIX2", -120.0),
        ("CDELT1", 6.94444461259988e-05),
        ("PC001001", -1.0),
        ("EXPTIME", 43.0),
        ("MJD-OBS", 55676.42336),
    ]:
        source[key] = value
    source.append(fits.Card("HIERARCH FPA.ZP", 24.56))
    out = fitscut_header(source, 100, 200, 240, 120)
    assert (out["BITPIX"], out["NAXIS1"], out["NAXIS2"]) == (-32, 240, 120)
    assert out["CRPIX1"] == 2900.5 and out["CRPIX2"] == -320.0
    assert out["RADESYS"] == "FK5" and out["TIMESYS"] == "TAI"
    for gone in ("XTENSION", "BSCALE", "BZERO", "BLANK", "BSOFTEN", "BOFFSET", "ZIMAGE"):
        assert gone not in out
    assert out["PC001001"] == -1.0 and "CD1_1" not in out  # obsolete PC kept, not repaired
    assert out["MJD-OBS"] == 55676.42336 and out["FPA.ZP"] == 24.56


# --------------------------------------------------------------------------- times


def test_mid_exposure_known_answer():
    # MJD-OBS 55676.42336 TAI (2011-04-24), EXPTIME 43 s, TAI - UTC = 34 s then
    expected = 55676.42336 + (21.5 - 34.0) / 86400.0
    assert mid_exposure_utc(55676.42336, 43.0) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize(
    "mjd_utc", [55000.25, 55676.4234, 56108.5, 56108.99, 56109.0, 56500.75, 56746.9]
)
def test_utc_tai_conversions_agree_with_astropy(mjd_utc):
    # 56108 is 2012-06-30, the day that ended with a leap second
    tai = utc_to_tai(mjd_utc)
    assert tai == pytest.approx(Time(mjd_utc, format="mjd", scale="utc").tai.mjd, abs=1e-10)
    assert tai_to_utc(tai) == pytest.approx(mjd_utc, abs=1e-10)
    utc = Time(tai, format="mjd", scale="tai").utc.mjd
    assert tai_to_utc(tai) == pytest.approx(utc, abs=1e-10)


@settings(max_examples=200, deadline=None)
@given(mjd=st.floats(54983.0, 57000.0))
def test_tai_to_utc_inverts_utc_to_tai(mjd):
    assert tai_to_utc(utc_to_tai(mjd)) == pytest.approx(mjd, abs=1e-10)
    assert 32.0 / 86400 < utc_to_tai(mjd) - mjd < 37.0 / 86400


# --------------------------------------------------------------------------- pictures


def test_grey_picture_known_answer():
    # linear, limits 0..10: 0 -> 0, 5 -> rint(127.5) = 128, 10 -> 255, NaN -> 0; north up
    data = np.array([[0.0, 5.0], [10.0, np.nan]])
    img = grey_picture(data, vmin=0.0, vmax=10.0, autoscale=99.5, asinh=False, inverted=False)
    np.testing.assert_array_equal(img, [[255, 0], [0, 128]])
    # asinh, one channel: t * asinh(3t)/(3t) / 0.7 clipped -> t = 0.5 gives asinh(1.5)/1.5/1.4
    img = grey_picture(
        np.array([[5.0]]), vmin=0.0, vmax=10.0, autoscale=99.5, asinh=True, inverted=True
    )
    shown = 0.5 * math.asinh(1.5) / 1.5 / 0.7
    assert img[0, 0] == 255 - round(255 * shown)


def _astropy_cutout_file(source: fits.Header, x0: int, y0: int, pixels: np.ndarray) -> bytes:
    """What astropy writes for the cutout: the reference fitscut_fits must match."""
    height, width = pixels.shape
    buf = io.BytesIO()
    fits.PrimaryHDU(data=pixels, header=fitscut_header(source, x0, y0, width, height)).writeto(
        buf, output_verify="silentfix"
    )
    return buf.getvalue()


_SOURCE_CARDS = [
    ("CRPIX1", 3000.5, "WCS reference pixel"),
    ("CRPIX2", -120.0, "WCS reference pixel"),
    ("CRVAL1", 123.4567890123, ""),
    ("BZERO", 3.0, "scaling"),
    ("BSOFTEN", 2.0, ""),
    ("ZIMAGE", True, ""),
    ("PC001001", -1.0, "obsolete"),
    ("EXPTIME", 43.0, "Exposure time (s)"),
    ("MJD-OBS", 55676.42336, ""),
    ("FILTER", "r.00000", "Filter"),
    ("RADESYS", "ICRS", "a frame the cutout overrides"),
    ("TIMESYS", "UTC", ""),
    ("HIERARCH FPA.ZP", 24.56, "Magnitude zero point"),
    ("COMMENT", "a comment card", None),
]


@settings(max_examples=150, deadline=None)
@given(
    cards=st.lists(st.sampled_from(_SOURCE_CARDS), max_size=len(_SOURCE_CARDS), unique=True),
    x0=st.integers(-300, 7000),
    y0=st.integers(-300, 7000),
    width=st.integers(1, 50),
    height=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_property_fitscut_file_is_what_astropy_writes(cards, x0, y0, width, height, seed):
    source = fits.Header([fits.Card("XTENSION", "IMAGE"), fits.Card("BITPIX", 16)])
    for key, value, comment in cards:
        source.append(fits.Card(key, value, comment) if comment is not None else (key, value))
    rng = np.random.default_rng(seed)
    pixels = rng.normal(0.0, 1e3, (height, width)).astype(np.float32)
    pixels[rng.random((height, width)) < 0.2] = np.nan
    pixels[rng.random((height, width)) < 0.05] = np.inf
    expected = _astropy_cutout_file(source, x0, y0, pixels)
    assert fitscut_fits(source, x0, y0, pixels) == expected


@pytest.mark.parametrize("kind", ["stack", "stack.wt", "stack.mask", "stack.num", "warp"])
def test_fitscut_file_of_emulator_images_is_what_astropy_writes(kind):
    from ps1dask.emulator import Emulator
    from ps1dask.emulator.sky import ImageRef
    from ps1dask.tessellation import SkycellId

    with Emulator(seed=3) as emu:
        svc = emu.service
        cell = SkycellId.parse("skycell.1500.055")
        if kind == "warp":
            ref = svc.listed_images(cell, "i", ("warp",))[0]
        else:
            ref = svc.lookup(ImageRef(cell, "i", kind).filename)
        for position, size in [(None, (240, 240)), (("pixel", -5.0, 17.0), (64, 32))]:
            pixels, (x0, y0), header = svc.cutter.cut_linear(ref, position, size)
            assert fitscut_fits(header, x0, y0, pixels) == _astropy_cutout_file(
                header, x0, y0, pixels
            )
