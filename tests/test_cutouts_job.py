"""The stack cutout job end to end: emulator over loopback HTTP, a LocalCluster of processes."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
import xarray as xr
import zarr
from _jobs import (
    arrays,
    assert_same_store,
    cutouts_cmd,
    kill_when_stored,
    ok_positions,
    positions_in_one_skycell,
)

import ps1dask
from ps1dask.client import PS1Service
from ps1dask.client.throttle import lease_counts
from ps1dask.conventions import image_filename
from ps1dask.storage import StoreMismatchError
from ps1dask.tessellation import SkycellId


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def test_strategies_give_identical_pixels_equal_to_fitscut(emu, dask_client, tmp_path):
    table = positions_in_one_skycell(12)
    table.loc[len(table)] = ["south", 10.0, -60.0]  # outside the tessellation
    table.loc[len(table)] = ["zone14", 30.0, -34.0]  # tessellated, but no PS1 3pi images
    stores = {}
    for strategy in ("cutout", "skycell", "range", "auto"):
        stores[strategy] = tmp_path / f"{strategy}.zarr"
        summary = ps1dask.cutouts(
            table,
            stores[strategy],
            filters="r",
            size=50,
            strategy=strategy,
            service=emu.url,
            client=dask_client,
            cache_dir=tmp_path / f"cache-{strategy}",
            progress=False,
        )
        assert summary.statuses == {"ok": 12, "outside_footprint": 2}, (strategy, summary)
        assert emu.metrics()["max_in_flight"] <= 10
    for strategy in ("skycell", "range", "auto"):
        assert_same_store(stores["cutout"], stores[strategy])

    # the store holds exactly what the service's own fitscut answers for the same request
    ds = ps1dask.open_store(stores["range"])
    assert list(ds.id.values) == list(table.name)  # input order
    service = PS1Service(emu.url)
    filename = image_filename(SkycellId(1405, 53), "r")
    for i in (0, 5, 11):
        hdu = service.cutout_fits(filename, table.ra[i], table.dec[i], 50)
        np.testing.assert_array_equal(ds.stack_flux.sel(filter="r").values[i], hdu.data)
        # the stored WCS is the cutout's own
        wcs = ds.ps1.wcs(i)
        assert wcs.wcs.crpix[0] == pytest.approx(hdu.header["CRPIX1"])
        x, y = wcs.all_world2pix(table.ra[i], table.dec[i], 0)
        assert abs(float(x) - 25) <= 0.5 and abs(float(y) - 25) <= 0.5
    status = ds.ps1.status_names().values
    assert status[-2, 0] == "outside_footprint" and status[-1, 0] == "outside_footprint"
    assert np.isnan(ds.stack_flux.values[-1]).all()


def test_auxiliary_images_zeropoints_and_limit(emu, dask_client, tmp_path):
    emu.configure(latency=0.05)
    table = positions_in_one_skycell(30, seed=3)
    store = tmp_path / "aux.zarr"
    summary = ps1dask.cutouts(
        table,
        store,
        filters="gi",
        size=32,
        types="stack,stack.wt,stack.mask",
        strategy="cutout",
        service=emu.url,
        client=dask_client,
        progress=False,
        max_unit_positions=8,
    )
    metrics = emu.metrics()
    n = len(table)
    assert summary.statuses == {"ok": 2 * n}
    assert metrics["requests_by_endpoint"]["/cgi-bin/fitscut.cgi"] == 3 * 2 * n
    assert metrics["max_in_flight"] <= 10
    assert metrics["max_in_flight"] >= 8  # the units keep the slots busy
    assert metrics["refused_over_limit"] == 0
    ds = xr.open_zarr(store)  # plain xarray works too (plan order)
    assert ds.stack_mask.dtype == np.uint16
    assert float(ds.stack_variance.min()) > 0
    zp = ds.stack_zeropoint.values
    assert np.all((zp > 28) & (zp < 36))  # 25 + 2.5 log10(total exposure)
    assert ds.stack_flux.attrs["units"] == "count"
    # pixel arrays use the configured Blosc codec; per-position arrays keep Zarr's default
    group = zarr.open_group(str(store), mode="r")
    for name in ("stack_flux", "stack_variance", "stack_mask"):
        (codec,) = group[name].compressors
        assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("lz4", 5, "bitshuffle")
        assert codec.typesize == group[name].dtype.itemsize
    assert group["stack_status"].compressors[0].to_dict()["name"] == "zstd"


def test_pixel_compressor_comes_from_config():
    import dask

    from ps1dask.exceptions import InvalidParameterError
    from ps1dask.storage.layout import pixel_compressor

    with dask.config.set(
        {"ps1dask.store.pixel-compressor": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle"}}
    ):
        codec = pixel_compressor()
    assert (codec.cname.value, codec.clevel, codec.shuffle.value) == ("zstd", 3, "shuffle")
    for bad in ({"cname": "rar", "clevel": 3, "shuffle": "shuffle"}, {"cname": "lz4", "clevel": 3}):
        with (
            dask.config.set({"ps1dask.store.pixel-compressor": bad}),
            pytest.raises(InvalidParameterError, match="pixel-compressor"),
        ):
            pixel_compressor()


def test_rerun_sends_no_image_requests_and_changed_request_is_refused(emu, dask_client, tmp_path):
    table = positions_in_one_skycell(10, seed=5)
    store = tmp_path / "rerun.zarr"
    kwargs = {
        "filters": "z",
        "size": 40,
        "strategy": "cutout",
        "service": emu.url,
        "client": dask_client,
        "progress": False,
    }
    first = ps1dask.cutouts(table, store, **kwargs)
    assert first.statuses["ok"] == len(table)
    before = arrays(store)
    emu.reset_metrics()
    again = ps1dask.cutouts(table, store, **kwargs)
    assert emu.metrics()["requests_total"] == 0
    assert again.units_run == 0 and again.statuses == first.statuses
    after = arrays(store)
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name
    with pytest.raises(StoreMismatchError, match="size|width"):
        ps1dask.cutouts(table, store, **{**kwargs, "size": 41})
    with pytest.raises(StoreMismatchError, match="filters"):
        ps1dask.cutouts(table, store, **{**kwargs, "filters": "gz"})
    # asked to overwrite: made anew
    ps1dask.cutouts(table, store, **{**kwargs, "size": 41, "resume": False})
    assert ps1dask.open_store(store).sizes["x"] == 41


def test_killed_job_resumes_to_the_same_store(emu, dask_client, tmp_path):
    emu.configure(latency=0.15)
    table = positions_in_one_skycell(60, seed=7)
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    killed = tmp_path / "killed.zarr"
    cmd = cutouts_cmd(csv, killed, emu.url, "--workers", "1", "--unit-size", "4", size=24)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    kill_when_stored(proc, killed, 8)
    # the whole process group (client and its LocalCluster) is dead: nothing writes any more
    stored = ok_positions(killed)
    assert 0 < stored < len(table), "kill came too late or too early"

    emu.configure(latency=0.0)
    emu.reset_metrics()
    kwargs = {
        "filters": "gr",
        "size": 24,
        "strategy": "cutout",
        "service": emu.url,
        "client": dask_client,
        "progress": False,
    }
    resumed = ps1dask.cutouts(csv, killed, max_unit_positions=4, **kwargs)
    metrics = emu.metrics()
    refetched = metrics["requests_by_endpoint"].get("/cgi-bin/fitscut.cgi", 0)
    assert resumed.statuses == {"ok": 2 * len(table)}
    # exactly the cutouts not stored at the kill are fetched, each once (a unit writes its
    # statuses last, so a position is stored in both filters or in neither), and nothing else
    assert refetched == 2 * (len(table) - stored)
    assert metrics["requests_total"] == refetched
    whole = tmp_path / "whole.zarr"
    ps1dask.cutouts(csv, whole, max_unit_positions=4, **kwargs)
    assert_same_store(killed, whole)


def test_service_probes_of_auto_take_cluster_slots(emu, dask_client):
    """The auto strategy's three probe requests run at once from the client process, in
    threads of their own, yet each holds one of the cluster's request slots."""
    from ps1dask.execution.job_steps import measure_profile
    from ps1dask.planning import plan_stack_job
    from ps1dask.positions import read_positions

    plan = plan_stack_job(
        read_positions(positions_in_one_skycell(5)), filters="r", service_url=emu.url
    )
    service = PS1Service(emu.url)
    name = service.throttle.name

    def acquired(dask_scheduler, name=name):
        return int(dask_scheduler.extensions["semaphores"].metrics["acquire_total"].get(name, 0))

    def waiting(dask_scheduler, name=name):
        return int(dask_scheduler.extensions["semaphores"].metrics["pending"].get(name, 0))

    before = dask_client.run_on_scheduler(acquired)
    counts_before = lease_counts(name)
    with dask_client.as_current():
        profile = measure_profile(service, plan.units[0], "r", cores=4)
    # each probe under a lease of the cluster semaphore: just granted, or handed over by
    # another probe thread (then a grant nobody waits for any more goes back unused)
    for _ in range(400):
        granted = dask_client.run_on_scheduler(acquired) - before
        taken = {k: v - counts_before[k] for k, v in lease_counts(name).items()}
        if dask_client.run_on_scheduler(waiting) == 0 and (
            taken["acquired"] + taken["returned_unused"] == granted
        ):
            break
        time.sleep(0.05)
    assert taken["acquired"] + taken["handed_off"] == 3 and taken["acquired"] >= 1
    assert taken["acquired"] + taken["returned_unused"] == granted
    assert emu.metrics()["requests_total"] == 3
    assert profile.latency_s > 0 and profile.cutout_latency_s > 0 and profile.cores == 4


