"""PS1 conventions: linearisation, header repair, cut rule, names, zero points, time."""

from __future__ import annotations

import math
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ps1dask.conventions.flux as flux_module
from ps1dask.conventions import (
    ASINH_A,
    FILTERS,
    CutoutBox,
    MaskBit,
    abmag_to_flux,
    asinh_encode_flux,
    bad_pixels,
    counts_to_microjansky,
    cut,
    cut_array,
    cut_into,
    cutout_box,
    cutout_header,
    flux_to_abmag,
    header_zeropoint,
    image_filename,
    linear_pixels,
    linearize_stack_flux,
    mask_bit_names,
    mid_exposure_mjd_utc,
    parse_filename,
    parse_filters,
    parse_size,
    parse_types,
    position_pixel,
    quantize_to_disk,
    repair_header,
    scaling_keywords,
    stack_zeropoint,
    tai_to_utc_mjd,
    utc_to_tai_mjd,
    warp_zeropoint,
)
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import SkycellId, locate, skycell_wcs

# The example header of the service page (skycell 1725.051, g band).
PAGE_SCALING = {
    "BZERO": 3.283630371094e00,
    "BSCALE": 2.008622776974e-04,
    "BSOFTEN": 8.739592975627e01,
    "BOFFSET": 2.654963016510e00,
}


def _skycell_header(cell: str = "1405.053", warp: bool = False) -> fits.Header:
    """A whole-file header with the real quirks (PC00i00j, CDELT, no RADESYS)."""
    wcs = skycell_wcs(cell)
    h = fits.Header()
    h["NAXIS"] = 2
    h["NAXIS1"], h["NAXIS2"] = wcs.pixel_shape
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = (float(v) for v in wcs.wcs.crval)
    h["CRPIX1"], h["CRPIX2"] = (float(v) for v in wcs.wcs.crpix)
    h["CDELT1"] = h["CDELT2"] = 6.94444461259988e-05
    h["PC001001"], h["PC001002"], h["PC002001"], h["PC002002"] = -1.0, 0.0, 0.0, 1.0
    h["EXPTIME"] = 43.0 if warp else 1200.0
    if warp:
        h["MJD-OBS"] = 55676.42336
        h["HIERARCH FPA.ZP"] = 24.56
    else:
        h.update(PAGE_SCALING)
    return h


# --- flux -------------------------------------------------------------------------------


def test_page_example_formulas_agree():
    # the three equivalent forms on the service page
    v = np.linspace(-2, 12, 50)
    f1 = linearize_stack_flux(v, PAGE_SCALING["BSOFTEN"], PAGE_SCALING["BOFFSET"])
    f2 = PAGE_SCALING["BOFFSET"] + PAGE_SCALING["BSOFTEN"] * 2 * np.sinh(v / 1.0857362)
    f3 = PAGE_SCALING["BOFFSET"] + PAGE_SCALING["BSOFTEN"] * (10 ** (0.4 * v) - 10 ** (-0.4 * v))
    np.testing.assert_allclose(f1, f2, rtol=1e-6)
    np.testing.assert_allclose(f1, f3, rtol=1e-12)
    assert ASINH_A == pytest.approx(1.0857362, abs=1e-7)


@settings(max_examples=200)
@given(
    hnp.arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e3, 1e7)),
    st.floats(1.0, 500.0),
    st.floats(-50.0, 50.0),
)
def test_asinh_roundtrip(flux, bsoften, boffset):
    v = asinh_encode_flux(flux, bsoften, boffset)
    back = linearize_stack_flux(v, bsoften, boffset)
    np.testing.assert_allclose(back, flux, rtol=1e-9, atol=1e-6 * bsoften)


@settings(max_examples=100)
@given(
    hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-300.0, 5e5))
)  # within int16 range
def test_quantised_roundtrip_error_is_below_half_a_step(flux):
    h = dict(PAGE_SCALING, BLANK=-32768)
    v = asinh_encode_flux(flux, h["BSOFTEN"], h["BOFFSET"])
    raw = quantize_to_disk(v, h["BZERO"], h["BSCALE"])
    assert raw.dtype == np.int16
    lin = linear_pixels(raw, h)
    assert lin.dtype == np.float32
    # one quantisation step in v maps to d(flux)/dv * BSCALE in flux
    step = 2 * h["BSOFTEN"] * np.cosh(v / ASINH_A) / ASINH_A * h["BSCALE"]
    assert np.all(np.abs(lin - flux) <= 0.5 * step + 1e-5 * np.abs(flux) + 1e-3)


