"""The plain-image reader of FITS answers against astropy's reader.

``read_plain_image`` reads fitscut's answers (a plain float primary image) without astropy's
HDU machinery, and returns None for anything else; whenever it answers, it must give what
``read_image_with_astropy`` gives for the same bytes: the same pixels, the same header
cards, the same refusals (``BadFITSError``).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.client import PS1Service
from ps1dask.client.answers import (
    parse_fits_answer,
    read_image_with_astropy,
    read_plain_image,
)
from ps1dask.conventions import image_filename
from ps1dask.exceptions import BadFITSError
from ps1dask.tessellation import SkycellId

URL = "http://emulator/test"

_EXTRA_CARDS = [
    ("EXPTIME", 43.0),
    ("MJD-OBS", 55676.42336),
    ("FILTER", "r.00000"),
    ("PC001001", -1.0),
    ("CDELT1", 6.94444461259988e-05),
    ("CRVAL2", 90.0),
    ("HIERARCH FPA.ZP", 24.56),
    ("COMMENT", "a comment"),
    ("BZERO", 3.0),  # scaled: not plain
    ("BSCALE", 2.0),
    ("BLANK", -32768),
    ("EXTEND", True),
    ("BSOFTEN", 2.0),
    ("BOFFSET", 1.0),
]


def _outcome(read, *args):
    try:
        return read(*args)
    except BadFITSError:
        return BadFITSError


@settings(max_examples=200, deadline=None)
@given(
    bitpix=st.sampled_from([-32, -64, 16, 32]),
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    extra=st.lists(st.sampled_from(_EXTRA_CARDS), max_size=8, unique_by=lambda c: c[0]),
    cut=st.none() | st.integers(0, 3 * 2880),
    expected=st.sampled_from([None, "same", "other"]),
    seed=st.integers(0, 2**16),
)
def test_property_plain_reader_agrees_with_astropy(
    bitpix, width, height, extra, cut, expected, seed
):
    rng = np.random.default_rng(seed)
    dtype = {-32: np.float32, -64: np.float64, 16: np.int16, 32: np.int32}[bitpix]
    data = (rng.normal(0.0, 100.0, (height, width))).astype(dtype)
    if data.dtype.kind == "f":
        data[rng.random(data.shape) < 0.1] = np.nan
    header = fits.Header(extra)
    buf = io.BytesIO()
    fits.PrimaryHDU(data=data, header=header).writeto(buf)
    body = buf.getvalue() if cut is None else buf.getvalue()[:cut]
    shape = {None: None, "same": (height, width), "other": (height + 1, width)}[expected]
    plain = _outcome(read_plain_image, body, URL, shape)
    if plain is None:
        return  # astropy's reader alone reads it
    reference = _outcome(read_image_with_astropy, body, URL, False, shape)
    if plain is BadFITSError or reference is BadFITSError:
        assert plain is reference
        return
    (pixels, head), (ref_pixels, ref_head) = plain, reference
    assert pixels.dtype == ref_pixels.dtype and pixels.shape == ref_pixels.shape
    np.testing.assert_array_equal(pixels, ref_pixels)
    assert head.tostring() == ref_head.tostring()
    for key in ("BZERO", "BSCALE", "BLANK", "EXTEND", "ZIMAGE"):
        assert key not in head  # answers with them are astropy's to read


def test_plain_reader_takes_fitscut_answers_and_gives_astropys_hdu(job_emulator):
    """fitscut's answers go the plain way, and the HDU the client makes of them is the one
    astropy's reader leads to (pixels linearised, header repaired)."""
    job_emulator.reset_metrics()
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    service = PS1Service(job_emulator.url)
    cell = SkycellId.parse("skycell.1500.055")
    names = {
        "stack": image_filename(cell, "i"),
        "warp": service.list_images(skycell=cell, filters="i", types="warp").iloc[0].filename,
    }
    for kind, name in names.items():
        answer = service._request(  # no position: the image's centre
            "GET",
            "/cgi-bin/fitscut.cgi",
            kind="test",
            params={"red": name, "size": "48,24", "format": "fits"},
        )
        plain = read_plain_image(answer.body, URL, (24, 48))
        assert plain is not None, kind
        pixels, header = plain
        ref_pixels, ref_header = read_image_with_astropy(answer.body, URL, False, (24, 48))
        np.testing.assert_array_equal(pixels, ref_pixels)
        assert header.tostring() == ref_header.tostring()
        hdu = parse_fits_answer(answer.body, URL, False, expected_shape=(24, 48))
        assert hdu.header["RADESYS"] == "FK5" and "CD1_1" in hdu.header
        assert hdu.data.dtype == np.float32 and np.isfinite(hdu.data).any()


@pytest.mark.parametrize("raw", [False, True])
def test_answers_astropy_reads_other_ways_are_left_to_it(raw):
    # a compressed image, and an integer image with BZERO: not plain
    data = np.arange(20 * 24, dtype=np.int16).reshape(20, 24)
    for hdul in (
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data.astype(np.float32))]),
        fits.HDUList([fits.PrimaryHDU(data, header=fits.Header([("BZERO", 10.0)]))]),
    ):
        buf = io.BytesIO()
        hdul.writeto(buf)
        assert read_plain_image(buf.getvalue(), URL, None) is None
        assert parse_fits_answer(buf.getvalue(), URL, raw).data.shape == (20, 24)