def test_positions_west_of_ra0_are_stored_in_0_360(emu, dask_client, tmp_path):
    """A skycell west of RA 0 (skycell.1322.098, centre RA 358.6) given as a skycell id, as
    a negative RA and as an RA near 360: the store's ra, the cutout WCS and the light-curve
    rows all say RA in [0, 360)."""
    import pandas as pd

    from ps1dask.lightcurves import lightcurves_frame
    from ps1dask.tessellation import skycell_center

    ra0, dec0 = skycell_center("1322.098")
    table = pd.DataFrame(
        {
            "id": ["cell", "negative", "near360"],
            "ra": [np.nan, ra0 - 360.0 + 0.002, ra0 - 0.002],
            "dec": [np.nan, dec0, dec0],
            "skycell": ["skycell.1322.098", None, None],
        }
    )
    path = tmp_path / "ra0.zarr"
    common = {
        "filters": "r",
        "size": 48,
        "service": emu.url,
        "client": dask_client,
        "progress": False,
    }
    ps1dask.cutouts(table, path, strategy="cutout", **common)
    ps1dask.warps(table, path, strategy="cutout", mjd_range=(0.0, 56000.0), **common)
    ds = ps1dask.open_store(path)
    ra = ds.ra.values
    assert ((ra >= 0.0) & (ra < 360.0)).all() and abs(ra[0] - ra0) < 1e-9
    np.testing.assert_allclose(ra[1:], [ra0 + 0.002, ra0 - 0.002], atol=1e-9)
    assert ((ds.crval1.values >= 0.0) & (ds.crval1.values < 360.0)).all()
    assert (ds.stack_status.values == 1).all()
    for i in range(3):
        wcs = ds.ps1.wcs(i)
        sky = wcs.pixel_to_world(*wcs.world_to_pixel_values(ra[i], ds.dec.values[i]))
        assert abs(sky.ra.deg - ra[i]) < 1e-8
    lc = lightcurves_frame(path)
    assert len(lc) and ((lc.ra >= 0.0) & (lc.ra < 360.0)).all()
