"""The emulator's HTTP server over real loopback HTTP: paths, formats, quirks, knobs, CLI.

One Emulator per module (seeded); whole-file downloads only for one stack file.
"""
# ruff: noqa: UP032, C408  (the STScI bulk-script recipe below keeps its own spelling)

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from ps1dask import skycell_center
from ps1dask.conventions import (
    cut,
    cut_array,
    cutout_box,
    linear_pixels,
    parse_filename,
    position_pixel,
)
from ps1dask.emulator import Emulator
from ps1dask.emulator.faults import DEFAULT_FAULT_KINDS, FaultInjector, Knobs
from ps1dask.emulator.params import parse_byte_range
from ps1dask.exceptions import HTTPFailure, InvalidParameterError
from ps1dask.imaging import (
    encode_image,
    fitscut_grey,
    fitscut_limits,
    fitscut_rgb,
    grey_image,
    output_shape,
    percentile_limits,
    rgb_image,
    stretch,
    to_uint8,
)
from ps1dask.wire import LISTING_COLUMNS

HEADER = " ".join(LISTING_COLUMNS)
# NGC 7222 field (skycell 1405.053) and the Crab (skycell 1784.059).
RA, DEC = 332.6, 2.2
CRAB = (83.63321, 22.01446)
TIMEOUT = 60

DEFAULT_KNOBS = dict(
    latency=0.0,
    bandwidth=None,
    work_per_mpix=0.0,
    fault_rate=0.0,
    fault_kinds=DEFAULT_FAULT_KINDS,
    retry_after=1.0,
    stall_seconds=30.0,
    seed=0,
    max_concurrency=10,
    s3_missing_fraction=0.0,
)


@pytest.fixture(scope="module")
def emu():
    with Emulator(seed=0) as e:
        yield e


@pytest.fixture(autouse=True)
def _default_knobs(request):
    if "emu" in request.fixturenames:
        emu = request.getfixturevalue("emu")
        emu.configure(**DEFAULT_KNOBS)
        yield
        emu.configure(**DEFAULT_KNOBS)
    else:
        yield


def get(emu, path, **params):
    return requests.get(emu.url + path, params=params, timeout=TIMEOUT)


def listing(emu, **params):
    r = get(emu, "/cgi-bin/ps1filenames.py", **params)
    assert r.status_code == 200, r.text
    return r.text


def rows_of(text, sep=" "):
    lines = text.rstrip("\n").split("\n")
    assert lines[0] == sep.join(LISTING_COLUMNS)
    return [line.split(sep) for line in lines[1:]]


def fitscut(emu, **params):
    return get(emu, "/cgi-bin/fitscut.cgi", **params)


def stack_name(cell="1405.053", band="g", suffix=""):
    p, s = cell.split(".")
    return f"/rings.v3.skycell/{p}/{s}/rings.v3.skycell.{cell}.stk.{band}.unconv{suffix}.fits"


# --------------------------------------------------------------------------- ps1filenames.py


def test_listing_skycell_reference_row(emu):
    r = get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    lines = r.text.rstrip("\n").split("\n")
    assert lines[0] == "projcell subcell ra dec filter mjd type filename shortname badflag"
    rows = [line.split(" ") for line in lines[1:]]
    assert [row[4] for row in rows] == list("girzy")  # the service's (alphabetical) order
    first = rows[0]
    assert first[:2] == ["1405", "53"]
    # the service page shows 332.600451657 2.19980905757 (12 significant digits)
    assert float(first[2]) == pytest.approx(332.600451657, abs=1e-9)
    assert float(first[3]) == pytest.approx(2.19980905757, abs=1e-11)
    assert (float(first[2]), float(first[3])) == skycell_center("1405.053")
    for row, band in zip(rows, "girzy"):
        assert row[5:] == [
            "0.0",
            "stack",
            stack_name(band=band),
            stack_name(band=band).rsplit("/", 1)[1],
            "0",
        ]


def test_listing_separators_and_position_echo(emu):
    base = rows_of(listing(emu, ra=RA, dec=DEC))
    assert base and all(row[:4] == ["1405", "53", "332.6", "2.2"] for row in base)
    for sep_name, sep in [("comma", ","), (",", ","), ("tab", "\t"), ("space", " ")]:
        assert rows_of(listing(emu, ra=RA, dec=DEC, sep=sep_name), sep) == base
    assert get(emu, "/cgi-bin/ps1filenames.py", ra=RA, dec=DEC, sep="pipe").status_code == 400


def test_listing_filters_types_and_warps(emu):
    rows = rows_of(listing(emu, ra=RA, dec=DEC, filters="ig", type="stack,stack.wt,warp"))
    assert {row[4] for row in rows} == {"g", "i"}
    types = {row[6] for row in rows}
    assert {"stack", "stack.wt", "warp"} <= types
    for row in rows:
        name = parse_filename(row[7])
        assert name.band == row[4] and name.image_type == row[6]
        assert row[8] == row[7].rsplit("/", 1)[1] and row[9] == "0"
        if row[6] == "warp":
            mjd = float(row[5])
            assert 50000 < mjd < 70000
            assert f"{mjd:.5f}".replace(".", "_") in row[8]
            assert name.mjd == pytest.approx(mjd, abs=1e-9)
        else:
            assert row[5] == "0.0"
    warps = [row for row in rows if row[6] == "warp"]
    assert len(warps) >= 2
    # the listing matches the sky's own list, in service order
    sid = parse_filename(rows[0][7]).skycell
    expected = [ref.filename for ref in emu.sky.images(sid, "gi", ("stack", "stack.wt", "warp"))]
    assert [row[7] for row in rows] == expected


