"""Mosaics end to end against the emulator: exact copies within a projection cell, calibrated
fluxes across projection cells, seams, the pole, resume and the request limit."""

from __future__ import annotations

import functools
import io
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import requests
from _jobs import assert_same_store, kill_when_stored, ok_positions
from astropy.io import fits

import ps1dask
from ps1dask.conventions import header_wcs, header_zeropoint, image_filename, linear_pixels
from ps1dask.exceptions import InvalidParameterError
from ps1dask.photometry import measure_aperture
from ps1dask.render import cutout_image, cutout_pixels
from ps1dask.storage import StoreMismatchError
from ps1dask.tessellation import SkycellId, skycell_center

#: Aperture for total fluxes: 14 px = 3.5" (> 5 sigma of the emulator's PSFs, which are
#: truncated there and normalised to hold the whole flux).
RADIUS, ANNULUS = 14.0, (20.0, 30.0)


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


@functools.lru_cache(maxsize=16)
def _whole_file(url: str, filename: str) -> tuple[np.ndarray, fits.Header]:
    """A whole skycell file from the emulator, linearised as the conventions say."""
    answer = requests.get(url + filename, timeout=120)
    answer.raise_for_status()
    with fits.open(io.BytesIO(answer.content), do_not_scale_image_data=True) as hdul:
        header = hdul[1].header.copy()
        raw = np.asarray(hdul[1].data)
    return linear_pixels(raw, header), header


def _boundary(cell_a: str, cell_b: str) -> tuple[float, float]:
    a, b = skycell_center(cell_a), skycell_center(cell_b)
    return 0.5 * (a[0] + b[0]), 0.5 * (a[1] + b[1])


def _world_of(ds, i, x, y):
    return ds.ps1.wcs(i).all_pix2world(np.asarray(x, float), np.asarray(y, float), 0)


