"""Jobs that do not block (``compute=False``) and the clusters a job starts."""

from __future__ import annotations

import distributed
import pytest
from _jobs import assert_same_store, emulator_knobs, positions_in_one_skycell

import ps1dask
from ps1dask.execution import JobAbortedError


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _job(emu, **kw):
    return {
        "filters": "gr",
        "size": 24,
        "strategy": "cutout",
        "service": emu.url,
        "max_unit_positions": 2,
        "progress": False,
        **kw,
    }


def test_cutouts_compute_false_returns_a_handle_giving_the_same_store(emu, dask_client, tmp_path):
    table = positions_in_one_skycell(8, seed=5)
    handle = ps1dask.cutouts(
        table, tmp_path / "bg.zarr", **_job(emu, client=dask_client), compute=False
    )
    assert isinstance(handle, ps1dask.JobHandle)
    summary = handle.result(timeout=300)
    assert handle.done()
    assert handle.futures == []  # every unit collected
    progress = handle.progress()
    assert progress.units_done == progress.units_total == summary.units_run > 1
    assert progress.positions_done == progress.positions_total == len(table)
    assert summary.statuses == {"ok": 2 * len(table)}

    direct = ps1dask.cutouts(table, tmp_path / "fg.zarr", **_job(emu, client=dask_client))
    assert isinstance(direct, ps1dask.JobSummary)
    assert direct.statuses == summary.statuses
    assert_same_store(tmp_path / "bg.zarr", tmp_path / "fg.zarr")


def test_cancel_stops_the_job_and_a_rerun_completes_it(emu, dask_client, tmp_path):
    table = positions_in_one_skycell(8, seed=6)
    store = tmp_path / "cancelled.zarr"
    with emulator_knobs(emu, latency=0.3):  # units last long enough to be cancelled
        handle = ps1dask.cutouts(
            table, store, **_job(emu, client=dask_client, max_unit_positions=1), compute=False
        )
        handle.cancel()
        with pytest.raises(JobAbortedError, match="cancelled"):
            handle.result(timeout=300)
    assert handle.futures == []
    assert handle.progress().units_done < len(table)
    rerun = ps1dask.cutouts(table, store, **_job(emu, client=dask_client, max_unit_positions=1))
    assert rerun.statuses == {"ok": 2 * len(table)}
    reference = ps1dask.cutouts(
        table, tmp_path / "ref.zarr", **_job(emu, client=dask_client, max_unit_positions=1)
    )
    assert reference.statuses == rerun.statuses
    assert_same_store(store, tmp_path / "ref.zarr")


class _CountedLocalCluster(distributed.LocalCluster):
    started = 0

    def __init__(self, *args, **kwargs):
        type(self).started += 1
        super().__init__(*args, **kwargs)


def test_warps_without_a_client_start_one_local_cluster(emu, dask_client, tmp_path, monkeypatch):
    with pytest.raises(ValueError):  # no current client for the job to find
        distributed.get_client()
    monkeypatch.setattr(distributed, "LocalCluster", _CountedLocalCluster)
    table = positions_in_one_skycell(3, seed=7)
    kw = _job(emu, filters="r", size=16, types=("warp",), max_unit_positions=2)
    # listing the epochs and running the units share the cluster; compute=False too
    handle = ps1dask.warps(table, tmp_path / "local.zarr", **kw, n_workers=1, compute=False)
    summary = handle.result(timeout=300)
    assert _CountedLocalCluster.started == 1
    assert summary.units_run >= 1 and summary.statuses.get("failed", 0) == 0

    reference = ps1dask.warps(table, tmp_path / "ref.zarr", **kw, client=dask_client)
    assert _CountedLocalCluster.started == 1  # a given client: no cluster started
    assert reference.statuses == summary.statuses
    assert_same_store(tmp_path / "local.zarr", tmp_path / "ref.zarr")
    # a rerun that has nothing left to do starts no cluster at all
    again = ps1dask.warps(table, tmp_path / "local.zarr", **kw, n_workers=1)
    assert again.units_run == 0 and _CountedLocalCluster.started == 1
