"""Stores on object storage: jobs writing to ``s3://`` (moto's server on loopback, an
independent S3 implementation) and ``memory://`` give the same stores as on disk, resume
after a kill, refuse a changed request, and every reader opens them; bad URLs, buckets,
credentials and ``--storage-option`` values give one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from _cli import run_ps1dask
from _jobs import cutout_job, cutouts_cmd, kill_when_stored, ok_positions, positions_in_one_skycell
from _moto import moto_s3

import ps1dask
from ps1dask.exceptions import InvalidParameterError, OutputLocationError, StoreMismatchError
from ps1dask.storage import STATUS, StoreLocation
from ps1dask.storage.location import parse_storage_options

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

KEY, SECRET = "testing-key", "testing-secret"
FILTERS = "gr"
SIZE = 24
UNIT = 4


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on loopback with one bucket; yields its endpoint URL."""
    with moto_s3("ps1-out", KEY, SECRET) as (endpoint, _):
        yield endpoint


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}


def _url(name: str) -> str:
    return f"s3://ps1-out/{name}-{time.time_ns()}.zarr"


def _attrs(store: object) -> dict[str, object]:
    attrs: dict[str, object] = dict(zarr.open_group(store, mode="r").attrs)
    attrs.pop("created", None)  # the creation time differs between two runs
    return attrs


def _arrays(store: object) -> dict[str, np.ndarray]:
    group = zarr.open_group(store, mode="r")
    return {name: np.asarray(array[:]) for name, array in group.arrays()}


def _assert_same(local: object, remote: StoreLocation) -> None:
    mine, theirs = _arrays(str(local)), _arrays(remote.zarr_store())
    assert sorted(mine) == sorted(theirs)
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
    assert _attrs(str(local)) == _attrs(remote.zarr_store())


def _cutouts(table, store, emu, client, size=SIZE, **kw):
    return cutout_job(table, store, emu.url, client, filters=FILTERS, size=size, unit=UNIT, **kw)


def test_cutouts_to_s3_equal_the_same_job_on_disk(s3, emu, dask_client, tmp_path):
    table = positions_in_one_skycell(10, seed=31)
    local = tmp_path / "local.zarr"
    _cutouts(table, local, emu, dask_client)
    url = _url("cutouts")
    summary = _cutouts(table, url, emu, dask_client, storage_options=_options(s3))
    assert summary.statuses == {"ok": 2 * len(table)}
    where = StoreLocation.of(url, _options(s3))
    _assert_same(local, where)
    ds = ps1dask.open_store(url, storage_options=_options(s3))
    np.testing.assert_array_equal(ds.stack_flux.values, ps1dask.open_store(local).stack_flux.values)
    assert (ds.stack_status.values == STATUS["ok"]).all()

    # an idempotent rerun: nothing fetched, the store unchanged
    emu.reset_metrics()
    again = _cutouts(table, url, emu, dask_client, storage_options=_options(s3))
    assert again.units_run == 0
    assert emu.metrics()["requests_by_endpoint"].get("/cgi-bin/fitscut.cgi", 0) == 0
    _assert_same(local, where)

    # a changed request is refused before anything is written
    with pytest.raises(StoreMismatchError, match="width: store has 24, request has 32"):
        ps1dask.cutouts(
            table,
            url,
            filters=FILTERS,
            size=SIZE + 8,
            strategy="cutout",
            service=emu.url,
            client=dask_client,
            progress=False,
            storage_options=_options(s3),
        )
    _assert_same(local, where)

    # --no-resume (resume=False) deletes the store's objects and makes it anew
    remade = _cutouts(
        table, url, emu, dask_client, storage_options=_options(s3), resume=False, size=SIZE + 8
    )
    assert remade.statuses == {"ok": 2 * len(table)}
    ds = ps1dask.open_store(url, storage_options=_options(s3))
    assert (ds.sizes["x"], ds.sizes["y"]) == (SIZE + 8, SIZE + 8)


def test_objects_that_are_not_a_store_are_neither_used_nor_deleted(s3, emu, dask_client):
    import fsspec

    table = positions_in_one_skycell(2, seed=37)
    url = _url("other")
    fs, _ = fsspec.core.url_to_fs(url, **_options(s3))
    fs.pipe(f"{url}/notes.txt", b"not zarr")
    for resume, message in ((True, "is not a ps1dask store"), (False, "refusing to delete")):
        with pytest.raises(InvalidParameterError, match=message):
            _cutouts(table, url, emu, dask_client, storage_options=_options(s3), resume=resume)
    assert fs.cat(f"{url}/notes.txt") == b"not zarr"