def test_linear_pixels_blank_and_no_asinh_for_warps():
    raw = np.array([[0, 100, -32768]], dtype=np.int16)
    warp = {"BZERO": 10.0, "BSCALE": 0.5, "BLANK": -32768}
    np.testing.assert_array_equal(linear_pixels(raw, warp), [[10.0, 60.0, np.nan]])
    stack = dict(warp, BSOFTEN=80.0, BOFFSET=1.0)
    out = linear_pixels(raw, stack)
    assert np.isnan(out[0, 2])
    assert out[0, 1] == np.float32(linearize_stack_flux(60.0, 80.0, 1.0))
    # a float cutout without scaling keywords passes through unchanged
    cut = np.array([1.5, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(linear_pixels(cut, {}), cut)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(["<i2", ">i2", "<u2", "|u1", "|i1"]),
    seed=st.integers(0, 2**32 - 1),
    bscale=st.floats(1e-5, 2.0),
    bzero=st.floats(-100.0, 100.0),
    blank=st.sampled_from([None, -32768, 0, 255]),
    asinh=st.booleans(),
)
def test_linear_pixels_table_equals_the_formula(dtype, seed, bscale, bzero, blank, asinh):
    """Whole-file integers go through a per-value table: bit-identical to the formula."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(np.dtype(dtype))
    raw = rng.integers(info.min, info.max, size=(160, 140), endpoint=True).astype(dtype)
    header = {"BSCALE": bscale, "BZERO": bzero}
    if blank is not None and info.min <= blank <= info.max:
        header["BLANK"] = blank
        raw[3, :5] = blank
    if asinh:
        header.update(BSOFTEN=90.0, BOFFSET=-3.0)
    view = raw[:, 3:133]  # a non-contiguous view, as cutouts are
    assert view.size >= flux_module._TABLE_MIN_PIXELS  # large enough for the table path
    got = linear_pixels(view, header)
    want = flux_module._linear_pixels_direct(view, header)
    assert got.dtype == want.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # NaN == NaN here; exact otherwise
    # written in place (a non-contiguous part of a larger array, as a unit's cutouts are)
    # the same values, and nothing around them
    whole = np.full((170, 150), 7.0, dtype=np.float32)
    assert linear_pixels(view, header, out=whole[5:165, 9:139]) is not None
    np.testing.assert_array_equal(whole[5:165, 9:139], want)
    assert (whole[:5] == 7.0).all() and (whole[:, 139:] == 7.0).all()
    small = view[:2, :3]  # below the table's size: the formula, written in place
    np.testing.assert_array_equal(
        linear_pixels(small, header, out=np.empty((2, 3), np.float32)),
        flux_module._linear_pixels_direct(small, header),
    )


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    bscale=st.floats(1e-5, 2.0),
    bzero=st.floats(-100.0, 100.0),
    side=st.integers(8, 127),
)
def test_small_cutouts_go_by_table_when_their_batch_repays_it(seed, bscale, bzero, side):
    """Cutouts each below the table's size (e.g. 120x120 of one file): by the formula alone,
    by the table when the caller's batch of the same scaling repays it; bit-identical."""
    rng = np.random.default_rng(seed)
    header = {"BSCALE": bscale, "BZERO": bzero, "BLANK": -32768, "BSOFTEN": 90.0 + seed % 997}
    header["BOFFSET"] = -3.0
    raw = rng.integers(-32768, 32767, size=(side, side), endpoint=True).astype("<i2")
    raw[0, 0] = -32768
    direct = flux_module._linear_pixels_direct(raw, header)

    def table_calls() -> int:
        info = flux_module._linear_table.cache_info()
        return info.hits + info.misses

    minimum = flux_module._TABLE_MIN_PIXELS
    calls = []
    for batch in (0, minimum - 1, minimum, 10 * minimum):
        before = table_calls()
        np.testing.assert_array_equal(linear_pixels(raw, header, batch_pixels=batch), direct)
        calls.append(table_calls() - before)
    # by the formula until the batch reaches the table's size, by the table from then on
    assert calls == [0, 0, 1, 1]


def test_scaling_keywords_convert_as_the_header_does():
    header = fits.Header()
    header.update(BITPIX=16, BSCALE=0.000224591055721, BZERO=3.29338138279, BLANK=-32768)
    header.update(BSOFTEN=147.787249768, BOFFSET=1.55275059266, EXPTIME=1234.0)
    keywords = scaling_keywords(header)
    assert keywords == {
        "BSCALE": 0.000224591055721,
        "BZERO": 3.29338138279,
        "BLANK": -32768,
        "BSOFTEN": 147.787249768,
        "BOFFSET": 1.55275059266,
    }
    raw = np.random.default_rng(3).integers(-32768, 32767, (40, 30)).astype(np.int16)
    np.testing.assert_array_equal(linear_pixels(raw, keywords), linear_pixels(raw, header))
    assert scaling_keywords(fits.Header({"BZERO": 2.0})) == {"BZERO": 2.0}  # a warp's


# --- headers ----------------------------------------------------------------------------


def test_repair_header_pc_to_cd_and_systems():
    h = _skycell_header(warp=True)
    fixed = repair_header(h)
    assert "PC001001" not in fixed and "CDELT1" not in fixed
    assert fixed["CD1_1"] == pytest.approx(-6.94444461259988e-05)
    assert fixed["CD2_2"] == pytest.approx(6.94444461259988e-05)
    assert fixed["CD1_2"] == 0.0
    assert fixed["RADESYS"] == "FK5" and fixed["EQUINOX"] == 2000.0
    assert fixed["TIMESYS"] == "TAI"
    assert "TIMESYS" not in repair_header(_skycell_header(warp=False))
    # the original is untouched
    assert "PC001001" in h and "RADESYS" not in h


def test_repaired_wcs_matches_tessellation():
    ra, dec = 332.55, 2.21
    row = locate(ra, dec).iloc[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no FITSFixedWarning once repaired
        wcs = WCS(repair_header(_skycell_header()))
    x, y = wcs.all_world2pix(ra, dec, 1)
    # the header's single-precision CDELT (2.4e-8 relative) moves pixels by < 1e-3 px
    assert abs(float(x) - row.x) < 1e-3 and abs(float(y) - row.y) < 1e-3
    assert position_pixel(_skycell_header(), ra, dec) == pytest.approx((float(x), float(y)))


def test_cutout_header_like_fitscut():
    h = _skycell_header()
    out = cutout_header(h, 100, 200, 240, 120)
    assert out["BITPIX"] == -32 and out["NAXIS1"] == 240 and out["NAXIS2"] == 120
    for key in ("BZERO", "BSCALE", "BSOFTEN", "BOFFSET"):
        assert key not in out
    assert out["CRPIX1"] == h["CRPIX1"] - 100 and out["CRPIX2"] == h["CRPIX2"] - 200
    assert out["RADESYS"] == "FK5" and out["TIMESYS"] == "TAI"
    assert out["PC001001"] == -1.0  # still the obsolete keywords, as the service does


# --- cut rule ---------------------------------------------------------------------------


def test_cut_rule_examples():
    assert cutout_box(100.3, 50.0, 240) == CutoutBox(-21, -71, 240, 240)
    # the position sits at the cutout's central pixel (W//2, 0-based)
    box = cutout_box(3126.0, 3123.7, 240)
    assert 3126.0 - 1 - box.x0 == pytest.approx(120.0)
    assert cutout_box(10.5, 10.5, 3) == CutoutBox(9, 9, 3, 3)
    assert cutout_box(10.49, 10.5, "4,2") == CutoutBox(7, 9, 4, 2)


@settings(max_examples=300)
@given(
    st.floats(-500, 7000, allow_nan=False),
    st.floats(-500, 7000, allow_nan=False),
    st.integers(1, 400),
    st.integers(1, 400),
)
def test_cut_rule_properties(xc, yc, w, h):
    box = cutout_box(xc, yc, (w, h))
    assert (box.width, box.height) == (w, h)
    # the position lies within half a pixel of the cutout's pixel W//2 (0-based)
    local_x = xc - 1 - box.x0
    local_y = yc - 1 - box.y0
    assert w // 2 - 0.5 <= local_x < w // 2 + 0.5
    assert h // 2 - 0.5 <= local_y < h // 2 + 0.5


@settings(max_examples=100)
@given(st.integers(-60, 120), st.integers(-60, 120), st.integers(1, 50), st.integers(1, 50))
def test_cut_array_matches_padded_slice(x0, y0, w, h):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 80)).astype(np.float32)
    got = cut_array(image, CutoutBox(x0, y0, w, h))
    pad = 200
    padded = np.full((64 + 2 * pad, 80 + 2 * pad), np.nan, dtype=np.float32)
    padded[pad:-pad, pad:-pad] = image
    want = padded[y0 + pad : y0 + pad + h, x0 + pad : x0 + pad + w]
    np.testing.assert_array_equal(got, want)
    assert got.shape == (h, w)