def test_listing_parameter_forms(emu):
    base = rows_of(listing(emu, ra=RA, dec=DEC, filters="gr", type="stack,warp"))
    url = emu.url + "/cgi-bin/ps1filenames.py"
    repeated = requests.get(
        url,
        params=[("ra", RA), ("dec", DEC), ("filters", "GR"), ("type", "stack"), ("type", "warp")],
        timeout=TIMEOUT,
    )
    assert rows_of(repeated.text) == base
    form = requests.post(
        url, data={"ra": RA, "dec": DEC, "filters": "gr", "type": "stack,warp"}, timeout=TIMEOUT
    )
    assert rows_of(form.text) == base
    # types the real service knows but the emulator does not synthesise list nothing
    assert listing(emu, ra=RA, dec=DEC, type="stack.psf") == HEADER + "\n"
    assert get(emu, "/cgi-bin/ps1filenames.py", ra=RA, dec=DEC, type="bogus").status_code == 400
    assert get(emu, "/cgi-bin/ps1filenames.py", ra=RA, dec=DEC, filters="gq").status_code == 400
    assert get(emu, "/cgi-bin/ps1filenames.py").status_code == 400


@pytest.mark.parametrize("cell", ["1405.153", "9999.000", "abc", "1405"])
def test_listing_invalid_skycell_is_400(emu, cell):
    r = get(emu, "/cgi-bin/ps1filenames.py", skycell=cell)
    assert r.status_code == 400
    assert r.text.strip()


@pytest.mark.parametrize(
    "params",
    [
        {"ra": 10.0, "dec": -35.0},  # zone 14: in the tessellation, no 3pi data
        {"ra": 10.0, "dec": -60.0},  # south of the tessellation
        {"skycell": "0500.044"},  # a valid skycell outside the footprint
    ],
)
def test_listing_outside_footprint_is_header_only(emu, params):
    assert listing(emu, **params) == HEADER + "\n"


@pytest.mark.parametrize("ra, dec", [("abc", "1"), ("10", "95"), ("nan", "0"), ("", "")])
def test_listing_bad_position_is_400(emu, ra, dec):
    r = get(emu, "/cgi-bin/ps1filenames.py", ra=ra, dec=dec)
    assert r.status_code == 400
    assert len(r.text.strip()) > 10