def test_warps_on_s3_are_read_by_lightcurves_coadd_and_gallery(s3, emu, dask_client, tmp_path):
    from ps1dask.coadd import coadd_photometry, coadd_warps
    from ps1dask.gallery import write_gallery
    from ps1dask.lightcurves import lightcurves

    table = positions_in_one_skycell(4, seed=32)
    common = {
        "filters": "g",
        "size": 48,
        "types": ("warp", "warp.wt", "warp.mask"),
        "strategy": "cutout",
        "service": emu.url,
        "client": dask_client,
        "progress": False,
    }
    local = tmp_path / "warps.zarr"
    ps1dask.warps(table, local, **common)
    url = _url("warps")
    ps1dask.warps(table, url, storage_options=_options(s3), **common)
    where = StoreLocation.of(url, _options(s3))
    _assert_same(local, where)

    mine = lightcurves(local).compute()
    theirs = lightcurves(url, storage_options=_options(s3)).compute()
    assert len(mine) > 0
    np.testing.assert_array_equal(mine.flux.to_numpy(), theirs.flux.to_numpy())

    # coadds are written into the store they read: on S3 as on disk
    coadd_warps(local, client=dask_client)
    coadd_warps(url, client=dask_client, storage_options=_options(s3))
    _assert_same(local, where)
    assert "pixel_scale_deg" in _attrs(where.zarr_store())  # the store's attrs survive
    a = coadd_photometry(local, aperture_correction=False)
    b = coadd_photometry(url, aperture_correction=False, storage_options=_options(s3))
    np.testing.assert_array_equal(a.flux.to_numpy(), b.flux.to_numpy())

    pages = write_gallery(url, tmp_path / "g.html", lightcurves=False, storage_options=_options(s3))
    text = pages[0].read_text()
    assert text.count("<img") >= len(table)

    import requests

    from ps1dask.viewer import Viewer

    with Viewer(where) as viewer:
        info = requests.get(viewer.url + "/api/info", timeout=60).json()
        assert info["n_positions"] == len(table) and info["warps"]
        png = requests.get(viewer.url + "/image/0.png", params={"band": "g"}, timeout=60)
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"

    # the CLI's readers take the URL and --storage-option
    flags = [f"--storage-option=endpoint_url={s3}", f"--storage-option=key={KEY}"]
    flags += [f"--storage-option=secret={SECRET}"]
    exported = run_ps1dask("export", url, "-o", str(tmp_path / "fits"), *flags, timeout=180)
    assert exported.returncode == 0, exported.stderr[-2000:]
    n_ok = int((ps1dask.open_store(local).warp_status.values == STATUS["ok"]).sum())
    assert len(list((tmp_path / "fits").glob("*.fits"))) == n_ok > 0


def test_memory_store_in_process_only(emu, dask_client, tmp_path):
    import distributed

    table = positions_in_one_skycell(6, seed=33)
    local = tmp_path / "local.zarr"
    _cutouts(table, local, emu, dask_client)
    url = f"memory://ps1dask-test-{time.time_ns()}.zarr"
    with pytest.raises(InvalidParameterError, match="memory:// store exists only in this process"):
        _cutouts(table, url, emu, dask_client)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as inproc:
        _cutouts(table, url, emu, inproc)
    _assert_same(local, StoreLocation.of(url))


