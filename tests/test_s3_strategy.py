"""The ``s3`` strategy end to end: row tiles by byte ranges from an S3 copy of the emulator's
files. Every test runs against two S3 endpoints: moto's server on loopback (an independent S3
implementation), populated with the very bytes the emulator serves, and the emulator's own
S3 mode (same port as its service, keys hidden with ``s3_missing_fraction``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import dask.config
import numpy as np
import pandas as pd
import pytest
import zarr
from _cli import run_ps1dask
from _jobs import FAST_HTTP, assert_same_store, positions_in_one_skycell
from _moto import moto_s3
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tiles import Remote, small_file

import ps1dask
from ps1dask.client import PS1Service
from ps1dask.client.s3 import S3Source
from ps1dask.conventions import image_filename
from ps1dask.emulator.faults import s3_key_missing
from ps1dask.exceptions import S3SourceError
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import FetchContext, get_strategy, job_strategies
from ps1dask.fetch.strategies.tiled import cut_from_tiles, tile_byte_ranges
from ps1dask.fetch.tiles import CompressedImageIndex
from ps1dask.storage import STATUS
from ps1dask.tessellation import SkycellId, skycell_center

CELL = "1405.053"
SID = SkycellId.parse(CELL)
BUCKET = "stpubdata"
PREFIX = "panstarrs/ps1/public"
PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }
    ],
}


def key_rank(filename: str) -> float:
    """Where a file's key falls in the emulator's missing-key draw (its documented hash:
    keys ranked below ``s3_missing_fraction`` are missing)."""
    key = f"{PREFIX}/{filename.lstrip('/')}"
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def split_by_rank(filenames: list[str], n_missing: int) -> tuple[list[str], list[str]]:
    """(present, missing): the ``n_missing`` files of lowest rank go missing, so that one
    ``s3_missing_fraction`` of the emulator hides exactly those."""
    ranked = sorted(filenames, key=key_rank)
    return ranked[n_missing:], ranked[:n_missing]


class MotoBucket:
    """moto's S3 server on loopback with a public ``stpubdata`` bucket."""

    name = "moto"

    def __init__(self, endpoint: str, s3: Any, emulator_url: str, tmp: Path) -> None:
        self.endpoint = endpoint
        self.s3 = s3
        self.s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(PUBLIC_READ))
        self.service = PS1Service(emulator_url)
        self.tmp = tmp
        self.held: set[str] = set()

    def key(self, filename: str) -> str:
        return f"{PREFIX}/{filename.lstrip('/')}"

    def upload(self, filename: str) -> None:
        """Put a service file into the bucket: the emulator's bytes."""
        if filename in self.held:
            return
        local = self.service.download(filename, self.tmp / filename.rsplit("/", 1)[-1])
        self.s3.upload_file(str(local), BUCKET, self.key(filename))
        local.unlink()
        self.held.add(filename)

    def arrange(self, present: list[str], missing: list[str]) -> None:
        """The bucket holds ``present`` and not ``missing``."""
        for name in present:
            self.upload(name)
        for name in missing:
            self.s3.delete_object(Bucket=BUCKET, Key=self.key(name))
            self.held.discard(name)


class EmulatorBucket:
    """The emulator's S3 mode: every file is there unless ``s3_missing_fraction`` hides it."""

    name = "emulator"

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.endpoint = emulator.url

    def arrange(self, present: list[str], missing: list[str]) -> None:
        ranks = [key_rank(n) for n in missing]
        floor = min((key_rank(n) for n in present), default=1.0)
        assert max(ranks, default=0.0) < floor, "choose missing files with split_by_rank"
        fraction = (max(ranks) + floor) / 2 if missing else 0.0
        self.emulator.configure(s3_missing_fraction=fraction)
        for name in missing:  # the emulator's draw is the one this test module assumes
            assert s3_key_missing(f"{PREFIX}/{name.lstrip('/')}", fraction)
        for name in present:
            assert not s3_key_missing(f"{PREFIX}/{name.lstrip('/')}", fraction)


@pytest.fixture(scope="module")
def moto_bucket(job_emulator, tmp_path_factory) -> Iterator[MotoBucket]:
    with moto_s3(BUCKET, "test", "test") as (endpoint, s3):
        yield MotoBucket(endpoint, s3, job_emulator.url, tmp_path_factory.mktemp("s3-upload"))