def test_listing_post_file_matches_get(emu):
    positions = [(RA, DEC), CRAB, (10.0, -60.0), (0.0, 88.0)]
    body = "\n".join(f"{ra} {dec}" for ra, dec in positions)
    r = requests.post(
        emu.url + "/cgi-bin/ps1filenames.py",
        data={"filters": "gr", "type": "stack"},
        files={"file": StringIO(body)},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200
    expected = []
    for ra, dec in positions:
        expected += rows_of(listing(emu, ra=ra, dec=dec, filters="gr", type="stack"))
    assert rows_of(r.text) == expected
    assert len(expected) == 3 * 2  # the position south of the grid lists nothing
    bad = requests.post(
        emu.url + "/cgi-bin/ps1filenames.py",
        files={"file": StringIO("10 20\n\n# comment\n10 x\n")},
        timeout=TIMEOUT,
    )
    assert bad.status_code == 400 and "line 4" in bad.text


def test_stsci_bulk_script_recipe(emu):
    """The bulk script of STScI's page, run as written against the emulator."""
    ps1filename = emu.url + "/cgi-bin/ps1filenames.py"
    fitscut_url = emu.url + "/cgi-bin/fitscut.cgi"
    tdec = np.append(np.arange(31) * 3.95 - 29.1, 88.0)
    tra = np.append(np.arange(31) * 12.0, 0.0)
    cbuf = StringIO()
    cbuf.write("\n".join(["{} {}".format(ra, dec) for (ra, dec) in zip(tra, tdec)]))
    cbuf.seek(0)
    r = requests.post(
        ps1filename, data=dict(filters="ri", type="stack"), files=dict(file=cbuf), timeout=TIMEOUT
    )
    r.raise_for_status()
    tab = Table.read(r.text, format="ascii")
    assert tab.colnames == list(LISTING_COLUMNS)
    assert len(tab) == 2 * len(tra)  # every test position is in the footprint
    urlbase = "{}?size={}&format={}".format(fitscut_url, 240, "fits")
    tab["url"] = [
        "{}&ra={}&dec={}&red={}".format(urlbase, ra, dec, filename)
        for (filename, ra, dec) in zip(tab["filename"], tab["ra"], tab["dec"])
    ]
    tab.sort(["projcell", "subcell", "filter"])
    for row in tab[:4]:
        got = requests.get(row["url"], timeout=TIMEOUT)
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/fits"
        with fits.open(io.BytesIO(got.content)) as hdul:
            assert hdul[0].data.shape == (240, 240)
            assert hdul[0].header["BITPIX"] == -32


# --------------------------------------------------------------------------- fitscut.cgi


@pytest.fixture(scope="module")
def whole_g(emu):
    """The g stack of skycell 1405.053 downloaded whole, and its linear pixels."""
    r = requests.get(emu.url + stack_name(), timeout=600)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "image/fits"
    assert int(r.headers["Content-Length"]) == len(r.content)
    with fits.open(io.BytesIO(r.content), do_not_scale_image_data=True) as hdul:
        assert hdul[0].data is None  # empty primary, image in a compressed HDU 1
        header = hdul[1].header.copy()
        linear = linear_pixels(hdul[1].data, header)
    return r.content, header, linear


@pytest.mark.parametrize(
    "pos",
    [
        {"ra": RA, "dec": DEC, "size": 240},
        {"ra": 332.61, "dec": 2.19, "size": "100,60"},
        {"x": 5, "y": 6230, "size": 50},  # 0-based pixels at an image corner
        {"x": RA, "y": DEC, "wcs": 1, "size": 33},
    ],
)
def test_fitscut_fits_equals_linearised_whole_file(emu, whole_g, pos):
    _, header, linear = whole_g
    r = fitscut(emu, red=stack_name(), format="fits", **pos)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/fits"
    with fits.open(io.BytesIO(r.content)) as hdul:
        assert len(hdul) == 1
        hdr, data = hdul[0].header, hdul[0].data
    if "ra" in pos:
        xc, yc = position_pixel(header, pos["ra"], pos["dec"])
    elif pos.get("wcs"):
        xc, yc = position_pixel(header, pos["x"], pos["y"])
    else:
        xc, yc = pos["x"] + 1, pos["y"] + 1
    box = cutout_box(xc, yc, pos["size"])
    expected = cut_array(linear, box)
    assert data.dtype == np.dtype(">f4") and data.shape == expected.shape
    assert np.array_equal(data, expected, equal_nan=True)
    # header quirks of real FITS cutouts
    assert hdr["BITPIX"] == -32
    assert hdr["RADESYS"] == "FK5" and "TIMESYS" in hdr
    assert hdr["PC001001"] == header["PC001001"] and "CD1_1" not in hdr
    assert hdr["CRPIX1"] == pytest.approx(header["CRPIX1"] - box.x0)
    assert hdr["CRPIX2"] == pytest.approx(header["CRPIX2"] - box.y0)
    for key in ("BZERO", "BSCALE", "BLANK", "BSOFTEN", "BOFFSET"):
        assert key not in hdr


def test_fitscut_off_edge_is_nan(emu, whole_g):
    _, _, linear = whole_g
    r = fitscut(emu, red=stack_name(), format="fits", x=0, y=0, size=10)
    data = fits.getdata(io.BytesIO(r.content))
    # centre pixel 1 -> x0 = y0 = -5: the first five rows and columns are off the image
    assert np.isnan(data[:5, :]).all() and np.isnan(data[:, :5]).all()
    assert np.array_equal(data[5:, 5:], linear[:5, :5], equal_nan=True)
    far = fitscut(emu, red=stack_name(), format="fits", x=-500, y=-500, size=20)
    assert np.isnan(fits.getdata(io.BytesIO(far.content))).all()


def test_fitscut_warp_fits(emu):
    rows = rows_of(listing(emu, ra=RA, dec=DEC, filters="r", type="warp"))
    name = rows[0][7]
    r = fitscut(emu, red=name, ra=RA, dec=DEC, size=64, format="fits")
    assert r.status_code == 200
    with fits.open(io.BytesIO(r.content)) as hdul:
        hdr, data = hdul[0].header, hdul[0].data
    assert "MJD-OBS" in hdr and hdr["TIMESYS"] == "TAI" and "FPA.ZP" in hdr
    assert "BSOFTEN" not in hdr
    # the same pixels as the sky's on-disk region, linearised
    ref = type(emu.sky.images(parse_filename(name).skycell, "r", ("warp",))[0]).from_filename(name)
    header = emu.sky.image_header(ref)
    box = cutout_box(*position_pixel(header, RA, DEC), 64)
    expected = cut(
        box,
        header["NAXIS1"],
        header["NAXIS2"],
        lambda rr, cc: linear_pixels(emu.sky.render_disk(ref, rr, cc), header),
    )
    assert np.array_equal(data, expected, equal_nan=True)


def test_fitscut_parameters(emu):
    # case-insensitive names, W,H size
    r = get(
        emu,
        "/cgi-bin/fitscut.cgi",
        RED=stack_name(band="i"),
        RA=RA,
        Dec=DEC,
        SIZE="30,20",
        FORMAT="fits",
    )
    assert r.status_code == 200
    assert fits.getdata(io.BytesIO(r.content)).shape == (20, 30)
    # the name without its leading slash is accepted too
    assert (
        fitscut(
            emu, red=stack_name().lstrip("/"), ra=RA, dec=DEC, size=8, format="fits"
        ).status_code
        == 200
    )
    bad = [
        ({"size": 6001}, 400),
        ({"size": "0"}, 400),
        ({"size": "a,b"}, 400),
        ({"format": "gif"}, 400),
        ({"green": stack_name(band="r"), "format": "fits"}, 400),  # colour FITS
        ({"red": ""}, 400),
        ({"ra": "x"}, 400),
        ({"red": "/etc/passwd"}, 404),
        ({"red": stack_name(cell="0500.044")}, 404),  # outside the footprint
        (
            {"red": "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.wrp.g.50000_00000.fits"},
            404,
        ),
        ({"red": "/rings.v3.skycell/1405/054/rings.v3.skycell.1405.053.stk.g.unconv.fits"}, 404),
    ]
    for change, status in bad:
        params = {"red": stack_name(), "ra": RA, "dec": DEC, "size": 16, "format": "fits", **change}
        r = fitscut(emu, **params)
        assert r.status_code == status, (change, r.status_code, r.text)


def test_cutout_processes_answer_as_the_threads_do(emu):
    """fitscut cut in a worker process: the same bytes, statuses and error texts."""
    warp = rows_of(listing(emu, ra=RA, dec=DEC, filters="r", type="warp"))[0][7]
    asks = [
        {"red": stack_name(), "ra": RA, "dec": DEC, "size": 50, "format": "fits"},
        {"RED": stack_name(band="i", suffix=".wt"), "RA": RA, "Dec": DEC, "SIZE": "30,20"},
        {"red": warp, "ra": RA, "dec": DEC, "size": 40, "format": "fits"},
        {"red": stack_name(), "green": stack_name(band="r"), "ra": RA, "dec": DEC, "size": 24},
        {"red": stack_name(), "ra": RA, "dec": DEC, "size": 6001, "format": "fits"},
        {"red": stack_name(cell="0500.044"), "ra": RA, "dec": DEC, "format": "fits"},
        {"red": "/etc/passwd", "format": "fits"},
        {"red": stack_name(), "ra": "x", "dec": DEC, "format": "fits"},
    ]
    with Emulator(seed=0, cutout_processes=1) as other:
        assert other.service.cutout_processes is not None
        for params in asks:
            mine, theirs = fitscut(emu, **params), fitscut(other, **params)
            assert (theirs.status_code, theirs.content) == (mine.status_code, mine.content), params
            assert theirs.headers["Content-Type"] == mine.headers["Content-Type"]
        # a cutout process that dies (killed here by its PID, which this test started through
        # the emulator): that request gets a server error, the next ones a new process
        pool = other.service.cutout_processes._pool
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        statuses = [fitscut(other, **asks[0]).status_code for _ in range(3)]
        assert statuses == [500, 200, 200]
        assert other.service.cutout_processes._pool is not pool
        assert fitscut(other, **asks[0]).content == fitscut(emu, **asks[0]).content
        assert [r.status_code for r in (fitscut(other, **a) for a in asks)] == [
            200,
            200,
            200,
            200,
            400,
            404,
            404,
            400,
        ]


def test_fitscut_jpeg_png_and_colour(emu):
    common = {"ra": RA, "dec": DEC}
    r = fitscut(emu, red=stack_name(), size=100, **common)  # jpg by default
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG" and img.mode == "L" and img.size == (100, 100)

    r = fitscut(
        emu,
        red=stack_name(),
        size="120,60",
        output_size=60,
        format="png",
        asinh="false",
        invert="true",
        autoscale=99,
        **common,
    )
    assert r.headers["Content-Type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "PNG" and img.size == (60, 30)

    r = fitscut(
        emu,
        red=stack_name(band="y"),
        green=stack_name(band="i"),
        blue=stack_name(band="g"),
        size=80,
        output_size=40,
        format="jpeg",
        zoom=1,
        compass=1,
        **common,
    )
    assert r.status_code == 200, r.text
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "RGB" and img.size == (40, 40)
    arr = np.asarray(img)
    assert arr.std() > 0  # not a flat picture

    # explicit display limits: the same picture as grey_image of the FITS cutout
    fits_px = fits.getdata(
        io.BytesIO(fitscut(emu, red=stack_name(), size=32, format="fits", **common).content)
    )
    lo, hi = np.nanpercentile(fits_px, [10, 90])
    png = fitscut(
        emu, red=stack_name(), size=32, format="png", asinh="false", min=lo, max=hi, **common
    )
    expected = fitscut_grey(fits_px, vmin=lo, vmax=hi, asinh=False)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), expected)

    r = fitscut(
        emu, red=stack_name(band="z"), blue=stack_name(band="g"), size=32, format="png", **common
    )  # two bands still make a colour image
    assert Image.open(io.BytesIO(r.content)).mode == "RGB"