def test_straddling_two_skycells_of_one_projcell_copies_the_files_exactly(
    emu, dask_client, tmp_path
):
    ra, dec = _boundary("1405.053", "1405.054")
    store = tmp_path / "m.zarr"
    summary = ps1dask.cutouts(
        pd.DataFrame({"ra": [ra], "dec": [dec]}),
        store,
        filters="g",
        size=(300, 1000),  # (ny, nx)
        types=("stack", "stack.wt", "stack.mask"),
        strategy="range",
        service=emu.url,
        client=dask_client,
        progress=False,
        mosaic=True,
    )
    assert summary.statuses == {"ok": 1}
    assert emu.metrics()["max_in_flight"] <= 10
    ds = ps1dask.open_store(store)
    source = ds.mosaic_skycell.values[0]
    assert set(np.unique(source).tolist()) == {1405053, 1405054}
    for variable, kind in (
        ("stack_flux", "stack"),
        ("stack_variance", "stack.wt"),
        ("stack_mask", "stack.mask"),
    ):
        mosaic = ds[variable].values[0, 0]
        for code in (1405053, 1405054):
            sid = SkycellId(code // 1000, code % 1000)
            pixels, header = _whole_file(emu.url, image_filename(sid, "g", kind))
            # where each output pixel lies in the file, from the file's own header WCS
            rows, cols = np.nonzero(source == code)
            pick = np.linspace(0, rows.size - 1, 50).astype(int)
            ra_p, dec_p = _world_of(ds, 0, cols[pick], rows[pick])
            fx, fy = header_wcs(header).all_world2pix(ra_p, dec_p, 0)
            dx = np.unique(np.rint(fx - cols[pick]).astype(int))
            dy = np.unique(np.rint(fy - rows[pick]).astype(int))
            assert dx.size == 1 and dy.size == 1, "not an integer shift"
            np.testing.assert_allclose(fx - cols[pick], dx[0], atol=1e-3)
            expected = pixels[rows + dy[0], cols + dx[0]].astype(mosaic.dtype)
            # exactly the file's pixels, bit for bit
            np.testing.assert_array_equal(mosaic[rows, cols], expected)
    # both files meet in the middle of their 480-pixel overlap: a single straight seam
    cols_of_054 = np.flatnonzero((source == 1405054).all(axis=0))
    cols_of_053 = np.flatnonzero((source == 1405053).all(axis=0))
    assert cols_of_053.size + cols_of_054.size == source.shape[1]


def _stars(emu, ds, i, band, margin):
    """Constant truth stars inside the mosaic (0-based pixel x, y), bright and isolated."""
    wcs = ds.ps1.wcs(i)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    ra_c, dec_c = wcs.all_pix2world(cx, cy, 0)
    radius = 0.5 * np.hypot(nx, ny) * 0.25 + 5.0  # arcsec: the half diagonal
    truth = emu.sky.sources(float(ra_c), float(dec_c), float(radius))
    table = pd.DataFrame(truth)
    x, y = wcs.all_world2pix(table.ra.to_numpy(), table.dec.to_numpy(), 0)
    table["x"], table["y"] = x, y
    all_stars = table.copy()
    mag = table[f"mag_{band}"]
    keep = (
        (table.variability.map(lambda v: v["kind"]) == "constant")
        & (mag > 16.0)
        & (mag < 20.5)
        & (x > margin)
        & (x < nx - 1 - margin)
        & (y > margin)
        & (y < ny - 1 - margin)
    )
    table = table[keep]
    # isolated: no other source brighter than 4 mag fainter within 8"
    isolated = []
    for _, s in table.iterrows():
        d = np.hypot(all_stars.x - s.x, all_stars.y - s.y)
        near = (d > 0) & (d < 32) & (all_stars[f"mag_{band}"] < s[f"mag_{band}"] + 4)
        isolated.append(not near.any())
    return table[np.array(isolated, dtype=bool)]


def _calibrated(image, variance, x, y, zp):
    m = measure_aperture(image, variance, position=(x, y), radius=RADIUS, annulus=ANNULUS)
    scale = 10 ** (-0.4 * zp)
    return m.flux * scale, m.flux_err * scale


def test_straddling_two_projcells_calibrated_fluxes_and_no_seam(emu, dask_client, tmp_path):
    store = tmp_path / "m.zarr"
    # on the edge of projection cells 1482 and 1483, near the Galactic plane (many stars)
    summary = ps1dask.cutouts(
        pd.DataFrame({"ra": [285.1685], "dec": [6.4]}),
        store,
        filters="g",
        size=2400,
        types=("stack", "stack.wt"),
        strategy="skycell",
        service=emu.url,
        client=dask_client,
        cache_dir=tmp_path / "cache",
        progress=False,
        mosaic=True,
    )
    assert summary.statuses == {"ok": 1}
    assert emu.metrics()["max_in_flight"] <= 10
    ds = ps1dask.open_store(store)
    flux = ds.stack_flux.values[0, 0]
    var = ds.stack_variance.values[0, 0]
    source = ds.mosaic_skycell.values[0]
    zp_out = float(ds.stack_zeropoint.values[0, 0])
    assert np.isfinite(flux).mean() > 0.999
    projcell = source // 1000
    assert set(np.unique(projcell).tolist()) == {1482, 1483}

    stars = _stars(emu, ds, 0, "g", margin=40)
    sx, sy = np.rint(stars.x).astype(int), np.rint(stars.y).astype(int)
    side = projcell[sy, sx]
    assert (side == 1482).sum() >= 4 and (side == 1483).sum() >= 4, "too few stars per side"
    ratios_own, pulls = [], []
    for (_, s), code in zip(stars.iterrows(), source[sy, sx]):
        f, e = _calibrated(flux, var, s.x, s.y, zp_out)
        # the same star in its own skycell file, with that file's zero point
        sid = SkycellId(int(code) // 1000, int(code) % 1000)
        pixels, header = _whole_file(emu.url, image_filename(sid, "g", "stack"))
        wpix, _ = _whole_file(emu.url, image_filename(sid, "g", "stack.wt"))
        fx, fy = header_wcs(header).all_world2pix(s.ra, s.dec, 0)
        x0, y0 = int(fx) - 40, int(fy) - 40
        f_own, _ = _calibrated(
            pixels[y0 : y0 + 81, x0 : x0 + 81],
            wpix[y0 : y0 + 81, x0 : x0 + 81],
            float(fx) - x0,
            float(fy) - y0,
            header_zeropoint(header),
        )
        ratios_own.append((f / f_own, code // 1000))
        truth = 10 ** (-0.4 * s["mag_g"])
        pulls.append((f - truth) / e)
    ratios = np.array([r for r, _ in ratios_own])
    sides = np.array([p for _, p in ratios_own])
    for p in (1482, 1483):
        assert abs(np.median(ratios[sides == p]) - 1) < 0.01, (p, ratios[sides == p])
    # within 1.01 on the own side: the pixels are the file's, only the zero point may differ
    pulls = np.array(pulls)
    assert abs(np.median(pulls)) < 1.0 and np.mean(np.abs(pulls) < 4) > 0.9, pulls

    # pictures of large mosaics are block-averaged (2400 px > 2048: by 2), from the store
    picture = cutout_image(ds, 0, "g")
    assert picture.shape == (1200, 1200)
    small = cutout_pixels(ds, 0, "g", max_side=2048)
    np.testing.assert_allclose(small[10, 20], np.nanmean(flux[20:22, 40:42]), rtol=1e-5)

    # seam: background either side of the projection-cell boundary, row by row
    noise = float(np.sqrt(np.nanmedian(var)))
    left, right = [], []
    for r in range(0, flux.shape[0], 4):
        changes = np.flatnonzero(np.diff(projcell[r]))
        if changes.size != 1:
            continue
        b = int(changes[0]) + 1
        left.append(flux[r, b - 24 : b])
        right.append(flux[r, b : b + 24])
    step = np.nanmedian(np.concatenate(right)) - np.nanmedian(np.concatenate(left))
    assert abs(step) < 0.1 * noise, (step, noise)


@pytest.mark.slow
def test_twenty_arcmin_mosaic_at_the_pole_cell(emu, dask_client, tmp_path):
    store = tmp_path / "pole.zarr"
    summary = ps1dask.cutouts(
        pd.DataFrame({"ra": [45.0], "dec": [87.8]}),
        store,
        filters="g",
        size=4800,  # 20 arcmin
        strategy="skycell",
        service=emu.url,
        client=dask_client,
        cache_dir=tmp_path / "cache",
        progress=False,
        mosaic=True,
    )
    assert summary.statuses == {"ok": 1}
    assert emu.metrics()["max_in_flight"] <= 10
    ds = ps1dask.open_store(store)
    assert ds.crval2.values[0] == 90.0  # the polar cell's grid
    flux = ds.stack_flux.values[0, 0]
    source = ds.mosaic_skycell.values[0]
    assert np.isfinite(flux).mean() > 0.999 and (source >= 0).all()
    projcells = set(np.unique(source // 1000).tolist())
    assert 2643 in projcells and len(projcells) == 2
    stars = _stars(emu, ds, 0, "g", margin=40)
    zp = float(ds.stack_zeropoint.values[0, 0])
    sx, sy = np.rint(stars.x).astype(int), np.rint(stars.y).astype(int)
    sides = source[sy, sx] // 1000
    ratios = []
    for _, s in stars.iterrows():
        f, _ = _calibrated(flux, None, s.x, s.y, zp)
        ratios.append(f / 10 ** (-0.4 * s["mag_g"]))
    ratios = np.array(ratios)
    for p in projcells:
        assert (sides == p).sum() >= 5
        assert abs(np.median(ratios[sides == p]) - 1) < 0.03, (p, ratios[sides == p])


def test_mosaic_argument_errors(emu, dask_client, tmp_path):
    table = pd.DataFrame({"ra": [330.0], "dec": [2.0]})
    with pytest.raises(InvalidParameterError, match="cannot make mosaics"):
        ps1dask.cutouts(table, tmp_path / "a.zarr", strategy="cutout", mosaic=True, service=emu.url)
    with pytest.raises(InvalidParameterError, match="mosaic"):
        ps1dask.cutouts(table, tmp_path / "b.zarr", size=7000, service=emu.url)
    with pytest.raises(InvalidParameterError, match="1..14400"):
        ps1dask.cutouts(table, tmp_path / "c.zarr", size=14401, mosaic=True, service=emu.url)
    table.to_csv(tmp_path / "t.csv", index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ps1dask",
            "cutouts",
            str(tmp_path / "t.csv"),
            "-o",
            str(tmp_path / "d.zarr"),
            "--mosaic",
            "--strategy",
            "cutout",
            "--service",
            emu.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "cannot make mosaics" in proc.stderr
    assert "Traceback" not in proc.stderr
    # a mosaic store is not resumed as plain cutouts (nor the other way round)
    ra, dec = _boundary("1405.053", "1405.054")
    one = pd.DataFrame({"ra": [ra], "dec": [dec]})
    kwargs = {
        "filters": "g",
        "size": 64,
        "service": emu.url,
        "client": dask_client,
        "progress": False,
        "strategy": "range",
    }
    ps1dask.cutouts(one, tmp_path / "e.zarr", mosaic=True, **kwargs)
    with pytest.raises(StoreMismatchError, match="mosaic"):
        ps1dask.cutouts(one, tmp_path / "e.zarr", **kwargs)
    with pytest.raises(StoreMismatchError, match="mosaic"):
        ps1dask.warps(one, tmp_path / "e.zarr", **kwargs)
    ps1dask.cutouts(one, tmp_path / "f.zarr", **kwargs)
    with pytest.raises(StoreMismatchError, match="plain cutouts"):
        ps1dask.cutouts(one, tmp_path / "f.zarr", mosaic=True, **kwargs)
    # a small mosaic inside one skycell is the plain cutout, pixel for pixel
    a = ps1dask.open_store(tmp_path / "e.zarr").stack_flux.values
    b = ps1dask.open_store(tmp_path / "f.zarr").stack_flux.values
    np.testing.assert_array_equal(a, b)
    # auto chooses among the strategies that serve mosaics: never fitscut, same pixels
    auto = ps1dask.cutouts(one, tmp_path / "g.zarr", mosaic=True, **{**kwargs, "strategy": "auto"})
    assert auto.strategies and "cutout" not in auto.strategies
    c = ps1dask.open_store(tmp_path / "g.zarr").stack_flux.values
    np.testing.assert_array_equal(a, c)


def test_killed_mosaic_job_resumes_to_the_same_store(emu, dask_client, tmp_path):
    ra, dec = _boundary("1405.053", "1405.054")
    table = pd.DataFrame({"ra": np.full(6, ra), "dec": dec + np.linspace(-0.05, 0.05, 6)})
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    killed = tmp_path / "killed.zarr"
    emu.configure(latency=0.3)
    cmd = [
        sys.executable,
        "-m",
        "ps1dask",
        "cutouts",
        str(csv),
        "-o",
        str(killed),
        "--filters",
        "gr",
        "--size",
        "400,300",
        "--mosaic",
        "--strategy",
        "range",
        "--service",
        emu.url,
        "--workers",
        "1",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    kill_when_stored(proc, killed, 2, timeout=300)
    stored = ok_positions(killed)
    assert 0 < stored < len(table), "kill came too late or too early"
    # one task per (position, filter): those not stored at the kill are redone, only them
    left = int((ps1dask.open_store(killed).stack_status.values != 1).sum())
    emu.configure(latency=0.0)
    emu.reset_metrics()
    kwargs = {
        "filters": "gr",
        "size": (300, 400),
        "strategy": "range",
        "service": emu.url,
        "client": dask_client,
        "progress": False,
        "mosaic": True,
    }
    resumed = ps1dask.cutouts(csv, killed, **kwargs)
    assert resumed.statuses == {"ok": 2 * len(table)}
    assert resumed.units_run == left
    assert emu.metrics()["max_in_flight"] <= 10
    whole = tmp_path / "whole.zarr"
    ps1dask.cutouts(csv, whole, **kwargs)
    assert_same_store(killed, whole)
    # a rerun fetches nothing
    emu.reset_metrics()
    again = ps1dask.cutouts(csv, whole, **kwargs)
    assert again.units_run == 0 and emu.metrics()["requests_total"] == 0