@pytest.fixture(params=["moto", "emulator"])
def bucket(request, job_emulator):
    if request.param == "moto":
        yield request.getfixturevalue("moto_bucket")
    else:
        yield EmulatorBucket(job_emulator)
    job_emulator.configure(s3_missing_fraction=0.0)


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0, s3_missing_fraction=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _service(url: str) -> PS1Service:
    # short backoff, but time for the emulator to render a whole file on first use
    with dask.config.set({**FAST_HTTP, "ps1dask.http.read-timeout": 30}):
        return PS1Service(url)


def _job(kind, table, store, emu, client, **kw):
    run = ps1dask.cutouts if kind == "stack" else ps1dask.warps
    return run(table, store, service=_service(emu.url), client=client, progress=False, **kw)


def _assert_equals_range_job(store, table, emu, client, tmp_path):
    """``store`` (g, 40 px) equals the same stack job through the service's byte ranges."""
    reference = tmp_path / "range.zarr"
    _job("stack", table, reference, emu, client, filters="g", size=40, strategy="range")
    assert_same_store(store, reference)


G_STACK = image_filename(SID, "g", "stack")


def test_s3_range_skycell_cutout_give_identical_stacks(bucket, emu, dask_client, tmp_path):
    bucket.arrange([G_STACK], [])
    table = positions_in_one_skycell(6, seed=3)
    n = len(table)
    stores = {}
    for strategy in ("s3", "range", "skycell", "cutout"):
        emu.reset_metrics()
        stores[strategy] = tmp_path / f"{strategy}.zarr"
        summary = _job(
            "stack",
            table,
            stores[strategy],
            emu,
            dask_client,
            filters="g",
            size=48,
            strategy=strategy,
            s3_endpoint=bucket.endpoint,
            cache_dir=tmp_path / "cache",
        )
        assert summary.statuses == {"ok": n}, (strategy, summary)
        assert summary.strategies == {strategy: n}
        metrics = emu.metrics()
        assert metrics["max_in_flight"] <= 10
        if strategy == "s3":
            # every pixel came from the bucket: the service saw no request at all
            assert metrics["requests_total"] == 0, metrics
            kinds = summary.requests["by_kind"]
            assert set(kinds) == {"s3-range"} and kinds["s3-range"] >= 2, kinds
            if bucket.name == "emulator":
                assert metrics["s3"]["range_requests"] == kinds["s3-range"], metrics["s3"]
        else:
            assert metrics["requests_total"] > 0
            assert metrics["s3"]["requests"] == 0
    for strategy in ("range", "skycell", "cutout"):
        assert_same_store(stores["s3"], stores[strategy])
    flux = np.asarray(zarr.open_array(str(stores["s3"]), path="stack_flux", mode="r")[:])
    assert np.isfinite(flux).mean() > 0.9  # real pixels, not an empty store that matches


def test_a_key_missing_from_the_bucket_is_no_data_or_read_from_the_service(
    bucket, emu, dask_client, tmp_path
):
    stacks = {b: image_filename(SID, b, "stack") for b in "gr"}
    present, missing = split_by_rank(list(stacks.values()), 1)
    bucket.arrange(present, missing)
    emu.reset_metrics()  # (moto: filled from the service)
    lost = "gr".index(next(b for b, name in stacks.items() if name in missing))
    table = positions_in_one_skycell(4, seed=5)
    n = len(table)
    common = {"filters": "gr", "size": 32, "s3_endpoint": bucket.endpoint}
    plain = _job("stack", table, tmp_path / "plain.zarr", emu, dask_client, strategy="s3", **common)
    assert plain.statuses == {"ok": n, "no_data": n}, plain
    path = str(tmp_path / "plain.zarr")
    status = np.asarray(zarr.open_array(path, path="stack_status", mode="r")[:])
    assert (status[:, lost] == STATUS["no_data"]).all() and (status[:, 1 - lost] == 1).all()
    assert emu.metrics()["requests_total"] == 0  # no_data: the service was not asked

    emu.reset_metrics()
    with dask.config.set({"ps1dask.s3.fallback-to-service": True}):
        mixed = _job(
            "stack", table, tmp_path / "mixed.zarr", emu, dask_client, strategy="s3", **common
        )
    assert mixed.statuses == {"ok": 2 * n}, mixed
    metrics = emu.metrics()
    assert metrics["range_requests"] > 0 and metrics["max_in_flight"] <= 10
    assert "s3-range" in mixed.requests["by_kind"] and "range" in mixed.requests["by_kind"]
    _job("stack", table, tmp_path / "range.zarr", emu, dask_client, strategy="range", **common)
    assert_same_store(tmp_path / "mixed.zarr", tmp_path / "range.zarr")