@settings(max_examples=100)
@given(st.integers(-60, 120), st.integers(-60, 120), st.integers(1, 50), st.integers(1, 50))
def test_cut_into_fills_its_array_as_cut_makes_a_new_one(x0, y0, w, h):
    """In place, into a cutout's part of a larger array holding older values: the same
    pixels as :func:`cut` (NaN off the image), and nothing else of the array changes."""
    rng = np.random.default_rng(1)
    image = rng.normal(size=(64, 80)).astype(np.float32)
    box = CutoutBox(x0, y0, w, h)
    read = lambda rows, cols: image[rows, cols]
    want = cut(box, 80, 64, read)
    unit = np.full((3, h + 2, w + 2), 5.0, dtype=np.float32)  # stale values everywhere

    def write(rows: slice, cols: slice, dest: np.ndarray) -> None:
        dest[...] = image[rows, cols]

    got = cut_into(unit[1, 1 : h + 1, 1 : w + 1], box, 80, 64, write)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(unit[1, 1 : h + 1, 1 : w + 1], want)
    unit[1, 1 : h + 1, 1 : w + 1] = 5.0
    assert (unit == 5.0).all()
    with pytest.raises(ValueError, match="shape"):
        cut_into(np.empty((h + 1, w), np.float32), box, 80, 64, write)


