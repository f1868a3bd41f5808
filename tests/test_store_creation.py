"""Store creation is atomic as a rerun sees it (issue 15): a creation interrupted at any step
(the root written, some or all arrays, the initial values, the consolidated metadata) leaves
a store without its creation marker, and the rerun makes it anew, transparently: same
requests and the same store as an uninterrupted run, also when the rerun asks for something
else (an unfinished store is no request to refuse). A created part is never remade. On disk,
in ``memory://`` and on S3 (moto).

The interruption is the hook ``_creation_step`` raising after the named step, in the client
process where stores are created: the store is left exactly as the real writer left it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from _jobs import arrays, assert_same_store, cutout_job, positions_in_one_skycell

import ps1dask
from ps1dask.exceptions import StoreMismatchError, UnfinishedStoreError
from ps1dask.storage import StoreLocation
from ps1dask.storage import layout as store_layout
from ps1dask.storage.layout import created_parts

STEPS = ("root", "arrays", "some-arrays", "initial", "consolidated")
FILTERS = "gr"
SIZE = 24
FITSCUT = "/cgi-bin/fitscut.cgi"


class Killed(BaseException):
    """Stands for the client process dying at a step of the store's creation (a
    BaseException, as KeyboardInterrupt: not wrapped as a store error)."""


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    at = "arrays" if step == "some-arrays" else step

    def hook(name: str) -> None:
        if name == at:
            raise Killed(name)

    monkeypatch.setattr(store_layout, "_creation_step", hook)


def _lose_some_arrays(where: StoreLocation) -> None:
    """What an interruption in the middle of writing the arrays leaves: every other array
    without its metadata (and chunks)."""
    group = zarr.open_group(where.zarr_store(), mode="r+", use_consolidated=False)
    for name in sorted(group.array_keys())[::2]:
        del group[name]


def _interrupted(
    monkeypatch: pytest.MonkeyPatch, step: str, where: StoreLocation, job: Any
) -> None:
    """Run ``job`` with its store's creation interrupted after ``step``."""
    with monkeypatch.context() as patch:
        _interrupt_after(patch, step)
        with pytest.raises(Killed):
            job()
    if step == "some-arrays":
        _lose_some_arrays(where)
    group = zarr.open_group(where.zarr_store(), mode="r", use_consolidated=False)
    assert "ps1dask_base" in group.attrs  # recognisable as an unfinished ps1dask store


def _fitscuts(emu: Any) -> int:
    return int(emu.metrics()["requests_by_endpoint"].get(FITSCUT, 0))


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("rerun_size", [SIZE, SIZE + 8], ids=["same", "changed"])
def test_an_interrupted_creation_is_made_anew_on_rerun(
    step, rerun_size, emu, dask_client, tmp_path, monkeypatch
):
    table = positions_in_one_skycell(8, seed=41)

    def job(store: Path, size: int) -> Any:
        return cutout_job(table, store, emu.url, dask_client, filters=FILTERS, size=size)

    store = tmp_path / "s.zarr"
    where = StoreLocation.of(store)
    _interrupted(monkeypatch, step, where, lambda: job(store, SIZE))
    assert (
        created_parts(zarr.open_group(str(store), mode="r", use_consolidated=False).attrs) == set()
    )
    # units may have fetched meanwhile, but none wrote into the unfinished store
    assert not (store / "stack_flux" / "c").exists()
    with pytest.raises(UnfinishedStoreError, match="rerun"):  # nothing to read in it
        ps1dask.open_store(store)
    emu.reset_metrics()

    summary = job(store, rerun_size)  # neither refused nor a crash
    assert summary.units_run == summary.units_total
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}
    assert _fitscuts(emu) == len(FILTERS) * len(table)
    whole = tmp_path / "whole.zarr"
    job(whole, rerun_size)
    assert_same_store(store, whole)
    assert created_parts(zarr.open_group(str(store), mode="r").attrs) == {"stack"}
    # created: an idempotent rerun, and a changed request is refused again
    emu.reset_metrics()
    assert job(store, rerun_size).units_run == 0 and _fitscuts(emu) == 0
    with pytest.raises(StoreMismatchError):
        job(store, rerun_size + 4)


@pytest.mark.parametrize("step", ["arrays", "initial", "consolidated"])
def test_an_interrupted_warp_part_is_replaced_and_the_stack_part_kept(
    step, emu, dask_client, tmp_path, monkeypatch
):
    table = positions_in_one_skycell(6, seed=42)

    def warps(store: Path, mjd_range: tuple[float, float] | None) -> Any:
        return ps1dask.warps(
            table,
            store,
            filters="r",
            size=SIZE,
            strategy="cutout",
            service=emu.url,
            client=dask_client,
            progress=False,
            mjd_range=mjd_range,
        )

    def stacks(store: Path) -> Any:
        return cutout_job(table, store, emu.url, dask_client, filters="r", size=SIZE)

    whole = tmp_path / "whole.zarr"
    stacks(whole)
    warps(whole, None)
    listed = arrays(whole)["warp_mjd_listed"]
    early = (0.0, float(np.nanmedian(listed)))  # fewer epochs: arrays of another shape

    store = tmp_path / "s.zarr"
    stacks(store)
    stack_before = {k: v for k, v in arrays(store).items() if not k.startswith("warp")}
    where = StoreLocation.of(store)
    _interrupted(monkeypatch, step, where, lambda: warps(store, early))
    attrs = zarr.open_group(str(store), mode="r", use_consolidated=False).attrs
    assert created_parts(attrs) == {"stack"}

    emu.reset_metrics()
    summary = warps(store, None)  # another mjd_range than the unfinished part's: not refused
    assert summary.units_run == summary.units_total
    assert _fitscuts(emu) == summary.cutouts_fetched > 0
    assert_same_store(store, whole)
    after = arrays(store)
    for name, values in stack_before.items():
        np.testing.assert_array_equal(after[name], values, err_msg=name)
    group = zarr.open_group(str(store), mode="r")
    assert created_parts(group.attrs) == {"stack", "warp"}
    assert json.loads(group.attrs["ps1dask_warp_request"])["mjd_range"] is None