class FaultyProxy:
    """A loopback proxy in front of an S3 endpoint: every ``every``-th ranged GET gets a 503
    SlowDown and the one after it a connection reset (when ``every`` > 0), and GETs of keys
    containing a ``broken`` text get 500 InternalError until ``broken`` is emptied."""

    def __init__(self, target: str, every: int = 0) -> None:
        self.target = target
        self.every = every
        self.broken: set[str] = set()
        self.count = 0
        self.faults = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self.ready.set()
        self.loop.run_forever()

    def _error(self, status: int, code: str) -> web.Response:
        self.faults += 1
        return web.Response(
            status=status,
            text=f"<Error><Code>{code}</Code><Message>injected</Message></Error>",
            content_type="application/xml",
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "GET" and "Range" in request.headers:
            if any(text in request.path for text in self.broken):
                return self._error(500, "InternalError")
            self.count += 1
            if self.every and self.count % self.every == 0:
                return self._error(503, "SlowDown")
            if self.every and self.count % self.every == 1 and self.count > 1:
                self.faults += 1
                request.transport.abort()  # type: ignore[union-attr]
                raise ConnectionResetError
        headers = {k: v for k, v in request.headers.items() if k.lower() == "range"}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.request(
                request.method, self.target + request.path_qs, headers=headers
            ) as answer,
        ):
            body = await answer.read()
            keep = ("Content-Range", "Content-Type", "ETag", "Last-Modified")
            return web.Response(
                status=answer.status,
                body=body,
                headers={k: answer.headers[k] for k in keep if k in answer.headers},
            )

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_warps_mix_s3_and_service_and_resume(bucket, emu, dask_client, tmp_path):
    table = positions_in_one_skycell(3, seed=8)
    epochs = emu.sky.warp_epochs(SID, "g")[:4]
    window = (epochs[0].mjd_listed - 1e-6, epochs[-1].mjd_listed + 1e-6)
    names = [image_filename(SID, "g", "warp", e.mjd_listed) for e in epochs]
    present, missing = split_by_rank(names, 2)
    bucket.arrange(present, missing)
    common = {"filters": "g", "size": 32, "mjd_range": window}
    store = tmp_path / "s3.zarr"
    proxy = FaultyProxy(bucket.endpoint)
    proxy.broken.add(present[0].rsplit("/", 1)[-1])  # fails until repaired
    try:
        with dask.config.set({"ps1dask.http.attempts": 2}):
            first = _job(
                "warp",
                table,
                store,
                emu,
                dask_client,
                strategy="s3",
                s3_endpoint=proxy.url,
                **common,
            )
        n = len(table)
        # one file fails in the bucket (a rerun retries it); the missing two come from the
        # service, within its limit
        assert first.statuses.get("failed") == n, first
        assert emu.metrics()["max_in_flight"] <= 10
        kinds = first.requests["by_kind"]
        assert kinds.get("s3-range", 0) > 0 and kinds.get("range", 0) > 0, kinds

        proxy.broken.clear()  # repaired
        emu.reset_metrics()
        second = _job(
            "warp", table, store, emu, dask_client, strategy="s3", s3_endpoint=proxy.url, **common
        )
    finally:
        proxy.stop()
    assert "failed" not in second.statuses and second.units_run > 0, second
    assert emu.metrics()["max_in_flight"] <= 10

    reference = tmp_path / "range.zarr"
    _job("warp", table, reference, emu, dask_client, strategy="range", **common)
    assert_same_store(store, reference)

    emu.reset_metrics()
    third = _job(
        "warp", table, store, emu, dask_client, strategy="s3", s3_endpoint=bucket.endpoint, **common
    )
    assert third.units_run == 0
    assert third.requests["by_kind"].get("s3-range", 0) == 0  # no S3 GET of image data
    assert emu.metrics()["s3"]["range_requests"] == 0
    assert_same_store(store, reference)


def test_s3_reads_are_retried_on_slowdown_and_resets(bucket, emu, dask_client, tmp_path):
    bucket.arrange([G_STACK], [])
    table = positions_in_one_skycell(5, seed=11)
    proxy = FaultyProxy(bucket.endpoint, every=3)
    try:
        # short backoff; the read timeout of _service (a loaded box must not time out reads)
        with dask.config.set(
            {**FAST_HTTP, "ps1dask.http.read-timeout": 30, "ps1dask.http.attempts": 6}
        ):
            summary = _job(
                "stack",
                table,
                tmp_path / "faulty.zarr",
                emu,
                dask_client,
                filters="g",
                size=40,
                strategy="s3",
                s3_endpoint=proxy.url,
            )
    finally:
        proxy.stop()
    assert summary.statuses == {"ok": len(table)}, summary
    assert proxy.faults > 0
    assert summary.requests["retries"] >= 1, summary.requests
    retried = summary.requests["retried_errors"]
    assert set(retried) <= {"ServiceUnavailableError", "ServiceConnectionError"}, retried
    _assert_equals_range_job(tmp_path / "faulty.zarr", table, emu, dask_client, tmp_path)