# --------------------------------------------------------------------------- whole files


def test_whole_file_head_and_ranges(emu, whole_g):
    content, _, _ = whole_g
    url = emu.url + stack_name()
    size = len(content)
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"] == "image/fits"
    assert head.headers["Accept-Ranges"] == "bytes"
    assert int(head.headers["Content-Length"]) == size

    def ranged(spec):
        return requests.get(url, headers={"Range": spec}, timeout=TIMEOUT)

    for spec, (start, end) in [
        ("bytes=0-2879", (0, 2879)),
        ("bytes=2880-5759", (2880, 5759)),
        (f"bytes={size - 100}-", (size - 100, size - 1)),
        ("bytes=-1000", (size - 1000, size - 1)),
        (f"bytes=10-{size + 500}", (10, size - 1)),
    ]:
        r = ranged(spec)
        assert r.status_code == 206, spec
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert r.content == content[start : end + 1]
    r = ranged(f"bytes={size}-")
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    assert ranged("bytes=0-1,5-9").status_code == 200  # several ranges: the whole file
    head = requests.head(url, headers={"Range": "bytes=0-9"}, timeout=TIMEOUT)
    assert head.status_code == 206 and head.headers["Content-Length"] == "10"


@pytest.mark.parametrize(
    "path",
    [
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.q.unconv.fits",
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.054.stk.g.unconv.fits",
        "/rings.v3.skycell/0500/044/rings.v3.skycell.0500.044.stk.g.unconv.fits",
        "/rings.v3.skycell/1405/053/..%2F..%2F..%2Fetc%2Fpasswd",
        "/rings.v3.skycell/1405/053/../../../etc/passwd",
        "/rings.v3.skycell/../../etc/passwd",
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.wrp.g.50000_00000.fits",
    ],
)
def test_whole_file_unknown_names_are_404(emu, path):
    conn = http.client.HTTPConnection(urlsplit(emu.url).netloc, timeout=TIMEOUT)
    conn.request("GET", path)  # raw path: no client-side normalisation
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 404