def _assert_equals_an_uninterrupted_local_run(
    where: StoreLocation, table: Any, emu: Any, dask_client: Any, tmp_path: Path
) -> None:
    """The arrays of the store at ``where`` equal those of the same job run uninterrupted
    into a local store."""
    whole = tmp_path / "whole.zarr"
    cutout_job(table, whole, emu.url, dask_client, filters=FILTERS, size=SIZE)
    got = {n: np.asarray(a[:]) for n, a in zarr.open_group(where.zarr_store()).arrays()}
    want = arrays(whole)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _memory_job(table: Any, url: str, emu: Any) -> Any:
    import distributed

    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as inproc:
        return cutout_job(table, url, emu.url, inproc, filters=FILTERS, size=SIZE)


@pytest.mark.parametrize("step", ["some-arrays", "consolidated"])
def test_interrupted_creation_in_memory_store(step, emu, dask_client, tmp_path, monkeypatch):
    table = positions_in_one_skycell(6, seed=43)
    url = f"memory://ps1dask-creation-{time.time_ns()}.zarr"
    where = StoreLocation.of(url)
    _interrupted(monkeypatch, step, where, lambda: _memory_job(table, url, emu))
    summary = _memory_job(table, url, emu)
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}
    _assert_equals_an_uninterrupted_local_run(where, table, emu, dask_client, tmp_path)


@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from _moto import moto_s3

    with moto_s3("ps1-creation", "k", "s") as (endpoint, _):
        yield {"endpoint_url": endpoint, "key": "k", "secret": "s"}


@pytest.mark.parametrize("step", ["root", "some-arrays", "consolidated"])
def test_interrupted_creation_on_s3(step, s3, emu, dask_client, tmp_path, monkeypatch):
    table = positions_in_one_skycell(6, seed=44)
    url = f"s3://ps1-creation/{step}-{time.time_ns()}.zarr"
    where = StoreLocation.of(url, s3)

    def job() -> Any:
        return cutout_job(
            table, url, emu.url, dask_client, filters=FILTERS, size=SIZE, storage_options=s3
        )

    _interrupted(monkeypatch, step, where, job)
    emu.reset_metrics()
    summary = job()
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}
    assert _fitscuts(emu) == len(FILTERS) * len(table)
    _assert_equals_an_uninterrupted_local_run(where, table, emu, dask_client, tmp_path)


def test_a_failed_creation_fails_the_job_with_its_own_error(emu, dask_client, tmp_path):
    """The store is created while the units fetch: its failure is the job's error (not the
    units' refusal to write into no store), nothing is written, and a rerun completes."""
    import dask.config

    from ps1dask.exceptions import InvalidParameterError

    table = positions_in_one_skycell(6, seed=45)
    store = tmp_path / "s.zarr"
    bad = {"cname": "lz4", "clevel": 5, "shuffle": "sideways"}
    with (
        dask.config.set({"ps1dask.store.pixel-compressor": bad}),
        pytest.raises(InvalidParameterError, match="pixel-compressor"),
    ):
        cutout_job(table, store, emu.url, dask_client, filters=FILTERS, size=SIZE)
    assert not (store / "stack_flux" / "c").exists()
    summary = cutout_job(table, store, emu.url, dask_client, filters=FILTERS, size=SIZE)
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}


def test_units_fetch_while_the_store_is_created(emu, dask_client, tmp_path, monkeypatch):
    """The creation waits (in the hook, after the arrays) until the service has answered
    requests of the units: they fetched before the store was complete, wrote after it, and
    the store equals an uninterrupted run's."""
    table = positions_in_one_skycell(8, seed=46)
    seen: list[int] = []

    def hold(step: str) -> None:
        if step == "arrays":
            deadline = time.monotonic() + 60
            while emu.metrics()["requests_total"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(int(emu.metrics()["requests_total"]))

    monkeypatch.setattr(store_layout, "_creation_step", hold)
    store = tmp_path / "s.zarr"
    summary = cutout_job(table, store, emu.url, dask_client, filters=FILTERS, size=SIZE)
    assert seen and seen[0] > 0  # requests went out while the store was being created
    assert summary.statuses == {"ok": len(FILTERS) * len(table)}
    assert _fitscuts(emu) == len(FILTERS) * len(table)
    monkeypatch.undo()
    whole = tmp_path / "whole.zarr"
    cutout_job(table, whole, emu.url, dask_client, filters=FILTERS, size=SIZE)
    assert_same_store(store, whole)