def test_the_emulators_own_s3_faults_are_retried(emu, dask_client, tmp_path):
    # about one request per cutout (gapless reads), each faulted with probability 1/2 by the
    # seeded generator: never none of them
    table = positions_in_one_skycell(12, seed=13)
    emu.configure(fault_rate=0.5, fault_kinds="503,reset,truncate", s3_missing_fraction=0.0, seed=1)
    patient = {**FAST_HTTP, "ps1dask.http.read-timeout": 30, "ps1dask.http.attempts": 14}
    try:
        with dask.config.set(patient):  # 14 faults in a row: 1 in 16,000
            summary = _job(
                "stack",
                table,
                tmp_path / "faulty.zarr",
                emu,
                dask_client,
                filters="g",
                size=40,
                strategy="s3",
                s3_endpoint=emu.url,
            )
        faults = emu.metrics()["s3"]
    finally:
        emu.configure(fault_rate=0.0)
    assert summary.statuses == {"ok": len(table)}, summary
    assert faults["faults_injected"] > 0, faults
    # every fault was retried: by the job, or (at most 2) by the probe as the job started
    assert summary.requests["retries"] >= faults["faults_injected"] - 2, summary.requests
    _assert_equals_range_job(tmp_path / "faulty.zarr", table, emu, dask_client, tmp_path)


def test_an_unreachable_or_wrong_s3_source_is_a_clear_error(bucket, emu, dask_client, tmp_path):
    table = positions_in_one_skycell(2, seed=1)
    with pytest.raises(S3SourceError, match="does not answer.*--s3-endpoint"):
        _job(
            "stack",
            table,
            tmp_path / "a.zarr",
            emu,
            dask_client,
            filters="g",
            strategy="s3",
            s3_endpoint="http://127.0.0.1:9",
        )
    with (
        dask.config.set({"ps1dask.s3.url": "s3://no-such-bucket/x"}),
        pytest.raises(S3SourceError, match="no such bucket"),
    ):
        _job(
            "stack",
            table,
            tmp_path / "b.zarr",
            emu,
            dask_client,
            filters="g",
            strategy="s3",
            s3_endpoint=bucket.endpoint,
        )
    with pytest.raises(S3SourceError, match="not an http"):
        S3Source.from_config(endpoint="ftp://example.org")
    # auto with an unreachable endpoint leaves s3 out rather than failing the job
    with dask.config.set({"ps1dask.s3.endpoint-url": "http://127.0.0.1:9"}):
        assert "s3" not in job_strategies("auto")


def test_auto_takes_s3_only_when_configured(bucket, emu, dask_client, tmp_path):
    bucket.arrange([G_STACK], [])
    # the real default: no endpoint, no opt-in -> auto never contacts AWS
    assert "s3" not in job_strategies("auto")
    assert get_strategy("s3").source is None
    with dask.config.set({"ps1dask.s3.endpoint-url": bucket.endpoint}):
        configured = job_strategies("auto")["s3"]
    assert configured.source is not None and configured.source.endpoint == bucket.endpoint

    emu.configure(latency=0.05)  # a distant service: the bucket's reads are cheaper
    table = positions_in_one_skycell(6, seed=4)
    summary = _job(
        "stack",
        table,
        tmp_path / "auto.zarr",
        emu,
        dask_client,
        filters="g",
        size=40,
        strategy="auto",
        s3_endpoint=bucket.endpoint,
    )
    assert summary.statuses == {"ok": len(table)}, summary
    assert summary.strategies.get("s3", 0) > 0, summary.strategies
    assert emu.metrics()["max_in_flight"] <= 10