@pytest.mark.parametrize("size", [0, 6001, "10,0", "abc", -5, 2.5, "1,2,3"])
def test_bad_sizes(size):
    with pytest.raises(InvalidParameterError, match="size"):
        parse_size(size)


def test_size_forms():
    assert parse_size(240) == (240, 240)
    assert parse_size("300,200") == (300, 200)
    assert parse_size((10, 20)) == (10, 20)


@settings(max_examples=200)
@given(st.integers(1, 6000), st.integers(1, 6000))
def test_size_pairs_follow_the_stated_order(w, h):
    # "W,H" is width first everywhere; a pair is (W, H) internally and (ny, nx) in the API
    assert parse_size(f"{w},{h}") == (w, h)
    assert parse_size(f"{w},{h}", pair_order="yx") == (w, h)
    assert parse_size((w, h)) == (w, h)
    assert parse_size((h, w), pair_order="yx") == (w, h)
    assert parse_size([h, w] * u.pix, pair_order="yx") == (w, h)
    assert parse_size(np.array([h, w]), pair_order="yx") == (w, h)


@settings(max_examples=200)
@given(st.integers(1, 6000), st.sampled_from(["arcsec", "arcmin", "deg"]))
def test_size_angles_are_pixels_of_a_quarter_arcsec(n, unit):
    angle = (n * 0.25 * u.arcsec).to(unit)
    assert parse_size(angle) == (n, n)
    assert parse_size(n * u.pix) == (n, n)
    # half a pixel either side rounds to the nearest pixel
    assert parse_size(angle + 0.2 * u.arcsec * 0.25) == (n, n)


@settings(max_examples=100)
@given(st.one_of(st.integers(-100, 0), st.integers(6001, 10**6)))
def test_size_out_of_range_is_refused_by_name(n):
    for size in (n, str(n), n * u.pix, (n, 5), (5, n) * u.pix):
        with pytest.raises(InvalidParameterError, match="size"):
            parse_size(size, pair_order="yx")


def test_size_pair_matches_astropy_cutout2d():
    from astropy.nddata import Cutout2D

    image = np.arange(200 * 300, dtype=float).reshape(200, 300)
    for size in ((31, 57), (10 * u.pix, 7 * u.pix), [2.5, 4.0] * u.arcsec):
        width, height = parse_size(size, pair_order="yx")
        cut = Cutout2D(image, (150, 100), size, wcs=WCS(_tan_header()))
        assert cut.shape == (height, width)


@pytest.mark.parametrize("size", [3 * u.kg, 2.5 * u.pix, True, None, [1, 2, 3] * u.pix])
def test_bad_size_quantities(size):
    with pytest.raises(InvalidParameterError, match="size"):
        parse_size(size, pair_order="yx")


def _tan_header():
    header = fits.Header()
    header.update(
        CTYPE1="RA---TAN",
        CTYPE2="DEC--TAN",
        CRVAL1=10.0,
        CRVAL2=20.0,
        CRPIX1=150.0,
        CRPIX2=100.0,
        CD1_1=-0.25 / 3600,
        CD1_2=0.0,
        CD2_1=0.0,
        CD2_2=0.25 / 3600,
    )
    return header


# --- names, filters, types --------------------------------------------------------------


