"""The emulator's synthetic sky: determinism, region == whole, truth photometry, coverage.

Renders exactly one whole file (a g-band stack, module fixture); everything else uses small
regions, so the module stays quick on two cores.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture

from ps1dask.conventions import (
    IMAGE_TYPES,
    STACK_TYPES,
    MaskBit,
    bad_pixels,
    flux_to_abmag,
    header_wcs,
    header_zeropoint,
    linear_pixels,
    position_pixel,
)
from ps1dask.emulator.files import WholeFileCache, reserved_row_bytes, whole_file_size
from ps1dask.emulator.image_models import stack_model, warp_model
from ps1dask.emulator.sky import ImageRef, SyntheticSky, WarpEpoch
from ps1dask.emulator.survey import projcell_exposures, projcell_frame, skycell_exposures
from ps1dask.exceptions import InvalidParameterError, NotFoundError
from ps1dask.tessellation import SkycellId, locate, skycell_center, skycell_geometry_of

SEED = 7
CELL = SkycellId(1405, 53)  # NGC 7222 field, zones 22-23: 6240 x 6243 pixels
NAXIS1, NAXIS2 = 6240, 6243
WARP_TYPES = ("warp", "warp.wt", "warp.mask")


@pytest.fixture(scope="module")
def sky() -> SyntheticSky:
    return SyntheticSky(SEED)


def _warp_ref(
    sky: SyntheticSky, cell: SkycellId, band: str, kind: str = "warp", i: int = 0
) -> ImageRef:
    ep = sky.warp_epochs(cell, band)[i]
    return ImageRef(cell, band, kind, ep.mjd_listed)


def _crossing_epoch(sky: SyntheticSky) -> tuple[SkycellId, str, int]:
    """(skycell, filter, index in its list) of an exposure whose field edge crosses it.

    Searches CELL first, then the other skycells of its projection cell.
    """
    from ps1dask.emulator.coverage import footprint

    frame = projcell_frame(CELL.projcell)
    for sub in [CELL.subcell, *range(100)]:
        cell = SkycellId(CELL.projcell, sub)
        ox, oy = frame.offset(cell.subcell)
        xs, ys = (ox, ox + frame.naxis1), (oy, oy + frame.naxis2)
        for band in "grizy":
            for i, e in enumerate(skycell_exposures(sky.seed, cell, band)):
                if footprint(e, xs, ys)[0] == "cross":
                    return cell, band, i
    raise AssertionError("no exposure's field edge crosses projection cell 1405")


# ----------------------------------------------------------------------------------------
# references and listings
# ----------------------------------------------------------------------------------------


def test_image_ref_names_round_trip(sky: SyntheticSky) -> None:
    ref = ImageRef(CELL, "g", "stack")
    assert ref.filename == "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.g.unconv.fits"
    assert ref.shortname == "rings.v3.skycell.1405.053.stk.g.unconv.fits"
    assert ImageRef.from_filename(ref.filename) == ref
    assert ImageRef.from_filename(ref.shortname) == ref
    assert ImageRef("1405.053", "g", "stack", 0.0) == ref  # strings and mjd 0 normalised
    for kind in IMAGE_TYPES:
        r = ImageRef(CELL, "i", kind) if kind in STACK_TYPES else _warp_ref(sky, CELL, "i", kind, 3)
        assert ImageRef.from_filename(r.filename) == r
    warp = _warp_ref(sky, CELL, "r", i=2)
    assert ".wrp.r." in warp.shortname and warp.shortname.endswith(".fits")
    with pytest.raises(InvalidParameterError):
        ImageRef.from_filename("/data/foo.fits")
    with pytest.raises(InvalidParameterError):
        ImageRef(CELL, "u", "stack")
    with pytest.raises(InvalidParameterError):
        ImageRef(CELL, "g", "warp")  # no MJD
    with pytest.raises(InvalidParameterError):
        ImageRef(CELL, "g", "stack.psf")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    projcell=st.integers(635, 2643),
    subcell=st.integers(0, 99),
    band=st.sampled_from("grizy"),
)
def test_warp_epochs_are_realistic(
    sky: SyntheticSky, projcell: int, subcell: int, band: str
) -> None:
    cell = SkycellId.parse((projcell, subcell))
    epochs = sky.warp_epochs(cell, band)
    assert 10 <= len(epochs) <= 30
    assert all(isinstance(e, WarpEpoch) for e in epochs)
    tai = np.array([e.mjd_obs_tai for e in epochs])
    assert np.all(np.diff(tai) > 0)
    assert tai.min() > 54982.0 and tai.max() < 56748.0  # 2009-06 .. 2014-03
    assert [e.index for e in epochs] == sorted({e.index for e in epochs})
    listed = [e.mjd_listed for e in epochs]
    assert len(set(listed)) == len(listed)
    expt = {"g": 43.0, "r": 40.0, "i": 45.0, "z": 30.0, "y": 30.0}[band]
    for e in epochs:
        assert e.mjd_listed == round(e.mjd_obs_tai, 5)
        assert e.exptime == expt
        assert 24.3 <= e.fpa_zp <= 25.0
        assert 0.8 <= e.seeing_fwhm_arcsec <= 1.8
        # UTC mid-exposure: TAI start + half the exposure - (34 or 35 leap seconds)
        leap = (e.mjd_obs_tai + e.exptime / 2 / 86400 - e.mjd_mid_utc) * 86400
        if 56108.0 <= e.mjd_mid_utc < 56109.0:  # 2012-06-30 had a leap second (ERFA)
            assert 34.0 <= leap <= 35.0
        else:
            assert leap == pytest.approx(34.0 if e.mjd_obs_tai < 56109.0 else 35.0, abs=1e-3)
        # at night in Hawaii (UTC 05:00 .. 16:00)
        assert 0.2 < e.mjd_mid_utc % 1.0 < 0.67
    # TTI pairs: most exposures have a partner 15-30 minutes away
    dt = np.diff(tai) * 1440.0
    assert np.sum((dt >= 14.9) & (dt <= 30.1)) >= (len(epochs) - 3) // 2 - 1
    # all skycells of a projection cell draw from one list of exposures
    assert {e.index for e in epochs} <= {
        x.epoch.index for x in projcell_exposures(sky.seed, projcell, band)
    }


def test_outside_footprint_has_no_data(sky: SyntheticSky) -> None:
    south = SkycellId(600, 44)  # zone 14: no PS1 3pi images
    assert not sky.has_data(south)
    assert sky.has_data(CELL)
    assert sky.warp_epochs(south, "g") == []
    assert sky.images(south, "grizy", ["stack", "warp"]) == []
    with pytest.raises(NotFoundError):
        sky.render_disk(ImageRef(south, "g", "stack"), slice(0, 10), slice(0, 10))
    with pytest.raises(NotFoundError):
        sky.image_header(ImageRef(south, "g", "stack"))


def test_listing_order_and_contents(sky: SyntheticSky) -> None:
    refs = sky.images(CELL, "zgi", ["warp", "stack.wt", "stack", "warp.mask"])
    n_stack = 3 * 2
    stacks, warps = refs[:n_stack], refs[n_stack:]
    assert all(not r.is_warp for r in stacks) and all(r.is_warp for r in warps)
    # the real service's filter order (g, i, r, y, z), stack types in canonical order
    assert [(r.band, r.image_type) for r in stacks] == [
        (b, t) for b in "giz" for t in ("stack", "stack.wt")
    ]
    for band in "giz":
        mine = [r for r in warps if r.band == band]
        epochs = sky.warp_epochs(CELL, band)
        assert [r.mjd for r in mine[::2]] == [e.mjd_listed for e in epochs]
        assert [r.image_type for r in mine] == ["warp", "warp.mask"] * len(epochs)
    assert [r.band for r in warps] == sorted((r.band for r in warps), key="giz".index)
    # a foreign MJD is not a file of the service
    bogus = ImageRef(CELL, "g", "warp", 55555.55555)
    with pytest.raises(NotFoundError):
        sky.render_disk(bogus, slice(0, 5), slice(0, 5))


# ----------------------------------------------------------------------------------------
# headers
# ----------------------------------------------------------------------------------------


def test_stack_header_quirks(sky: SyntheticSky) -> None:
    h = sky.image_header(ImageRef(CELL, "g", "stack"))
    geo = skycell_geometry_of(CELL)
    assert "SIMPLE" not in h and "XTENSION" not in h
    assert h["BITPIX"] == 16 and (h["NAXIS1"], h["NAXIS2"]) == (NAXIS1, NAXIS2)
    assert h["BLANK"] == -32768
    assert (h["CRVAL1"], h["CRVAL2"], h["CRPIX1"], h["CRPIX2"]) == (332.0, 2.0, 11760.0, 242.0)
    assert (geo.crpix1, geo.crpix2) == (h["CRPIX1"], h["CRPIX2"])
    assert h["CDELT1"] == h["CDELT2"] == 6.94444461259988e-05
    assert (h["PC001001"], h["PC001002"], h["PC002001"], h["PC002002"]) == (-1.0, 0.0, 0.0, 1.0)
    assert h["CTYPE1"] == "RA---TAN" and h["CTYPE2"] == "DEC--TAN"
    for absent in ("RADESYS", "TIMESYS", "EQUINOX", "MJD-OBS", "FPA.ZP", "CD1_1"):
        assert absent not in h
    # the real example: BZERO ~ 3.28, BSCALE ~ 2.0e-4, BSOFTEN ~ 87, BOFFSET ~ 2.65
    assert 2.0 < h["BZERO"] < 5.0 and 1e-4 < h["BSCALE"] < 4e-4
    assert 30.0 < h["BSOFTEN"] < 300.0 and 0.0 < h["BOFFSET"] < 10.0
    n = len(sky.warp_epochs(CELL, "g"))
    assert h["EXPTIME"] >= 43.0 * n  # the stack's inputs: every exposure of the projcell
    assert header_zeropoint(h) == pytest.approx(25 + 2.5 * math.log10(h["EXPTIME"]))
    wt = sky.image_header(ImageRef(CELL, "g", "stack.wt"))
    assert "BSOFTEN" in wt and wt["BSOFTEN"] != h["BSOFTEN"]
    for kind in ("stack.mask", "stack.num"):
        m = sky.image_header(ImageRef(CELL, "g", kind))
        assert "BZERO" not in m and "BSOFTEN" not in m and "BLANK" not in m
    ex = sky.image_header(ImageRef(CELL, "g", "stack.exp"))
    assert "BSOFTEN" not in ex and "BZERO" in ex
    # the header WCS agrees with the tessellation
    ra, dec = skycell_center(CELL)
    loc = locate(ra, dec)
    x, y = position_pixel(h, ra, dec)
    assert (x, y) == pytest.approx((loc.x[0], loc.y[0]), abs=2e-3)
    assert header_wcs(h).pixel_to_world_values(x - 1, y - 1) == pytest.approx(
        (ra % 360, dec), abs=1e-9
    )


def test_warp_header_quirks(sky: SyntheticSky) -> None:
    epoch = sky.warp_epochs(CELL, "r")[4]
    h = sky.image_header(ImageRef(CELL, "r", "warp", epoch.mjd_listed))
    assert h["MJD-OBS"] == epoch.mjd_obs_tai
    assert h["EXPTIME"] == 40.0
    assert h["FPA.ZP"] == epoch.fpa_zp
    assert h["FILTER"] == "r.00000" and h["FPA.FILTER"] == "r.00000"
    for absent in ("BSOFTEN", "BOFFSET", "TIMESYS", "RADESYS"):
        assert absent not in h
    assert header_zeropoint(h) == pytest.approx(epoch.fpa_zp + 2.5 * math.log10(40.0))
    assert "BZERO" in h and "BSCALE" in h and h["BLANK"] == -32768


# ----------------------------------------------------------------------------------------
# pixels: regions are bit-identical to wholes, overlaps agree, determinism
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whole_stack(sky: SyntheticSky, tmp_path_factory: pytest.TempPathFactory):
    """The one whole file of the module: rendered and written."""
    ref = ImageRef(CELL, "g", "stack")
    cache = WholeFileCache(sky, tmp_path_factory.mktemp("whole"))
    path = cache.path(ref)
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        raw = np.array(hdul[1].data)
    return ref, cache, path, raw


def test_whole_file_round_trip(sky: SyntheticSky, whole_stack) -> None:
    ref, cache, path, raw = whole_stack
    assert raw.dtype == np.int16 and raw.shape == (NAXIS2, NAXIS1)
    assert cache.path(ref) == path  # cached
    assert path.name == ref.shortname
    header = sky.image_header(ref)
    with fits.open(path) as hdul:
        assert len(hdul) == 2
        assert hdul[0].data is None
        assert isinstance(hdul[1], fits.CompImageHDU)
        h = hdul[1].header
        for key in header:
            if key != "COMMENT":
                assert h[key] == header[key], key
        assert "RADESYS" not in h and h["PC001001"] == -1.0
        scaled = np.array(hdul[1].data)
    with fits.open(path, disable_image_compression=True) as hdul:
        table = hdul[1].header
        assert table["ZCMPTYPE"] == "RICE_1" and table["ZIMAGE"] is True
        assert (table["ZTILE1"], table["ZTILE2"]) == (NAXIS1, 1)  # row tiles
        assert (table["ZNAXIS1"], table["ZNAXIS2"]) == (NAXIS1, NAXIS2)
        # the heap is each row's reserve; the tiles fill ~85% of it and a gap of zeros follows
        assert table["PCOUNT"] == NAXIS2 * reserved_row_bytes(NAXIS1)
        table_at = hdul[1].fileinfo()["datLoc"]
    with open(path, "rb") as fh:  # one (length, heap offset) descriptor per row
        fh.seek(table_at)
        descriptors = np.frombuffer(fh.read(8 * NAXIS2), ">i4").reshape(NAXIS2, 2)
    used = int((descriptors[:, 0] + descriptors[:, 1]).max())
    assert 0.5 * table["PCOUNT"] < used < table["PCOUNT"]
    assert "THEAP" not in table
    assert path.stat().st_size == whole_file_size(sky, ref) == cache.size(ref)
    with open(path, "rb") as fh:
        fh.seek(path.stat().st_size - (table["PCOUNT"] - used))
        assert not any(fh.read())  # the gap and the padding are zeros
    sub = raw[::5]
    expect = header["BZERO"] + header["BSCALE"] * sub.astype(np.float64)
    expect[sub == -32768] = np.nan
    np.testing.assert_allclose(scaled[::5], expect, rtol=2e-7, atol=2e-7 * abs(header["BZERO"]))
    # sky-level statistics: linear flux around BOFFSET with about BSOFTEN of noise
    lin = linear_pixels(raw[::7, ::7], header)
    med = float(np.nanmedian(lin))
    mad = float(np.nanmedian(np.abs(lin - med))) * 1.4826
    assert abs(med - header["BOFFSET"]) < 0.1 * header["BSOFTEN"]
    assert 0.8 * header["BSOFTEN"] < mad < 1.6 * header["BSOFTEN"]


def _compressed_row_bytes(row: np.ndarray) -> int:
    """Bytes astropy's RICE_1 takes for one int16 row (one tile)."""
    hdu = fits.CompImageHDU(data=row[None, :], compression_type="RICE_1")
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    buffer.seek(0)
    with fits.open(buffer, disable_image_compression=True) as hdul:
        return int(hdul[1].header["PCOUNT"])