def test_the_command_line_reads_s3_with_and_without_fallback(emu, dask_client, tmp_path):
    stacks = [image_filename(SID, b, "stack") for b in "gr"]
    present, missing = split_by_rank(stacks, 1)
    EmulatorBucket(emu).arrange(present, missing)
    csv = tmp_path / "positions.csv"
    positions_in_one_skycell(3, seed=9).to_csv(csv, index=False)
    base = [str(csv), "--filters", "gr", "--size", "24", "--strategy", "s3", "--quiet"]
    base += ["--service", emu.url, "--s3-endpoint", emu.url]
    base += ["--scheduler", dask_client.scheduler.address]
    try:
        plain = run_ps1dask("cutouts", *base, "-o", str(tmp_path / "plain.zarr"))
        emu.reset_metrics()
        fallback = run_ps1dask(
            "cutouts", *base, "--s3-fallback", "-o", str(tmp_path / "fallback.zarr")
        )
        service_requests = emu.metrics()["range_requests"]
    finally:
        emu.configure(s3_missing_fraction=0.0)
    assert plain.returncode == 0, plain.stderr
    assert "status       no_data 3, ok 3" in plain.stdout, plain.stdout
    assert fallback.returncode == 0, fallback.stderr
    assert "status       ok 6" in fallback.stdout, fallback.stdout
    status = zarr.open_array(str(tmp_path / "fallback.zarr"), path="stack_status", mode="r")
    assert (np.asarray(status[:]) == STATUS["ok"]).all()
    assert service_requests > 0  # the missing file came from the service
    bad = run_ps1dask(
        "cutouts", *base[:-2], "--s3-endpoint", "http://127.0.0.1:9", "-o", str(tmp_path / "x")
    )
    assert bad.returncode != 0
    assert "does not answer" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


# --- pure: the gaps the s3 strategy reads with change requests, never pixels ---------------


@settings(max_examples=15, deadline=None)
@given(
    y0=st.lists(st.integers(-30, 290), min_size=1, max_size=6),
    x0=st.integers(-20, 6200),
    height=st.integers(1, 60),
    gap_rows=st.one_of(st.none(), st.integers(0, 100)),
    gap_bytes=st.sampled_from([0, 1, 20_000, 262_144]),
)
def test_read_gaps_change_the_requests_not_the_pixels(y0, x0, height, gap_rows, gap_bytes):
    blob, _ = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    n = len(y0)
    group = ImageGroup(
        "/x.fits",
        np.arange(n, dtype=np.int64),
        np.zeros(n),
        np.zeros(n),
        np.full(n, x0, dtype=np.int64),
        np.asarray(y0, dtype=np.int64),
    )

    def cutouts(**gaps):
        got = {}
        remote = Remote(blob)
        context = FetchContext(
            width=40,
            height=height,
            service=None,  # type: ignore[arg-type]  (not used: the bytes are in memory)
            cache=None,
            profile=None,  # type: ignore[arg-type]
            on_cutout=lambda m, pixels, header: got.__setitem__(m, pixels),
            on_failure=lambda members, err: pytest.fail(str(err)),
        )
        cut_from_tiles(group, index, remote, context, **gaps)
        assert remote.calls == tile_byte_ranges(group, index, height, **gaps)
        return got, remote

    reference, wide = cutouts()
    narrow, remote = cutouts(gap_rows=gap_rows, gap_bytes=gap_bytes)
    assert sorted(narrow) == list(range(n))
    for m in range(n):
        np.testing.assert_array_equal(narrow[m], reference[m])
    if gap_rows == 0 and gap_bytes <= 1:
        assert remote.nbytes <= wide.nbytes  # never more bytes than the service's gaps


def test_a_mosaic_through_s3_equals_the_range_mosaic(emu, dask_client, tmp_path):
    """Mosaics take their pixels through the strategies, s3 included (emulator S3 mode)."""
    a, b = skycell_center("1405.053"), skycell_center("1405.054")
    table = pd.DataFrame({"ra": [0.5 * (a[0] + b[0])], "dec": [0.5 * (a[1] + b[1])]})
    stores = {}
    for strategy in ("s3", "range"):
        emu.reset_metrics()
        stores[strategy] = tmp_path / f"{strategy}.zarr"
        summary = _job(
            "stack",
            table,
            stores[strategy],
            emu,
            dask_client,
            filters="g",
            size=(200, 900),
            strategy=strategy,
            s3_endpoint=emu.url,
            mosaic=True,
        )
        assert summary.statuses == {"ok": 1}, (strategy, summary)
        metrics = emu.metrics()
        assert metrics["max_in_flight"] <= 10
        if strategy == "s3":
            assert metrics["requests_total"] == 0, metrics  # no service request at all
            # rows of two files at least (their tile indexes may be known to this process)
            kinds = summary.requests["by_kind"]
            assert set(kinds) == {"s3-range"}, kinds
            assert metrics["s3"]["range_requests"] == kinds["s3-range"] >= 2, metrics["s3"]
    assert_same_store(stores["s3"], stores["range"])
    ds = ps1dask.open_store(stores["s3"])
    assert set(np.unique(ds.mosaic_skycell.values).tolist()) == {1405053, 1405054}
    assert np.isfinite(ds.stack_flux.values).all()