def test_a_unit_write_reads_the_store_metadata_once(emu, tmp_path, monkeypatch):
    """A unit's writer opens all its arrays from one read of the root's consolidated
    metadata (on an object store every metadata read is a round trip), and writes the
    values it is given. Counted at the fsspec filesystem under the store (memory://)."""
    import distributed
    from fsspec.implementations.memory import MemoryFileSystem

    from ps1dask.storage import STACK_FILTER_VARIABLES, write_unit_chunks

    reads: list[str] = []
    cat_file = MemoryFileSystem.cat_file

    def counted(self, path, *args, **kwargs):
        reads.append(str(path))
        return cat_file(self, path, *args, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "cat_file", counted)
    table = positions_in_one_skycell(6, seed=37)
    url = f"memory://ps1dask-test-{time.time_ns()}.zarr"
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2) as inproc:
        _cutouts(table, url, emu, inproc, types=("stack", "stack.wt"))
    before = _arrays(StoreLocation.of(url).zarr_store())
    images = {
        "stack_flux": before["stack_flux"][:UNIT][::-1],
        "stack_variance": before["stack_variance"][:UNIT],
    }
    meta = {name: before[name][:UNIT] for name in STACK_FILTER_VARIABLES}
    status = np.full_like(before["stack_status"][:UNIT], STATUS["ok"])
    reads.clear()
    write_unit_chunks(url, 0, UNIT, images, status, meta)
    metadata = [r for r in reads if r.rsplit("/", 1)[-1] in {"zarr.json", ".zarray", ".zattrs"}]
    root = url.removeprefix("memory://")
    assert metadata == [f"/{root}/zarr.json"], metadata
    after = _arrays(StoreLocation.of(url).zarr_store())
    np.testing.assert_array_equal(after["stack_flux"][:UNIT], images["stack_flux"])
    np.testing.assert_array_equal(after["stack_flux"][UNIT:], before["stack_flux"][UNIT:])
    for name in ("stack_variance", "stack_status", *STACK_FILTER_VARIABLES):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


@pytest.mark.timeout(240)
def test_killed_job_on_s3_resumes_and_refetches_nothing_stored(
    s3, emu, dask_client, tmp_path, monkeypatch
):
    """``ps1dask cutouts -o s3://...`` killed mid-job (its whole process group: client and
    local workers) and rerun equals an uninterrupted run; the rerun fetches only what was
    not stored. Credentials and endpoint come from the AWS_* environment variables."""
    table = positions_in_one_skycell(40, seed=34)
    csv = tmp_path / "positions.csv"
    table.to_csv(csv, index=False)
    url = _url("killed")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": s3,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    cmd = cutouts_cmd(
        csv,
        url,
        emu.url,
        "--unit-size",
        str(UNIT),
        "--workers",
        "1",
        "-q",
        filters=FILTERS,
        size=SIZE,
    )
    emu.configure(latency=0.15)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    # the group we started (client and its workers) is killed
    kill_when_stored(proc, url, 2 * UNIT, timeout=150, storage_options=_options(s3))
    stored = ok_positions(url, _options(s3))
    assert 0 < stored < len(table), "killed too late or too early"

    emu.configure(latency=0.0)
    emu.reset_metrics()
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    refetched = emu.metrics()["requests_by_endpoint"].get("/cgi-bin/fitscut.cgi", 0)
    # the killed process group left nothing running: exactly the missing cutouts are fetched
    assert refetched == len(FILTERS) * (len(table) - stored), (refetched, stored)

    reference = tmp_path / "reference.zarr"
    _cutouts(csv, reference, emu, dask_client)
    _assert_same(reference, StoreLocation.of(url, _options(s3)))