def test_parse_byte_range():
    assert parse_byte_range("bytes=0-9", 100) == (0, 9)
    assert parse_byte_range("bytes=90-", 100) == (90, 99)
    assert parse_byte_range("bytes=-10", 100) == (90, 99)
    assert parse_byte_range("bytes=-1000", 100) == (0, 99)
    assert parse_byte_range("bytes=5-2", 100) is None
    assert parse_byte_range("items=0-1", 100) is None
    for spec in ("bytes=100-", "bytes=-0"):
        with pytest.raises(HTTPFailure) as err:
            parse_byte_range(spec, 100)
        assert err.value.status == 416


# --------------------------------------------------------------------------- metrics, limits


def metrics(emu):
    r = requests.get(emu.url + "/_emulator/metrics", timeout=TIMEOUT)
    assert r.status_code == 200
    return r.json()


def test_metrics_count_and_reset(emu):
    requests.post(emu.url + "/_emulator/metrics/reset", timeout=TIMEOUT).raise_for_status()
    m = metrics(emu)
    assert m["requests_total"] == 0 and m["bytes_sent"] == 0 and m["in_flight"] == 0
    sizes = [len(get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053").content)]
    sizes.append(len(fitscut(emu, red=stack_name(), ra=RA, dec=DEC, size=16).content))
    sizes.append(len(get(emu, "/cgi-bin/ps1filenames.py", skycell="1").content))  # 400
    sizes.append(
        len(
            requests.get(
                emu.url + stack_name(), headers={"Range": "bytes=0-99"}, timeout=TIMEOUT
            ).content
        )
    )
    get(emu, "/_emulator/truth", ra=RA, dec=DEC)  # not a service request
    m = metrics(emu)
    assert m["requests_total"] == 4
    assert m["requests_by_endpoint"] == {
        "/cgi-bin/ps1filenames.py": 2,
        "/cgi-bin/fitscut.cgi": 1,
        "files": 1,
    }
    assert m["bytes_sent"] == sum(sizes)
    assert m["range_requests"] == 1
    assert m["max_in_flight"] == 1 and m["in_flight"] == 0
    assert m["faults_injected"] == 0 and m["refused_over_limit"] == 0
    assert m["responses_by_status"] == {"200": 2, "400": 1, "206": 1}
    assert emu.metrics()["requests_total"] == 4
    emu.reset_metrics()
    m = emu.metrics()
    assert m["requests_total"] == 0 and m["requests_by_endpoint"] == {} and m["bytes_sent"] == 0


def _burst(emu, n):
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        barrier.wait()
        r = requests.get(
            emu.url + "/cgi-bin/ps1filenames.py", params={"skycell": "1405.053"}, timeout=TIMEOUT
        )
        results[i] = (r.status_code, r.headers.get("Retry-After"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrency_limit_refuses_the_eleventh(emu):
    emu.configure(latency=1.5)  # long enough for all 12 to arrive while 10 are held
    emu.reset_metrics()
    results = _burst(emu, 12)
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] * 10 + [503] * 2, (results, emu.metrics())
    assert all(ra == "1" for s, ra in results if s == 503)
    m = emu.metrics()
    assert m["refused_over_limit"] == 2
    assert m["max_in_flight"] >= 11  # the refused requests were in flight too
    assert m["in_flight"] == 0
    # a client that keeps to 10 is never refused, and max_in_flight says 10
    emu.reset_metrics()
    assert sorted(s for s, _ in _burst(emu, 10)) == [200] * 10
    m = emu.metrics()
    assert m["max_in_flight"] == 10 and m["refused_over_limit"] == 0


def test_abandoned_requests_do_not_count_against_the_limit(emu):
    """A client that gave up on 10 stalled requests may send 10 new ones at once."""
    emu.configure(fault_rate=1.0, fault_kinds="stall", stall_seconds=30)
    emu.reset_metrics()
    netloc = urlsplit(emu.url).netloc
    conns = []
    for _ in range(10):
        conn = http.client.HTTPConnection(netloc, timeout=TIMEOUT)
        conn.request("GET", "/cgi-bin/ps1filenames.py?skycell=1405.053")
        conns.append(conn)
    deadline = time.monotonic() + 5
    while emu.metrics()["in_flight"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emu.metrics()["in_flight"] == 10
    emu.configure(fault_rate=0.0, latency=0.3)
    for conn in conns:
        conn.close()  # the client gives up ...
    results = _burst(emu, 10)  # ... and retries at once
    assert sorted(s for s, _ in results) == [200] * 10
    assert emu.metrics()["refused_over_limit"] == 0


# --------------------------------------------------------------------------- faults


def test_fault_503_and_429_with_retry_after(emu):
    emu.configure(fault_rate=1.0, fault_kinds="503")
    r = get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    emu.configure(fault_kinds=["429"], retry_after=0.5)
    r = fitscut(emu, red=stack_name(), ra=RA, dec=DEC)
    assert r.status_code == 429 and r.headers["Retry-After"] == "0.5"
    # the emulator's own endpoints are never faulted
    assert requests.get(emu.url + "/_emulator/metrics", timeout=TIMEOUT).status_code == 200


def test_fault_reset(emu):
    emu.configure(fault_rate=1.0, fault_kinds="reset")
    with pytest.raises(requests.ConnectionError):
        get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")
    assert emu.metrics()["faults_by_kind"]["reset"] >= 1


def test_fault_truncate_announces_full_length(emu):
    emu.configure(fault_rate=1.0, fault_kinds="truncate")
    conn = http.client.HTTPConnection(urlsplit(emu.url).netloc, timeout=TIMEOUT)
    conn.request(
        "GET",
        "/cgi-bin/fitscut.cgi?red=" + stack_name() + f"&ra={RA}&dec={DEC}&size=64&format=fits",
    )
    resp = conn.getresponse()
    assert resp.status == 200
    announced = int(resp.getheader("Content-Length"))
    with pytest.raises(http.client.IncompleteRead) as err:
        resp.read()
    conn.close()
    assert 0 < len(err.value.partial) < announced
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")


def test_fault_stall(emu):
    emu.configure(fault_rate=1.0, fault_kinds="stall", stall_seconds=0.6)
    t0 = time.monotonic()
    r = get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.6
    # a client that gives up is no longer counted in flight
    emu.configure(stall_seconds=20)
    with pytest.raises(requests.Timeout):
        requests.get(
            emu.url + "/cgi-bin/ps1filenames.py", params={"skycell": "1405.053"}, timeout=0.3
        )
    deadline = time.monotonic() + 3
    while emu.metrics()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.metrics()["in_flight"] == 0


def test_faults_are_seeded_and_deterministic(emu):
    kinds = ("503", "429", "reset", "truncate")

    def run():
        emu.configure(fault_rate=0.5, fault_kinds=",".join(kinds), seed=1234, retry_after=0)
        outcomes = []
        for _ in range(24):
            try:
                r = requests.get(
                    emu.url + "/cgi-bin/ps1filenames.py",
                    params={"skycell": "1405.053"},
                    timeout=TIMEOUT,
                )
                _ = r.content
                outcomes.append(str(r.status_code))
            except requests.exceptions.ChunkedEncodingError:
                outcomes.append("truncate")
            except requests.ConnectionError:
                outcomes.append("reset")
        return outcomes

    emu.reset_metrics()
    first = run()
    second = run()
    assert first == second
    injector = FaultInjector(1234)
    predicted = [injector.draw(0.5, kinds) or "200" for _ in range(24)]
    assert first == predicted
    assert set(first) == {"200", *kinds}  # every kind shows up with this seed
    m = emu.metrics()
    assert m["faults_injected"] == 2 * sum(o != "200" for o in first)
    assert sum(m["faults_by_kind"].values()) == m["faults_injected"]


def test_knobs_validation_and_config_endpoint(emu):
    with pytest.raises(InvalidParameterError):
        Knobs(fault_kinds="503,boom")
    with pytest.raises(InvalidParameterError):
        Knobs(fault_rate=1.5)
    with pytest.raises(InvalidParameterError):
        emu.configure(no_such_knob=1)
    assert Knobs(bandwidth=0).bandwidth is None
    r = requests.post(
        emu.url + "/_emulator/config", json={"latency": 0.05, "bandwidth": 2}, timeout=TIMEOUT
    )
    assert r.status_code == 200 and r.json()["latency"] == 0.05
    assert emu.knobs.latency == 0.05 and emu.knobs.bandwidth == 2.0
    bad = requests.post(emu.url + "/_emulator/config", json={"fault_rate": -1}, timeout=TIMEOUT)
    assert bad.status_code == 400 and "fault_rate" in bad.json()["error"]
    assert requests.get(emu.url + "/_emulator/config", timeout=TIMEOUT).json()["bandwidth"] == 2.0


def test_latency_and_bandwidth(emu):
    emu.configure(latency=0.3)
    t0 = time.monotonic()
    get(emu, "/cgi-bin/ps1filenames.py", skycell="1405.053")
    assert time.monotonic() - t0 >= 0.3
    emu.configure(latency=0.0, bandwidth=0.5)  # 0.5 MB/s
    t0 = time.monotonic()
    r = requests.get(emu.url + stack_name(), headers={"Range": "bytes=0-249999"}, timeout=TIMEOUT)
    elapsed = time.monotonic() - t0
    assert len(r.content) == 250_000 and elapsed >= 0.45


# --------------------------------------------------------------------------- truth, page


def test_truth_endpoint(emu):
    r = get(emu, "/_emulator/truth", ra=RA, dec=DEC, radius=120)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    data = r.json()
    assert isinstance(data, list)
    assert data == json.loads(json.dumps(emu.sky.sources(RA, DEC, 120.0), default=float))
    r = get(emu, "/_emulator/truth", ra=RA, dec=DEC, radius=120, mjd=57000.5)
    for src in r.json():
        assert set(src["mag_at_mjd"]) == set("grizy")
        assert all(isinstance(v, float) for v in src["mag_at_mjd"].values())
    assert get(emu, "/_emulator/truth", ra=RA).status_code == 400


def test_ps1cutouts_page(emu):
    r = get(emu, "/cgi-bin/ps1cutouts")
    assert r.status_code == 200 and "<form" in r.text and 'name="pos"' in r.text
    r = get(emu, "/cgi-bin/ps1cutouts", pos=f"{RA} {DEC}", size=120)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    page = r.text
    assert "http://" not in page and "https://" not in page  # self-contained
    srcs = [s.split('"', 1)[0].replace("&amp;", "&") for s in page.split('<img src="')[1:]]
    assert len(srcs) == 6 and all(s.startswith("/cgi-bin/fitscut.cgi?") for s in srcs)
    assert "green=" in srcs[0]  # the colour image comes first
    assert "skycell.1405.053" in page and "FITS-cutout" in page
    jpeg = requests.get(emu.url + srcs[1], timeout=TIMEOUT)
    assert jpeg.status_code == 200 and Image.open(io.BytesIO(jpeg.content)).size == (120, 120)
    # other position forms
    sexa = get(emu, "/cgi-bin/ps1cutouts", pos="22 10 24.01 +02 12 00.0", filter="g")
    assert sexa.status_code == 200 and "skycell.1405.053" in sexa.text
    colon = get(emu, "/cgi-bin/ps1cutouts", pos="22:10:24.01 2:12:00", filter="g")
    assert "skycell.1405.053" in colon.text
    cell = get(emu, "/cgi-bin/ps1cutouts", pos="skycell.1405.053", filter="r")
    assert cell.status_code == 200 and cell.text.count("<img ") == 1
    warps = get(emu, "/cgi-bin/ps1cutouts", pos=f"{RA} {DEC}", filter="g", filetypes="warp")
    assert warps.text.count("<img ") == len(
        rows_of(listing(emu, ra=RA, dec=DEC, filters="g", type="warp"))
    )
    named = get(emu, "/cgi-bin/ps1cutouts", pos="ring nebula")
    assert named.status_code == 400 and "offline" in named.text


# --------------------------------------------------------------------------- imaging (pure)


def test_generic_stretches():
    data = np.arange(100.0).reshape(10, 10)
    lo, hi = percentile_limits(data, 99.5)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(data, [0.5, 99.5])))
    lin = stretch(data, vmin=0, vmax=99, asinh=False)
    assert lin[0, 0] == 0 and lin[-1, -1] == 1 and lin[5, 0] == pytest.approx(50 / 99)
    ash = stretch(data, vmin=0, vmax=99, asinh=True)
    assert ash[5, 0] > lin[5, 0] and ash[-1, -1] == pytest.approx(1)
    assert ash[5, 0] == pytest.approx(np.arcsinh(50 / 99 / 0.1) / np.arcsinh(10))
    assert list(to_uint8(np.array([0.0, 0.5, 1.0, np.nan]))) == [0, 128, 255, 0]
    with_nan = data.copy()
    with_nan[0, 0] = np.nan
    img = grey_image(with_nan, vmin=0, vmax=99, asinh=False)
    assert img.dtype == np.uint8 and img[-1, 0] == 0 and img[0, -1] == 255  # north up
    assert grey_image(with_nan, vmin=0, vmax=99, asinh=False, inverted=True)[-1, 0] == 255
    rgb = rgb_image(data, None, data[::-1])
    assert rgb.shape == (10, 10, 3)
    assert np.all(
        np.abs(rgb[..., 1].astype(int) - (rgb[..., 0].astype(int) + rgb[..., 2]) / 2) <= 1
    )
    assert percentile_limits(np.full((3, 3), np.nan)) == (0.0, 1.0)
    assert output_shape(120, 60, output_size=60) == (60, 30)
    assert output_shape(10, 10, zoom=2.5) == (25, 25)
    with pytest.raises(InvalidParameterError):
        output_shape(10, 10, output_size=7000)
    with pytest.raises(InvalidParameterError):
        rgb_image(data, None, None)
    assert Image.open(io.BytesIO(encode_image(img, "png"))).size == (10, 10)


def test_fitscut_stretches():
    data = np.arange(100.0).reshape(10, 10)
    p_lo, median = np.percentile(data, [0.5, 50])
    # fitscut's noise guard lifts the top of a noise-like (symmetric) image ...
    assert fitscut_limits(data) == pytest.approx((p_lo, median + 5 * (median - p_lo)))
    # ... and leaves a field with bright sources alone
    field = np.concatenate([np.zeros(95), np.full(5, 1000.0)]).reshape(10, 10)
    assert fitscut_limits(field, 99) == (0.0, 1000.0)
    grey = fitscut_grey(data, vmin=0, vmax=99, north_up=False).ravel().astype(float)
    t = data.ravel() / 99
    expected = np.rint(np.clip(np.arcsinh(3 * t) / 3 / 0.7, 0, 1) * 255)
    assert np.array_equal(grey, expected)
    # colour-preserving asinh: equal channels stay grey, brighter pixels keep their hue
    same = fitscut_rgb(data, data, data, vmin=0, vmax=99)
    assert np.array_equal(same[..., 0], same[..., 1]) and np.array_equal(same[..., 1], same[..., 2])
    red = fitscut_rgb(data, data / 2, data / 4, vmin=0, vmax=99, north_up=False).astype(float)
    unsaturated = (red[..., 0] > 40) & (red[..., 0] < 250)
    assert unsaturated.sum() > 20
    assert np.allclose(red[..., 1][unsaturated] / red[..., 0][unsaturated], 0.5, atol=0.03)
    # blank pixels are black, white inverted
    blank = data.copy()
    blank[0, 0] = np.nan
    assert fitscut_grey(blank, north_up=False)[0, 0] == 0
    assert fitscut_grey(blank, north_up=False, inverted=True)[0, 0] == 255
    # per-channel limits, and two channels make a colour image
    two = fitscut_rgb(data, None, data, vmin=[0, 10], vmax=[99, 50], asinh=False)
    assert two.shape == (10, 10, 3)
    with pytest.raises(InvalidParameterError):
        fitscut_rgb(data, data, data, vmin=[0, 1])


# --------------------------------------------------------------------------- CLI


def test_cli_prints_url_first_and_serves(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ps1dask",
            "emulator",
            "--port",
            "0",
            "--seed",
            "3",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--s3-missing-fraction",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline().strip()
        assert first.startswith("http://127.0.0.1:"), (
            first,
            proc.stderr.read() if proc.poll() is not None else "",
        )
        r = requests.get(
            first + "/cgi-bin/ps1filenames.py", params={"skycell": "1405.053"}, timeout=TIMEOUT
        )
        assert r.status_code == 200 and r.text.startswith(HEADER)
        assert (
            requests.get(first + "/_emulator/metrics", timeout=TIMEOUT).json()["requests_total"]
            == 1
        )
        # every key hidden from the S3 mode
        r = requests.head(first + "/stpubdata/panstarrs/ps1/public" + stack_name(), timeout=TIMEOUT)
        assert r.status_code == 404
        config = requests.get(first + "/_emulator/config", timeout=TIMEOUT).json()
        assert config["s3_missing_fraction"] == 1.0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    rest = proc.stdout.read()
    assert "fitscut.cgi" in rest


_PARENT_SCRIPT = """
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-m", "ps1dask", "emulator", "--port", "0", "--cache-dir", sys.argv[1],
     "--stop-with-parent"],
    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
)
url = child.stdout.readline().strip()
print(child.pid, url, flush=True)
time.sleep(600)
"""


def test_cli_stop_with_parent_leaves_no_emulator_behind(tmp_path):
    import psutil

    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_SCRIPT, str(tmp_path / "cache")],
        stdout=subprocess.PIPE,
        text=True,
    )
    child_pid = 0
    try:
        child_pid_text, url = parent.stdout.readline().split()
        child_pid = int(child_pid_text)
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/_emulator/metrics", timeout=TIMEOUT).status_code == 200
        parent.kill()  # as a benchmark killed by SIGKILL: no cleanup code runs in it
        parent.wait(timeout=20)
        child = psutil.Process(child_pid)
        try:
            child.wait(timeout=30)  # it notices within a second
        except psutil.TimeoutExpired:
            pytest.fail("the emulator outlived the process that started it")
        except psutil.NoSuchProcess:
            pass
    finally:
        if parent.poll() is None:
            parent.kill()
        if child_pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(child_pid).kill()


def test_cli_help_mentions_the_knobs():
    import argparse

    from ps1dask.cli import emulator as cli_emulator

    parser = argparse.ArgumentParser(prog="ps1dask")
    cli_emulator.register(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["emulator"].format_help()
    for flag in (
        "--port",
        "--latency",
        "--bandwidth",
        "--fault-rate",
        "--fault-kinds",
        "--seed",
        "--cache-dir",
        "--host",
        "--s3-missing-fraction",
    ):
        assert flag in text