_int16 = st.integers(-32768, 32767)


@settings(max_examples=150, deadline=None)
@given(
    row=st.one_of(
        # uniform noise over the whole range (RICE's high-entropy blocks) ...
        st.lists(_int16, min_size=1, max_size=200),
        # ... small values with rare huge jumps (long Rice codes) ...
        st.lists(
            st.one_of(st.integers(-40, 40), st.sampled_from([-32768, 32767])),
            min_size=1,
            max_size=200,
        ),
        # ... and alternating extremes, each block coded on the edge of high entropy
        st.integers(1, 200).flatmap(
            lambda n: st.integers(0, 32767).map(lambda a: [a if i % 2 else -a for i in range(n)])
        ),
    )
)
def test_a_compressed_row_never_exceeds_its_reserve(row: list[int]) -> None:
    """What makes a whole file's size computable without its pixels: no RICE_1 row of 16-bit
    pixels takes more than :func:`reserved_row_bytes`."""
    pixels = np.array(row, dtype=np.int16)
    assert _compressed_row_bytes(pixels) <= reserved_row_bytes(pixels.size)


def test_the_row_reserve_is_the_high_entropy_size() -> None:
    # 16 bits for the first pixel, then per block of 32 a 4-bit code and 16 bits a pixel
    assert reserved_row_bytes(1) == (16 + 4 + 16 + 7) // 8
    assert reserved_row_bytes(32) == -(-(16 + 4 + 512) // 8)  # 66.5, whole bytes
    assert reserved_row_bytes(6250) == -(-(16 + 4 * 196 + 16 * 6250) // 8)


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(-20_000, 20_000),
    length=st.integers(0, 7_000),
    origin=st.integers(-5_000, 5_000),
    cell=st.integers(1, 700),
    ota_gap=st.integers(1, 120),
)
def test_cell_runs_are_the_runs_of_each_pixels_cell(start, length, origin, cell, ota_gap):
    """The cell-by-cell arithmetic of the detector cells along an axis equals the definition
    pixel by pixel: pixel ``p`` is in cell ``8 * ota + u // cell`` where
    ``ota, u = divmod(p - origin, 8 * cell + ota_gap)``, or in a gap when ``u >= 8 * cell``."""
    from ps1dask.emulator.coverage import _cell_runs

    period = 8 * cell + ota_gap
    expected: list[tuple[int, int]] = []  # (cell, index) of every pixel not in a gap
    for i, p in enumerate(range(start, start + length)):
        ota, u = divmod(p - origin, period)
        if u < 8 * cell:
            expected.append((ota * 8 + u // cell, i))
    runs = _cell_runs((start, start + length), origin, cell, ota_gap)
    got = [(c, i) for c, s in runs for i in range(s.start, s.stop)]
    assert got == expected
    assert len({c for c, _ in runs}) == len(runs)  # one run per cell


@settings(max_examples=300, deadline=None)
@given(
    key=st.integers(0, 2**64 - 1),
    a=st.integers(-(2**31), 2**31 - 1),
    b=st.integers(-(2**31), 2**31 - 1),
)
def test_uniform_pair_is_uniform_pairs_of_one_pair(key, a, b):
    from ps1dask.emulator.noise import uniform_pair, uniform_pairs

    assert uniform_pair(key, a, b) == uniform_pairs(key, np.array([a]), np.array([b]))[0, 0]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_stack_regions_equal_the_whole_file(sky: SyntheticSky, whole_stack, data) -> None:
    ref, _, _, raw = whole_stack
    edge = data.draw(st.sampled_from(["none", "left", "right", "top", "bottom", "corner"]))
    h = data.draw(st.integers(1, 300))
    w = data.draw(st.integers(1, 300))
    r0 = data.draw(st.integers(0, NAXIS2 - h))
    c0 = data.draw(st.integers(0, NAXIS1 - w))
    if edge in ("left", "corner"):
        c0 = 0
    if edge == "right":
        c0 = NAXIS1 - w
    if edge in ("top", "corner"):
        r0 = NAXIS2 - h
    if edge == "bottom":
        r0 = 0
    got = sky.render_disk(ref, slice(r0, r0 + h), slice(c0, c0 + w))
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, raw[r0 : r0 + h, c0 : c0 + w])


@pytest.mark.parametrize("kind", [k for k in IMAGE_TYPES if k != "stack"])
def test_regions_equal_a_larger_region(sky: SyntheticSky, kind: str) -> None:
    """Every other image type: random sub-regions of a 700 x 700 corner render."""
    if kind in WARP_TYPES:
        cell, band, i = _crossing_epoch(sky)
        ref = _warp_ref(sky, cell, band, kind, i)
    else:
        ref = ImageRef(CELL, "i", kind)
    rows, cols = slice(NAXIS2 - 700, NAXIS2), slice(0, 700)
    big = sky.render_disk(ref, rows, cols)
    assert big.shape == (700, 700) and big.dtype == np.int16
    rng = np.random.default_rng(11)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(1, 260, size=2))
        r0 = int(rng.integers(0, 700 - h + 1))
        c0 = int(rng.integers(0, 700 - w + 1))
        if rng.random() < 0.3:
            r0, c0 = 700 - h, 0  # the image corner
        got = sky.render_disk(ref, slice(rows.start + r0, rows.start + r0 + h), slice(c0, c0 + w))
        np.testing.assert_array_equal(got, big[r0 : r0 + h, c0 : c0 + w])


def test_render_whole_is_blockwise_render_disk(sky: SyntheticSky, whole_stack) -> None:
    ref, _, _, raw = whole_stack
    # a band across several internal row blocks, with all columns
    got = sky.render_disk(ref, slice(1000, 1500), slice(0, NAXIS1))
    np.testing.assert_array_equal(got, raw[1000:1500])


@pytest.mark.parametrize("kind", ["stack", "stack.num", "warp", "warp.mask"])
def test_overlapping_skycells_agree(sky: SyntheticSky, kind: str) -> None:
    """Skycells of one projection cell share the pixel grid: 480-pixel overlaps agree."""
    left, right = SkycellId(1405, 53), SkycellId(1405, 54)  # k = 3 and k = 4
    above = SkycellId(1405, 63)
    band = "z"
    if kind.startswith("warp"):
        common = {e.mjd_listed for e in sky.warp_epochs(left, band)}
        common &= {e.mjd_listed for e in sky.warp_epochs(right, band)}
        common &= {e.mjd_listed for e in sky.warp_epochs(above, band)}
        mjd = sorted(common)[len(common) // 2]
        refs = [ImageRef(c, band, kind, mjd) for c in (left, right, above)]
    else:
        refs = [ImageRef(c, band, kind) for c in (left, right, above)]
    px, py = NAXIS1 - 480, NAXIS2 - 480
    # left's columns px.. are right's columns 0..480; rows shared in full (sample a band)
    a = sky.render_disk(refs[0], slice(2000, 2300), slice(px, NAXIS1))
    b = sky.render_disk(refs[1], slice(2000, 2300), slice(0, 480))
    np.testing.assert_array_equal(a, b)
    # left's rows py.. are the rows 0..480 of the skycell above
    a = sky.render_disk(refs[0], slice(py, NAXIS2), slice(3000, 3250))
    b = sky.render_disk(refs[2], slice(0, 480), slice(3000, 3250))
    np.testing.assert_array_equal(a, b)


def _clear_all_caches() -> None:
    import functools

    from ps1dask.emulator import coverage, headers, image_models, render, stars, survey
    from ps1dask.emulator import sky as sky_mod

    for mod in (survey, stars, sky_mod, image_models, coverage, headers, render):
        for obj in vars(mod).values():
            if isinstance(obj, functools._lru_cache_wrapper):
                obj.cache_clear()


def test_deterministic_by_seed() -> None:
    refs = lambda s: [
        ImageRef(CELL, "r", "stack"),
        _warp_ref(s, CELL, "r", "warp", 1),
        _warp_ref(s, CELL, "r", "warp.mask", 1),
    ]
    region = (slice(3000, 3120), slice(100, 260))
    one = SyntheticSky(123)
    first = [one.render_disk(r, *region) for r in refs(one)]
    truth = one.sources(*skycell_center(CELL), 300.0)
    epochs = one.warp_epochs(CELL, "r")
    _clear_all_caches()
    two = SyntheticSky(123)
    assert two.warp_epochs(CELL, "r") == epochs
    assert two.sources(*skycell_center(CELL), 300.0) == truth
    for r, a in zip(refs(two), first):
        np.testing.assert_array_equal(two.render_disk(r, *region), a)
    other = SyntheticSky(124)
    assert other.warp_epochs(CELL, "r") != epochs
    assert other.sources(*skycell_center(CELL), 300.0) != truth
    assert not np.array_equal(other.render_disk(ImageRef(CELL, "r", "stack"), *region), first[0])


def test_render_disk_validates_regions(sky: SyntheticSky) -> None:
    ref = ImageRef(CELL, "g", "stack.num")
    assert sky.render_disk(ref, slice(5, 5), slice(0, 10)).shape == (0, 10)
    for rows, cols in [
        (slice(-1, 10), slice(0, 10)),
        (slice(0, NAXIS2 + 1), slice(0, 10)),
        (slice(0, 10), slice(0, 10, 2)),
        (slice(10, 5), slice(0, 10)),
    ]:
        with pytest.raises(InvalidParameterError):
            sky.render_disk(ref, rows, cols)


# ----------------------------------------------------------------------------------------
# truth
# ----------------------------------------------------------------------------------------


def test_sources_are_json_and_consistent(sky: SyntheticSky) -> None:
    ra, dec = skycell_center(CELL)
    small = sky.sources(ra, dec, 120.0)
    big = sky.sources(ra, dec, 900.0)
    assert json.loads(json.dumps(big)) == big
    ids = [s["id"] for s in big]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {s["id"] for s in small} <= set(ids)
    assert all(isinstance(s["id"], int) and s["id"] < 2**53 for s in big)
    # number counts: ~2000-5000 per square degree down to r = 23.5, rising ~10**(0.3 m)
    density = len(big) / (math.pi * (900 / 3600) ** 2)
    assert 1500 < density < 6000
    r = np.array([s["mag_r"] for s in big if s["variability"]["kind"] != "transient"])
    assert r.min() > 12.9 and r.max() < 23.6  # transients: a 24-27 mag quiescent baseline
    assert np.sum(r < 21.5) / np.sum(r < 22.5) == pytest.approx(10**-0.3, rel=0.3)
    # colours: some red stars are brighter in z than in g by > 2 mag, some are blue
    gz = np.array([s["mag_g"] - s["mag_z"] for s in big if s["variability"]["kind"] == "constant"])
    assert np.any(gz > 2.0) and np.any(gz < 0.3)
    kinds = {s["variability"]["kind"] for s in big}
    assert kinds == {"constant", "periodic", "transient"}
    # a source's truth does not depend on the query
    by_id = {s["id"]: s for s in big}
    for s in small:
        assert by_id[s["id"]] == s
        assert sky._source(s["id"]) == s


def test_true_mag_light_curves(sky: SyntheticSky) -> None:
    ra, dec = skycell_center(CELL)
    srcs = sky.sources(ra, dec, 1500.0)
    constant = next(s for s in srcs if s["variability"]["kind"] == "constant")
    assert sky.true_mag(constant, "i", 55555.5) == constant["mag_i"]
    periodic = [s for s in srcs if s["variability"]["kind"] == "periodic"]
    assert periodic
    for s in periodic[:10]:
        v = s["variability"]
        assert 0.2 <= v["period"] <= 50.0 and 0.0 < v["amplitude"] <= 0.5
        t = 55000.0 + np.linspace(0.0, v["period"], 4001)[:-1]
        mags = sky.true_mag(s["id"], "g", t)
        assert mags.shape == t.shape
        # sinusoid in flux: the time-mean flux is the mean-magnitude flux
        assert np.mean(10 ** (-0.4 * mags)) == pytest.approx(10 ** (-0.4 * s["mag_g"]), rel=1e-9)
        assert s["mag_g"] - mags.min() == pytest.approx(v["amplitude"], abs=1e-3)
    transients = [s for s in srcs if s["variability"]["kind"] == "transient"]
    assert transients
    epochs_mid = [e.mjd_mid_utc for b in "grizy" for e in sky.warp_epochs(CELL, b)]
    for s in transients:
        v = s["variability"]
        assert min(epochs_mid) - 30 < v["peak_mjd"] < max(epochs_mid) + 30
        at_peak = sky.true_mag(s, "r", v["peak_mjd"])
        assert at_peak < s["mag_r"] - 2  # far brighter than the baseline
        assert at_peak == pytest.approx(
            -2.5 * math.log10(10 ** (-0.4 * v["peak_mags"]["r"]) + 10 ** (-0.4 * s["mag_r"]))
        )
        assert sky.true_mag(s, "r", v["peak_mjd"] + 1000) == pytest.approx(s["mag_r"], abs=1e-3)


def _isolated(
    srcs: list[dict], band: str, mag: float, s: dict, radius_arcsec: float = 10.0
) -> bool:
    cosd = math.cos(math.radians(s["dec"]))
    for o in srcs:
        if o["id"] == s["id"]:
            continue
        d = math.hypot((o["ra"] - s["ra"]) * cosd, o["dec"] - s["dec"]) * 3600
        if d < radius_arcsec and o[f"mag_{band}"] < mag + 4.5:
            return False
    return True


def _aperture_mags(
    sky: SyntheticSky, ref: ImageRef, band: str, mjd_utc: float | None, sigma_psf: float
):
    """(true mag, measured - true, expected error) of isolated 15-19 mag stars in the image."""
    header = sky.image_header(ref)
    zp = header_zeropoint(header)
    ra, dec = skycell_center(CELL)
    srcs = sky.sources(ra, dec, 1200.0)
    out = []
    r_ap, r_in, r_out = 4.0 * sigma_psf, 7.0 * sigma_psf, 10.0 * sigma_psf
    half = int(r_out) + 3
    for s in srcs:
        mag = s[f"mag_{band}"] if mjd_utc is None else float(sky.true_mag(s, band, mjd_utc))
        if not 15.0 <= mag <= 19.0 or not _isolated(srcs, band, mag, s):
            continue
        x, y = position_pixel(header, s["ra"], s["dec"])
        xc, yc = x - 1.0, y - 1.0  # 0-based
        r0, c0 = round(yc) - half, round(xc) - half
        if r0 < 0 or c0 < 0 or r0 + 2 * half + 1 > NAXIS2 or c0 + 2 * half + 1 > NAXIS1:
            continue
        rows, cols = slice(r0, r0 + 2 * half + 1), slice(c0, c0 + 2 * half + 1)
        lin = linear_pixels(sky.render_disk(ref, rows, cols), header).astype(np.float64)
        if np.isnan(lin).any():
            continue
        if ref.is_warp:
            mref = ImageRef(ref.skycell, ref.band, "warp.mask", ref.mjd)
            if bad_pixels(sky.render_disk(mref, rows, cols)).any():
                continue
            wref = ImageRef(ref.skycell, ref.band, "warp.wt", ref.mjd)
            var = linear_pixels(sky.render_disk(wref, rows, cols), sky.image_header(wref))
        else:
            wref = ImageRef(ref.skycell, ref.band, "stack.wt")
            var = linear_pixels(sky.render_disk(wref, rows, cols), sky.image_header(wref))
        pos = (xc - c0, yc - r0)
        ap = CircularAperture(pos, r=r_ap)
        bkg = ApertureStats(lin, CircularAnnulus(pos, r_in=r_in, r_out=r_out)).median
        flux = ApertureStats(lin, ap).sum - bkg * ap.area
        err = math.sqrt(ApertureStats(var.astype(np.float64), ap).sum) / flux * 1.0857
        meas = float(np.ravel(flux_to_abmag(flux, zp))[0])
        out.append((mag, meas - mag, err))
    return np.array(out)


def test_stack_photometry_recovers_truth(sky: SyntheticSky) -> None:
    ref = ImageRef(CELL, "r", "stack")
    model = stack_model(sky.seed, CELL.projcell, "r")
    res = _aperture_mags(sky, ref, "r", None, model.sigma_psf)
    assert len(res) >= 8
    assert np.all(np.abs(res[:, 1]) < 0.05), res
    assert abs(np.mean(res[:, 1])) < 0.01


def test_warp_photometry_recovers_truth_at_its_epoch(sky: SyntheticSky) -> None:
    """Warp depth is ~21.8 (r), so a 19 mag star has ~0.03 mag of aperture noise: stars
    whose expected error (from the warp's variance image) is below 0.0125 mag must come out
    within 0.05 mag, and every 15-19 mag star within 4 expected errors."""
    epochs = skycell_exposures(sky.seed, CELL, "r")
    exp = min(epochs, key=lambda e: e.epoch.seeing_fwhm_arcsec)  # the sharpest warp
    ref = ImageRef(CELL, "r", "warp", exp.epoch.mjd_listed)
    model = warp_model(sky.seed, exp)
    res = _aperture_mags(sky, ref, "r", exp.epoch.mjd_mid_utc, model.sigma_psf)
    precise = res[res[:, 2] < 0.0125]
    assert len(precise) >= 4 and len(res) >= 8
    assert np.all(np.abs(precise[:, 1]) < 0.05), precise
    assert np.all(np.abs(res[:, 1]) < 4 * res[:, 2] + 0.005), res
    assert abs(np.mean(res[:, 1] / res[:, 2])) < 1.0  # unbiased


def test_warps_show_variables_at_their_epoch(sky: SyntheticSky) -> None:
    """The brightest strongly varying periodic star: warps follow true_mag, not the mean."""
    ra, dec = skycell_center(CELL)
    frame = projcell_frame(CELL.projcell)
    cands = []
    for s in sky.sources(ra, dec, 1500.0):
        v = s["variability"]
        if v["kind"] == "periodic" and v["amplitude"] > 0.15 and 15.0 < s["mag_i"] < 19.5:
            cands.append(s)
    assert cands, "no bright large-amplitude periodic variable near the field centre"
    s = min(cands, key=lambda c: c["mag_i"])
    header = sky.image_header(ImageRef(CELL, "i", "stack"))
    x, y = position_pixel(header, s["ra"], s["dec"])
    assert 30 < x < NAXIS1 - 30 and 30 < y < NAXIS2 - 30, frame
    errors_true, errors_mean = [], []
    for exp in skycell_exposures(sky.seed, CELL, "i"):
        ref = ImageRef(CELL, "i", "warp", exp.epoch.mjd_listed)
        h = sky.image_header(ref)
        r0, c0 = round(y - 1) - 25, round(x - 1) - 25
        rows, cols = slice(r0, r0 + 51), slice(c0, c0 + 51)
        lin = linear_pixels(sky.render_disk(ref, rows, cols), h).astype(np.float64)
        mask = sky.render_disk(ImageRef(CELL, "i", "warp.mask", ref.mjd), rows, cols)
        if np.isnan(lin).any() or bad_pixels(mask).any():
            continue
        sig = warp_model(sky.seed, exp).sigma_psf
        pos = (x - 1 - c0, y - 1 - r0)
        ap = CircularAperture(pos, r=4.0 * sig)
        bkg = ApertureStats(lin, CircularAnnulus(pos, r_in=6.0 * sig, r_out=8.0 * sig)).median
        flux = ApertureStats(lin, ap).sum - bkg * ap.area
        meas = float(np.ravel(flux_to_abmag(flux, header_zeropoint(h)))[0])
        errors_true.append(meas - sky.true_mag(s, "i", exp.epoch.mjd_mid_utc))
        errors_mean.append(meas - s["mag_i"])
    assert len(errors_true) >= 5
    assert np.sqrt(np.mean(np.square(errors_true))) < 0.05
    assert np.sqrt(np.mean(np.square(errors_mean))) > 2 * np.sqrt(np.mean(np.square(errors_true)))


# ----------------------------------------------------------------------------------------
# coverage: gaps, blank warps, stacks consistent with their warps
# ----------------------------------------------------------------------------------------


def test_warps_have_gaps_and_some_blank_cutouts(sky: SyntheticSky) -> None:
    cell, band, i = _crossing_epoch(sky)
    epochs = sky.warp_epochs(cell, band)
    # scan 240 x 240 cutouts on a coarse grid: the crossing exposure blanks some entirely
    blank, partial, full = 0, 0, 0
    for r0 in range(0, NAXIS2 - 240, 1000):
        for c0 in range(0, NAXIS1 - 240, 1000):
            ref = ImageRef(cell, band, "warp", epochs[i].mjd_listed)
            raw = sky.render_disk(ref, slice(r0, r0 + 240), slice(c0, c0 + 240))
            nan = raw == -32768
            blank += bool(nan.all())
            full += bool(not nan.any())
            partial += bool(nan.any() and not nan.all())
    assert blank >= 1 and partial + full >= 1
    # ordinary exposures: detector gaps (NaN strips) in most 240-pixel cutouts' neighbourhood
    band = "g"
    ref = _warp_ref(sky, CELL, band)
    raw = sky.render_disk(ref, slice(2000, 3300), slice(2000, 3300))
    frac = float(np.mean(raw == -32768))
    assert 0.01 < frac < 0.4
    # masks: BLANK exactly where the warp is NaN; variance NaN there too
    mask = sky.render_disk(
        ImageRef(CELL, band, "warp.mask", ref.mjd), slice(2000, 3300), slice(2000, 3300)
    )
    np.testing.assert_array_equal((mask & MaskBit.BLANK) != 0, raw == -32768)
    wt = sky.render_disk(
        ImageRef(CELL, band, "warp.wt", ref.mjd), slice(2000, 3300), slice(2000, 3300)
    )
    np.testing.assert_array_equal(wt == -32768, raw == -32768)


def test_stack_maps_follow_warp_coverage(sky: SyntheticSky) -> None:
    band = "y"
    rows, cols = slice(NAXIS2 - 400, NAXIS2), slice(1500, 1900)
    n_cov = np.zeros((400, 400), dtype=np.int64)
    t_cov = np.zeros((400, 400))
    for e in sky.warp_epochs(CELL, band):
        raw = sky.render_disk(ImageRef(CELL, band, "warp", e.mjd_listed), rows, cols)
        n_cov += raw != -32768
        t_cov += (raw != -32768) * e.exptime
    num = sky.render_disk(ImageRef(CELL, band, "stack.num"), rows, cols)
    np.testing.assert_array_equal(num, n_cov)
    exp_ref = ImageRef(CELL, band, "stack.exp")
    exp = linear_pixels(sky.render_disk(exp_ref, rows, cols), sky.image_header(exp_ref))
    np.testing.assert_allclose(exp, t_cov, atol=0.01)
    expwt_ref = ImageRef(CELL, band, "stack.expwt")
    expwt = linear_pixels(sky.render_disk(expwt_ref, rows, cols), sky.image_header(expwt_ref))
    assert np.all((expwt > 0) == (n_cov > 0))
    stack = sky.render_disk(ImageRef(CELL, band, "stack"), rows, cols)
    mask = sky.render_disk(ImageRef(CELL, band, "stack.mask"), rows, cols)
    np.testing.assert_array_equal(stack == -32768, n_cov == 0)
    np.testing.assert_array_equal((mask & MaskBit.BLANK) != 0, n_cov == 0)
    assert n_cov.max() <= len(projcell_exposures(sky.seed, CELL.projcell, band))


def test_saturated_cores_are_flagged(sky: SyntheticSky) -> None:
    ra, dec = skycell_center(CELL)
    bright = [s for s in sky.sources(ra, dec, 3600.0) if s["mag_r"] < 14.0]
    assert bright, "no r < 14 star within a degree of the field centre"
    s = min(bright, key=lambda b: b["mag_r"])
    loc = locate(s["ra"], s["dec"])
    cell = SkycellId(int(loc.projcell[0]), int(loc.subcell[0]))
    x, y = float(loc.x[0]), float(loc.y[0])
    rows = slice(round(y - 1) - 10, round(y - 1) + 11)
    cols = slice(round(x - 1) - 10, round(x - 1) + 11)
    flagged = 0
    for e in sky.warp_epochs(cell, "r"):
        mask = sky.render_disk(ImageRef(cell, "r", "warp.mask", e.mjd_listed), rows, cols)
        raw = sky.render_disk(ImageRef(cell, "r", "warp", e.mjd_listed), rows, cols)
        sat = (mask & MaskBit.SAT) != 0
        if sat.any():
            flagged += 1
            # saturated pixels hold the saturation level: the brightest of the cutout
            assert np.all(raw[sat] == raw[raw != -32768].max())
    assert flagged >= 1


# ----------------------------------------------------------------------------------------
# the whole-file cache under concurrency
# ----------------------------------------------------------------------------------------


class _CountingSky(SyntheticSky):
    """A sky whose whole renders are small, slow and counted."""

    def __init__(self) -> None:
        super().__init__(SEED)
        self.calls = 0
        self._lock = threading.Lock()

    def render_whole(self, ref: ImageRef) -> np.ndarray:
        with self._lock:
            self.calls += 1
        time.sleep(0.2)
        return self.render_disk(ref, slice(0, 40), slice(0, 64))

    def image_header(self, ref: ImageRef) -> fits.Header:
        header = super().image_header(ref)  # the shape of the small render, for its size
        header["NAXIS1"], header["NAXIS2"] = 64, 40
        return header


def test_whole_file_cache_renders_once_under_concurrency(tmp_path) -> None:
    sky = _CountingSky()
    cache = WholeFileCache(sky, tmp_path)
    ref = ImageRef(CELL, "g", "stack.num")
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(cache.path(ref))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sky.calls == 1
    assert len(set(paths)) == 1 and paths[0].exists()
    assert not [p for p in paths[0].parent.iterdir() if p.name.endswith(".tmp")]
    with fits.open(paths[0], do_not_scale_image_data=True) as hdul:
        np.testing.assert_array_equal(
            hdul[1].data, sky.render_disk(ref, slice(0, 40), slice(0, 64))
        )
    with pytest.raises(NotFoundError):
        cache.path(ImageRef(SkycellId(600, 44), "g", "stack"))