def test_filenames_match_the_service():
    sid = SkycellId(1405, 53)
    assert image_filename(sid, "g") == (
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.g.unconv.fits"
    )
    assert image_filename(sid, "i", "stack.wt").endswith(".stk.i.unconv.wt.fits")
    name = image_filename(SkycellId(2381, 62), "g", "warp", 55676.42336)
    assert name.endswith("/rings.v3.skycell.2381.062.wrp.g.55676_42336.fits")
    parsed = parse_filename(name)
    assert parsed.skycell == SkycellId(2381, 62) and parsed.mjd == 55676.42336 and parsed.is_warp
    assert parse_filename(image_filename(sid, "y", "warp.mask", 55000.1)).image_type == "warp.mask"


@settings(max_examples=200)
@given(
    st.integers(635, 2643),
    st.integers(0, 99),
    st.sampled_from(list(FILTERS)),
    st.sampled_from(
        [
            "stack",
            "stack.wt",
            "stack.mask",
            "stack.exp",
            "stack.num",
            "warp",
            "warp.wt",
            "warp.mask",
        ]
    ),
    st.integers(5_000_000_000, 5_700_000_000),
)
def test_filename_roundtrip(projcell, subcell, band, kind, mjd_e5):
    sid = SkycellId(projcell, subcell)
    mjd = mjd_e5 / 1e5 if kind.startswith("warp") else None
    parsed = parse_filename(image_filename(sid, band, kind, mjd))
    assert (parsed.skycell, parsed.band, parsed.image_type) == (sid, band, kind)
    if mjd is not None:
        assert parsed.mjd == pytest.approx(mjd, abs=5e-6)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "rings.v3.skycell.1405.053.stk.q.unconv.fits", "x.fits"]
)
def test_foreign_filenames_rejected(bad):
    with pytest.raises(InvalidParameterError):
        parse_filename(bad)


def test_filters_and_types():
    assert parse_filters("yig") == "giy"
    assert parse_filters(["r", "z"]) == "rz"
    with pytest.raises(InvalidParameterError, match="unknown"):
        parse_filters("gq")
    assert parse_types("stack,stack.wt") == ("stack", "stack.wt")
    with pytest.raises(InvalidParameterError, match="stack.bogus"):
        parse_types(["stack.bogus"])


# --- zero points, units, time -----------------------------------------------------------


def test_zeropoints():
    assert stack_zeropoint(1000.0) == pytest.approx(32.5)
    assert warp_zeropoint(24.5, 100.0) == pytest.approx(29.5)
    assert header_zeropoint(_skycell_header(warp=True)) == pytest.approx(
        24.56 + 2.5 * math.log10(43)
    )
    assert header_zeropoint(_skycell_header()) == pytest.approx(25 + 2.5 * math.log10(1200))


@settings(max_examples=100)
@given(st.floats(10.0, 25.0), st.floats(20.0, 35.0))
def test_mag_flux_roundtrip_and_jansky(mag, zp):
    flux = abmag_to_flux(mag, zp)
    assert float(flux_to_abmag(flux, zp)) == pytest.approx(mag, abs=1e-9)
    ujy = float(counts_to_microjansky(flux, zp))
    assert ujy == pytest.approx(3631e6 * 10 ** (-0.4 * mag), rel=1e-9)


def test_nonpositive_flux_has_no_magnitude():
    assert np.isnan(flux_to_abmag(-5.0, 25.0))


def test_tai_utc_against_astropy():
    mjd_tai = np.array([55000.25, 55676.42336, 56109.999, 56750.0])  # 2009..2014, 34/35 s
    want = Time(mjd_tai, format="mjd", scale="tai").utc.mjd
    got = tai_to_utc_mjd(mjd_tai)
    np.testing.assert_allclose(got, want, atol=1e-9 / 86400 * 1e3)  # < 1 microsecond
    offsets = (mjd_tai - got) * 86400
    assert set(np.round(offsets).astype(int)) <= {34, 35}
    np.testing.assert_allclose(utc_to_tai_mjd(got), mjd_tai, rtol=0, atol=1e-10)


def test_mid_exposure_utc():
    mid = mid_exposure_mjd_utc(55676.42336, 43.0)
    assert mid[0] == pytest.approx(55676.42336 + 21.5 / 86400 - 34 / 86400, abs=1e-9)


def test_mask_bits():
    assert mask_bit_names(0x28) == ["BLANK", "SAT"]
    assert MaskBit.SUSPECT == 0x80
    np.testing.assert_array_equal(bad_pixels(np.array([0, 0x8, 0x200])), [False, True, False])
