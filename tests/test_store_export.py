"""The store as xarray users expect it, and FITS / astropy objects out of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
import zarr
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

import ps1dask
from ps1dask.exceptions import InvalidParameterError
from ps1dask.render.lightcurve import aperture_lightcurve
from ps1dask.storage import STATUS, mjd_days
from ps1dask.viewer.app import ViewerState
from tests._cli import run_ps1dask
from tests._jobs import positions_in_one_skycell

NY, NX = 20, 30  # astropy's (ny, nx) order in the Python API: 30 wide, 20 high
FILTERS = "gr"


@pytest.fixture(scope="module")
def store(job_emulator, dask_client, tmp_path_factory) -> Path:
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    path = tmp_path_factory.mktemp("export") / "field.zarr"
    table = positions_in_one_skycell(4, seed=11)
    common = {
        "filters": FILTERS,
        "size": (NY, NX),
        "strategy": "cutout",
        "service": job_emulator.url,
        "client": dask_client,
        "progress": False,
    }
    stacks = ps1dask.cutouts(table, path, types=("stack", "stack.wt", "stack.mask"), **common)
    assert stacks.statuses == {"ok": len(table) * len(FILTERS)}
    warps = ps1dask.warps(table, path, types=("warp", "warp.wt"), **common)
    assert warps.statuses.get("ok", 0) > 0 and warps.statuses.get("failed", 0) == 0
    return path


def _old_style_copy(src: Path, dst: Path) -> Path:
    """The store as ps1dask wrote it before: warp_mjd in plain days, id a data variable."""
    shutil.copytree(src, dst)
    for meta in dst.glob("*/zarr.json"):
        doc = json.loads(meta.read_text())
        attrs = doc.get("attributes", {})
        attrs.pop("coordinates", None)
        if meta.parent.name == "warp_mjd":
            attrs["units"] = "d"
            attrs.pop("calendar", None)
            attrs.pop("standard_name", None)
        meta.write_text(json.dumps(doc))
    zarr.consolidate_metadata(str(dst))
    return dst


# --------------------------------------------------------------------------------------
# the store in xarray
# --------------------------------------------------------------------------------------


def test_store_follows_xarray_and_cf_conventions(store: Path) -> None:
    ds = ps1dask.open_store(store)
    assert (ds.sizes["y"], ds.sizes["x"]) == (NY, NX)
    assert ds.attrs["Conventions"].startswith("CF-")
    # id: a coordinate on position, indexable
    assert "id" in ds.coords and ds["id"].dims == ("position",)
    by_id = ds.set_xindex("id")
    for k in range(ds.sizes["position"]):
        ident = str(ds["id"].values[k])
        assert float(by_id.sel(id=ident)["ra"]) == float(ds["ra"].values[k])
    # plain xarray.open_zarr sees the same coordinate
    assert "id" in xr.open_zarr(str(store)).coords
    # warp_mjd decodes to datetimes, and back to the MJD days the tasks wrote
    assert np.issubdtype(ds["warp_mjd"].dtype, np.datetime64)
    assert ds["warp_mjd"].attrs["standard_name"] == "time"
    assert "TAI" in ds["warp_mjd"].attrs["comment"]
    raw = np.asarray(zarr.open_array(str(store), path="warp_mjd", mode="r")[:])
    plan = ps1dask.open_store(store, input_order=False)
    decoded = mjd_days(plan["warp_mjd"])
    assert np.array_equal(np.isnan(decoded), np.isnan(raw)) and np.isfinite(raw).any()
    np.testing.assert_allclose(decoded, raw, rtol=0, atol=1e-8)  # < 1 ms
    assert ds["stack_status"].attrs["standard_name"] == "status_flag"


def test_older_stores_read_the_same(store: Path, tmp_path: Path) -> None:
    old_path = _old_style_copy(store, tmp_path / "old.zarr")
    old = ps1dask.open_store(old_path)
    new = ps1dask.open_store(store)
    assert "id" in old.coords
    assert not np.issubdtype(old["warp_mjd"].dtype, np.datetime64)
    np.testing.assert_allclose(
        mjd_days(old["warp_mjd"]), mjd_days(new["warp_mjd"]), rtol=0, atol=1e-8
    )
    # the light curve the gallery and viewer draw: the same times from both stores
    label = int(new["position"].values[1])
    got_new = aperture_lightcurve(new, 1)
    got_old = aperture_lightcurve(old, 1)
    assert len(got_new) > 0
    np.testing.assert_allclose(got_new["mjd"], got_old["mjd"], rtol=0, atol=1e-8)
    raw = new["warp_mjd"].sel(position=label)
    assert set(np.round(got_new["mjd"], 6)) <= set(np.round(mjd_days(raw).ravel(), 6))
    # the viewer's epoch list: MJD numbers from both
    epochs_new, epochs_old = ViewerState(store).epochs(1), ViewerState(old_path).epochs(1)
    for band in FILTERS:
        a = [e["mjd"] for e in epochs_new[band]]
        b = [e["mjd"] for e in epochs_old[band]]
        assert a and all(isinstance(v, float) for v in a if v is not None)
        np.testing.assert_allclose(np.array(a, dtype=float), np.array(b, dtype=float), atol=1e-8)


# --------------------------------------------------------------------------------------
# FITS and astropy objects
# --------------------------------------------------------------------------------------


def _same_wcs(a: WCS, b: WCS) -> None:
    np.testing.assert_array_equal(a.wcs.crval, b.wcs.crval)
    np.testing.assert_array_equal(a.wcs.crpix, b.wcs.crpix)
    np.testing.assert_allclose(a.pixel_scale_matrix, b.pixel_scale_matrix, rtol=1e-12)
    assert a.wcs.ctype[0] == b.wcs.ctype[0] and a.wcs.radesys == b.wcs.radesys


def test_to_fits_round_trip(store: Path, tmp_path: Path) -> None:
    ds = ps1dask.open_store(store)
    for k in range(ds.sizes["position"]):
        label = int(ds["position"].values[k])
        for band in FILTERS:
            path = tmp_path / f"{label}{band}.fits"
            ds.ps1.to_fits(label, band).writeto(path)
            with fits.open(path) as hdul:
                sel = ds.sel(position=label, filter=band)
                np.testing.assert_array_equal(hdul[0].data, sel["stack_flux"].values)
                np.testing.assert_array_equal(hdul["stack.wt"].data, sel["stack_variance"].values)
                np.testing.assert_array_equal(hdul["stack.mask"].data, sel["stack_mask"].values)
                header = hdul[0].header
                _same_wcs(WCS(header), ds.ps1.wcs(k))
                assert header["PHOTZP"] == pytest.approx(float(sel["stack_zeropoint"]), abs=1e-6)
                assert header["OBJECT"] == str(sel["id"].values)
                assert header["BUNIT"] == "count" and header["FILTER"] == band
                assert header["IMAGE"].endswith(f".stk.{band}.unconv.fits")


def test_warp_to_fits_has_the_times(store: Path) -> None:
    ds = ps1dask.open_store(store)
    ok = np.argwhere(ds["warp_status"].values == STATUS["ok"])
    for k, f, e in ok[:: max(1, len(ok) // 6)]:
        label, band = int(ds["position"].values[k]), FILTERS[f]
        hdul = ds.ps1.to_fits(label, band, epoch=int(e))
        sel = ds.sel(position=label, filter=band).isel(epoch=int(e))
        np.testing.assert_array_equal(hdul[0].data, sel["warp_flux"].values)
        np.testing.assert_array_equal(hdul["warp.wt"].data, sel["warp_variance"].values)
        header = hdul[0].header
        assert header["TIMESYS"] == "TAI"
        assert header["MJD-OBS"] == float(sel["warp_mjd_obs_tai"])
        assert header["MJD-UTC"] == pytest.approx(float(mjd_days(sel["warp_mjd"])), abs=1e-8)
        assert header["EXPTIME"] == float(sel["warp_exptime"])
        assert header["PHOTZP"] == pytest.approx(float(sel["warp_zeropoint"]), abs=1e-6)
        _same_wcs(WCS(header), ds.ps1.wcs(int(k)))


def test_cutout2d_gives_nddata_with_wcs_unit_variance_mask(store: Path) -> None:
    ds = ps1dask.open_store(store)
    label = int(ds["position"].values[2])
    ccd = ds.ps1.cutout2d(label, "r")
    sel = ds.sel(position=label, filter="r")
    assert ccd.unit == u.count and ccd.shape == (NY, NX)
    np.testing.assert_array_equal(ccd.data, sel["stack_flux"].values)
    np.testing.assert_array_equal(ccd.uncertainty.array, sel["stack_variance"].values)
    assert ccd.mask.shape == (NY, NX)
    _same_wcs(ccd.wcs, ds.ps1.wcs(2))
    # astropy's own Cutout2D works on it at the position
    centre = SkyCoord(float(sel["ra"]), float(sel["dec"]), unit="deg", frame="fk5")
    small = Cutout2D(ccd.data, centre, (5, 5), wcs=ccd.wcs)
    assert small.data[2, 2] == sel["stack_flux"].values[NY // 2, NX // 2]


def test_to_fits_refuses_unknown_positions_filters_epochs(store: Path) -> None:
    ds = ps1dask.open_store(store)
    with pytest.raises(InvalidParameterError, match="position=99"):
        ds.ps1.to_fits(99, "g")
    with pytest.raises(InvalidParameterError, match="filter='z'"):
        ds.ps1.to_fits(0, "z")
    n = int(ds["n_epochs"].sel(position=0, filter="g"))
    with pytest.raises(InvalidParameterError, match=f"epoch={n}"):
        ds.ps1.to_fits(0, "g", epoch=n)


def test_export_cli_writes_one_file_per_cutout(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "fits"
    done = run_ps1dask("export", str(store), "-o", str(out), "--filters", "r")
    assert done.returncode == 0, done.stderr
    ds = ps1dask.open_store(store)
    r = FILTERS.index("r")
    n_ok = int((ds["stack_status"].values[:, r] == STATUS["ok"]).sum())
    n_ok += int((ds["warp_status"].values[:, r] == STATUS["ok"]).sum())
    files = sorted(out.glob("*.fits"))
    assert len(files) == n_ok
    assert not any(".g." in f.name for f in files)
    for k in range(ds.sizes["position"]):
        sel = ds.isel(position=k).sel(filter="r")
        name = f"{sel['id'].values}_rings.v3.{sel['skycell'].values}.stk.r.unconv.fits"
        with fits.open(out / name) as hdul:
            np.testing.assert_array_equal(hdul[0].data, sel["stack_flux"].values)
            # astropy's Cutout2D on the exported file at the position: the same centre pixel
            # (RA_OBJ/DEC_OBJ are FK5 J2000, as the header's RADESYS: ICRS is 0.1 px away)
            header = hdul[0].header
            centre = SkyCoord(header["RA_OBJ"], header["DEC_OBJ"], unit="deg", frame="fk5")
            one = Cutout2D(hdul[0].data, centre, 1, wcs=WCS(hdul[0].header))
            assert one.data[0, 0] == sel["stack_flux"].values[NY // 2, NX // 2]
    warp_files = [f for f in files if ".wrp.r." in f.name]
    assert warp_files
    # a second export into the same directory does not silently replace files
    again = run_ps1dask("export", str(store), "-o", str(out), "--filters", "r")
    assert again.returncode == 1 and "--overwrite" in again.stderr
