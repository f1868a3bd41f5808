"""The warp job end to end against the emulator: epochs, times, blanks, strategies, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

import ps1dask
from ps1dask.client import PS1Service
from ps1dask.conventions import image_filename
from ps1dask.storage import STATUS, mjd_days
from ps1dask.tessellation import SkycellId, locate, skycell_center

CELL = "1405.053"


def _positions(n: int, seed: int) -> pd.DataFrame:
    ra0, dec0 = skycell_center(CELL)
    rng = np.random.default_rng(seed)
    ra, dec = ra0 + rng.uniform(-0.18, 0.18, 3 * n), dec0 + rng.uniform(-0.18, 0.18, 3 * n)
    keep = np.flatnonzero(locate(ra, dec).skycell.to_numpy() == f"skycell.{CELL}")[:n]
    return pd.DataFrame(
        {"name": [f"w{i}" for i in range(len(keep))], "ra": ra[keep], "dec": dec[keep]}
    )


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def test_warp_epochs_times_and_blanks(emu, dask_client, tmp_path):
    table = _positions(6, seed=11)
    table.loc[len(table)] = ["south", 20.0, -70.0]
    store = tmp_path / "warps.zarr"
    summary = ps1dask.warps(
        table,
        store,
        filters="gr",
        size=32,
        types=("warp", "warp.mask"),
        strategy="cutout",
        service=emu.url,
        client=dask_client,
        progress=False,
    )
    assert summary.statuses.get("failed", 0) == 0
    assert emu.metrics()["max_in_flight"] <= 10
    ds = ps1dask.open_store(store)
    sky = emu.sky
    sid = SkycellId.parse(CELL)
    for bi, band in enumerate("gr"):
        truth = sky.warp_epochs(sid, band)
        n = len(truth)
        assert (ds.n_epochs.values[:6, bi] == n).all()
        assert ds.n_epochs.values[6, bi] == 0  # outside the footprint: no epochs
        # xarray decodes warp_mjd (CF time units) to datetime64; mjd_days gives MJD back
        assert np.issubdtype(ds.warp_mjd.dtype, np.datetime64)
        mjd = mjd_days(ds.warp_mjd.values[0, bi, :n])
        # UTC mid-exposure, exactly the emulator's truth epochs, sorted by time
        np.testing.assert_allclose(mjd, [e.mjd_mid_utc for e in truth], rtol=0, atol=1e-8)
        assert (np.diff(mjd) > 0).all()
        np.testing.assert_allclose(
            ds.warp_mjd_obs_tai.values[0, bi, :n], [e.mjd_obs_tai for e in truth], rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(
            ds.warp_zeropoint.values[0, bi, :n],
            [e.fpa_zp + 2.5 * np.log10(e.exptime) for e in truth],
            atol=1e-5,
        )
        assert np.isnat(ds.warp_mjd.values[0, bi, n:]).all()
    status = ds.warp_status.values
    real = np.arange(status.shape[2])[None, None, :] < ds.n_epochs.values[:, :, None]
    assert set(np.unique(status[real])) <= {STATUS["ok"], STATUS["blank"]}
    # blank warps have no usable pixel near the position, and ok ones some
    cov = ds.warp_coverage.values
    assert (cov[status == STATUS["blank"]] == 0).all()
    assert (cov[status == STATUS["ok"]] > 0).all()

    # pixels are those of the service's own cutout of that warp
    service = PS1Service(emu.url)
    e = int(np.flatnonzero(status[0, 1] == STATUS["ok"])[0])
    name = image_filename(sid, "r", "warp", float(ds.warp_mjd_listed.values[0, 1, e]))
    hdu = service.cutout_fits(name, table.ra[0], table.dec[0], 32)
    np.testing.assert_array_equal(ds.warp_flux.values[0, 1, e], hdu.data)

    # a rerun fetches nothing: not even the blank warps, and no listing
    emu.reset_metrics()
    again = ps1dask.warps(
        table,
        store,
        filters="gr",
        size=32,
        types=("warp", "warp.mask"),
        strategy="cutout",
        service=emu.url,
        client=dask_client,
        progress=False,
    )
    assert emu.metrics()["requests_total"] == 0
    assert again.statuses == summary.statuses


def test_warp_strategies_agree_and_share_a_store_with_stacks(emu, dask_client, tmp_path):
    table = _positions(5, seed=12)
    sid = SkycellId.parse(CELL)
    epochs = emu.sky.warp_epochs(sid, "i")
    window = (epochs[0].mjd_listed - 1e-6, epochs[1].mjd_listed + 1e-6)  # two warps: two files
    stores = {}
    for strategy in ("cutout", "range"):
        stores[strategy] = tmp_path / f"{strategy}.zarr"
        ps1dask.cutouts(
            table,
            stores[strategy],
            filters="i",
            size=40,
            service=emu.url,
            client=dask_client,
            strategy="cutout",
            progress=False,
        )
        ps1dask.warps(
            table,
            stores[strategy],
            filters="i",
            size=40,
            mjd_range=window,
            strategy=strategy,
            service=emu.url,
            client=dask_client,
            progress=False,
        )
    a = zarr.open_group(str(stores["cutout"]), mode="r")
    b = zarr.open_group(str(stores["range"]), mode="r")
    for name in ("warp_flux", "warp_mjd", "warp_status", "warp_zeropoint", "stack_flux"):
        np.testing.assert_array_equal(np.asarray(a[name][:]), np.asarray(b[name][:]), err_msg=name)
    ds = ps1dask.open_store(stores["range"])
    assert ds.sizes["epoch"] == 2 and "stack_flux" in ds and "warp_flux" in ds