def _cli_error(*args: str) -> str:
    result = run_ps1dask(*args, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[-1]


def test_bad_urls_buckets_and_credentials_give_one_line_errors(s3, emu, tmp_path):
    csv = tmp_path / "p.csv"
    positions_in_one_skycell(2, seed=35).to_csv(csv, index=False)
    job = ["cutouts", str(csv), "--service", emu.url, "--filters", "g", "--size", "16", "-q"]
    opts = ["--storage-option", f"endpoint_url={s3}", "--storage-option", f"key={KEY}"]
    opts += ["--storage-option", f"secret={SECRET}"]

    missing = _cli_error(*job, "-o", "s3://no-such-bucket/x.zarr", *opts)
    assert "s3://no-such-bucket/x.zarr" in missing and "not found" in missing, missing

    unknown = _cli_error(*job, "-o", "nosuch://bucket/x.zarr")
    assert "nosuch://bucket/x.zarr" in unknown and "unknown protocol" in unknown, unknown

    no_bucket = _cli_error(*job, "-o", "s3://")
    assert "s3://" in no_bucket and "no bucket" in no_bucket, no_bucket

    local_opts = _cli_error(*job, "-o", str(tmp_path / "x.zarr"), "--storage-option", "anon=true")
    assert "storage_options" in local_opts and "x.zarr" in local_opts, local_opts

    reader = _cli_error("gallery", "s3://no-such-bucket/x.zarr", "-o", str(tmp_path / "g"), *opts)
    assert "s3://no-such-bucket/x.zarr" in reader, reader


@pytest.fixture()
def s3_checking_credentials():
    """A second moto server, in its own process, that checks credentials (moto reads
    INITIAL_NO_AUTH_ACTION_COUNT when it starts); stopped by its PID."""
    import requests
    from _jobs import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_refused_credentials_give_one_line_errors(s3_checking_credentials, emu, tmp_path):
    csv = tmp_path / "p.csv"
    positions_in_one_skycell(2, seed=36).to_csv(csv, index=False)
    url = "s3://ps1-out/denied.zarr"
    line = _cli_error(
        "cutouts",
        str(csv),
        "--service",
        emu.url,
        "-o",
        url,
        "--storage-option",
        f"endpoint_url={s3_checking_credentials}",
        "--storage-option",
        "key=nobody",
        "--storage-option",
        "secret=wrong",
        "-q",
    )
    assert url in line and "cutouts: error: cannot reach the store" in line, line
    with pytest.raises(OutputLocationError, match="s3://ps1-out/denied.zarr"):
        ps1dask.open_store(
            url,
            storage_options={"endpoint_url": s3_checking_credentials, "key": "no", "secret": "no"},
        )


def test_storage_option_parsing_errors_name_the_flag(tmp_path):
    assert parse_storage_options(
        ["anon=true", "endpoint_url=http://h:1", 'client_kwargs={"a": 1}']
    ) == {
        "anon": True,
        "endpoint_url": "http://h:1",
        "client_kwargs": {"a": 1},
    }
    with pytest.raises(InvalidParameterError, match="--storage-option 'anon': expected KEY=VALUE"):
        parse_storage_options(["anon"])
    with pytest.raises(InvalidParameterError, match="--storage-option 'key' given twice"):
        parse_storage_options(["key=a", "key=b"])
    csv = tmp_path / "p.csv"
    csv.write_text("ra,dec\n10,20\n")
    line = _cli_error("cutouts", str(csv), "-o", "s3://b/x.zarr", "--storage-option", "=x")
    assert "--storage-option '=x': expected KEY=VALUE" in line, line
    line = _cli_error("view", "s3://b/x.zarr", "--storage-option", "novalue")
    assert "--storage-option 'novalue'" in line, line


def test_location_normalisation():
    assert StoreLocation.of("file:///tmp/x.zarr") == StoreLocation.of("/tmp/x.zarr")
    assert StoreLocation.of("/tmp/x.zarr").is_local
    s3 = StoreLocation.of("S3://bucket/a/b.zarr/", {"anon": True})
    assert (s3.url, s3.protocol, s3.is_local) == ("s3://bucket/a/b.zarr", "s3", False)
    assert str(s3) == "s3://bucket/a/b.zarr"  # never the options (secrets)
    secret = StoreLocation.of("s3://bucket/x", {"key": "AKIA1", "secret": "hush"})
    assert "hush" not in repr(secret) and "AKIA1" not in repr(secret)
    assert repr(secret) == "StoreLocation('s3://bucket/x', storage_options=<key, secret>)"
    with pytest.raises(InvalidParameterError, match="gcsfs"):
        StoreLocation.of("gs://bucket/x.zarr")
    assert json.loads(json.dumps(dict(s3.storage_options))) == {"anon": True}
    with pytest.raises(OutputLocationError), StoreLocation.of("s3://bucket/x").errors("read"):
        raise PermissionError("denied")


def test_objects_written_by_another_process_are_seen(s3):
    """Workers write objects the client did not: no listing cache may hide them."""
    url = _url("seen")
    where = StoreLocation.of(url, _options(s3))
    client = boto3.client(
        "s3", endpoint_url=s3, aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client.put_object(Bucket=bucket, Key=f"{prefix}/notes.txt", Body=b"x")
    assert where.occupied() and not where.exists()  # lists the prefix
    client.put_object(Bucket=bucket, Key=f"{prefix}/zarr.json", Body=b"{}")
    assert where.exists() and where.has("zarr.json")
    assert zarr.storage.FsspecStore is type(where.zarr_store())
    memory = StoreLocation.of(f"memory://seen-{time.time_ns()}.zarr")
    assert not memory.exists() and not memory.occupied()
