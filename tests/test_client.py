"""The service client against the in-process emulator (real loopback HTTP, no mocks)."""

from __future__ import annotations

import gc
import io
import logging
import math
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import dask.config
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from PIL import Image

from ps1dask.client import (
    LISTING_COLUMNS,
    PS1Service,
    RequestStats,
    RetryPolicy,
    assign_positions,
    format_listing,
    parse_listing,
    parse_retry_after,
    retry_call,
)
from ps1dask.exceptions import (
    BadRequestError,
    BadResponseError,
    InvalidParameterError,
    InvalidPositionError,
    InvalidSkycellError,
    NotFoundError,
    ServiceHTTPError,
    ServiceUnavailableError,
)
from ps1dask.tessellation import skycell_center

CRAB = (83.63321, 22.01446)  # skycell 1784.059
NGC7222 = (332.6, 2.2)  # skycell 1405.053
SOUTH = (10.0, -60.0)  # outside the PS1 3pi footprint

# Retries fast enough for tests; attempts high enough that a 30% fault rate never exhausts.
FAST = {
    "ps1dask.http.attempts": 8,
    "ps1dask.http.backoff-initial": 0.02,
    "ps1dask.http.backoff-max": 0.1,
    "ps1dask.http.retry-after-max": 2,
    "ps1dask.http.connect-timeout": 5,
    "ps1dask.http.read-timeout": 10,
}
CLEAN_KNOBS = {
    "latency": 0.0,
    "bandwidth": None,
    "fault_rate": 0.0,
    "fault_kinds": "503,429,reset,truncate,stall",
    "retry_after": 0.05,
    "stall_seconds": 30.0,
    "seed": 0,
    "max_concurrency": 10,
}


@pytest.fixture(scope="module")
def emulator():
    from ps1dask.emulator import Emulator

    with Emulator(seed=0) as emu:
        yield emu


@pytest.fixture
def emu(emulator):
    emulator.configure(**CLEAN_KNOBS)
    emulator.reset_metrics()
    yield emulator
    emulator.configure(**CLEAN_KNOBS)


@pytest.fixture
def service(emu):
    with dask.config.set(FAST):
        svc = PS1Service(emu.url)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def crab_files(emulator):
    with dask.config.set(FAST), PS1Service(emulator.url) as svc:
        listing = svc.list_images(*CRAB, filters="gr")
    return dict(zip(listing["filter"], listing["filename"]))


# --------------------------------------------------------------------------- listings


def test_list_images_at_a_position(service, emu):
    frame = service.list_images(*CRAB)
    assert list(frame.columns) == list(LISTING_COLUMNS)
    assert sorted(frame["filter"]) == sorted("grizy")
    assert set(frame["projcell"]) == {1784} and set(frame["subcell"]) == {59}
    assert frame["projcell"].dtype == np.int64 and frame["subcell"].dtype == np.int64
    assert (frame["ra"] == CRAB[0]).all() and (frame["dec"] == CRAB[1]).all()
    assert (frame["type"] == "stack").all() and (frame["mjd"] == 0.0).all()
    assert frame["shortname"].iloc[0] == "rings.v3.skycell.1784.059.stk.g.unconv.fits"
    assert frame["filename"].iloc[0] == (
        "/rings.v3.skycell/1784/059/rings.v3.skycell.1784.059.stk.g.unconv.fits"
    )
    assert service.stats.snapshot()["by_kind"] == {"list": 1}
    assert emu.metrics()["requests_total"] == 1


def test_list_images_of_a_skycell(service):
    frame = service.list_images(skycell="skycell.1405.053", filters="ig", types="stack,stack.wt")
    assert len(frame) == 4
    assert set(frame["type"]) == {"stack", "stack.wt"}
    assert set(frame["filter"]) == {"g", "i"}
    ra, dec = skycell_center("1405.053")
    assert np.allclose(frame["ra"], ra, rtol=0, atol=1e-9)
    assert np.allclose(frame["dec"], dec, rtol=0, atol=1e-9)
    same = service.list_images(skycell=(1405, 53), filters="ig", types=("stack", "stack.wt"))
    pd.testing.assert_frame_equal(frame, same)


def test_list_warps_have_epochs(service, emu):
    """The listing's warps are the emulator's true epochs of the skycell, each once."""
    frame = service.list_images(*NGC7222, filters="g", types="warp")
    truth = [e.mjd_listed for e in emu.sky.warp_epochs("1405.053", "g")]
    assert len(truth) >= 10  # a skycell with a real history, not a trivial case
    assert (frame["type"] == "warp").all() and (frame["filter"] == "g").all()
    assert (frame["projcell"] == 1405).all() and (frame["subcell"] == 53).all()
    np.testing.assert_array_equal(np.sort(frame["mjd"].to_numpy()), np.sort(truth))


def test_list_images_outside_footprint_is_empty(service):
    frame = service.list_images(*SOUTH)
    assert frame.empty
    assert list(frame.columns) == list(LISTING_COLUMNS)
    assert frame["projcell"].dtype == np.int64 and frame["ra"].dtype == np.float64


def test_bad_skycell_is_a_bad_request_not_retried(service, emu):
    with pytest.raises(BadRequestError) as info:
        service.list_images(skycell="1405.100")
    assert info.value.status == 400
    assert "1405.100" in str(info.value)
    assert emu.metrics()["requests_total"] == 1
    assert service.stats.retries == 0 and service.stats.failures == 1


def test_bad_arguments_are_refused_locally(service, emu):
    with pytest.raises(InvalidSkycellError):
        service.list_images(skycell="nonsense")
    with pytest.raises(InvalidParameterError):
        service.list_images(1.0, 2.0, skycell="1405.053")
    with pytest.raises(InvalidParameterError):
        service.list_images(*CRAB, filters="gq")
    with pytest.raises(InvalidPositionError):
        service.list_images(float("nan"), 2.0)
    with pytest.raises(InvalidPositionError) as info:
        service.list_images_many([1.0, 2.0, 3.0], [0.0, 95.0, float("inf")])
    assert info.value.rows == [1, 2]
    assert emu.metrics()["requests_total"] == 0


def test_list_images_many_maps_rows_to_positions(service, emu):
    ra = [CRAB[0], SOUTH[0], NGC7222[0], NGC7222[0], CRAB[0], 150.0]
    dec = [CRAB[1], SOUTH[1], NGC7222[1], NGC7222[1], CRAB[1], 2.2]
    frame = service.list_images_many(ra, dec, filters="gz", batch_size=4)
    assert list(frame.columns) == [*LISTING_COLUMNS, "position"]
    assert frame["position"].dtype == np.int64
    # Two POSTs of at most 4 positions, nothing else.
    metrics = emu.metrics()
    assert metrics["requests_total"] == 2
    assert service.stats.snapshot()["by_kind"] == {"list-many": 2}
    assert sorted(set(frame["position"])) == [0, 2, 3, 4, 5]  # 1 is outside the footprint
    for position, group in frame.groupby("position"):
        single = service.list_images(ra[position], dec[position], filters="gz")
        pd.testing.assert_frame_equal(group.drop(columns="position").reset_index(drop=True), single)


def test_list_images_many_empty_input(service, emu):
    frame = service.list_images_many([], [])
    assert frame.empty and "position" in frame.columns
    assert emu.metrics()["requests_total"] == 0


# --------------------------------------------------------------------------- cutouts


def test_cutout_fits_is_linear_float32_with_repaired_header(service, crab_files):
    hdu = service.cutout_fits(crab_files["g"], *CRAB)
    assert isinstance(hdu, fits.PrimaryHDU)
    assert hdu.data.dtype == np.float32 and hdu.data.shape == (240, 240)
    header = hdu.header
    for key in ("CD1_1", "CD2_2", "RADESYS"):
        assert key in header
    assert "PC001001" not in header and "BSOFTEN" not in header and "BZERO" not in header
    assert math.isclose(header["CD1_1"], -0.25 / 3600, rel_tol=1e-6)
    # The position is at the cutout centre, to a pixel.
    x, y = WCS(header).all_world2pix([[CRAB[0], CRAB[1]]], 0)[0]
    assert abs(x - 119.5) <= 1 and abs(y - 119.5) <= 1
    assert np.isfinite(hdu.data).mean() > 0.5
    # What the service sent, untouched: obsolete PC keywords, same linear pixels.
    raw = service.cutout_fits(crab_files["g"], *CRAB, raw=True)
    assert "PC001001" in raw.header and "CD1_1" not in raw.header
    np.testing.assert_array_equal(raw.data.astype(np.float32), hdu.data)
    # The repaired HDU writes and reads back as the same float32 image.
    buf = io.BytesIO()
    hdu.writeto(buf)
    back = fits.getdata(io.BytesIO(buf.getvalue()))
    np.testing.assert_array_equal(back, hdu.data)


def test_cutout_pixels_are_the_cutout_fits_image_and_header(service, crab_files):
    """What jobs fetch (pixels and header, no HDU) is cutout_fits's data and header."""
    hdu = service.cutout_fits(crab_files["g"], *CRAB, size=(100, 60))
    pixels, header = service.cutout_pixels(crab_files["g"], *CRAB, size=(100, 60))
    assert pixels.dtype == np.float32 and pixels.shape == (60, 100)
    np.testing.assert_array_equal(pixels, hdu.data)
    structural = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"}
    kept = [c for c in hdu.header.cards if c.keyword not in structural]
    assert [(c.keyword, c.value) for c in header.cards if c.keyword not in structural] == [
        (c.keyword, c.value) for c in kept
    ]
    assert "CD1_1" in header and "BZERO" not in header and "BSOFTEN" not in header


@pytest.mark.parametrize(
    ("size", "shape"), [(64, (64, 64)), ((100, 60), (60, 100)), ("30,50", (50, 30))]
)
def test_cutout_fits_size(service, crab_files, size, shape):
    assert service.cutout_fits(crab_files["r"], *CRAB, size=size).data.shape == shape


def test_cutout_of_unknown_file_is_not_found_and_not_retried(service, emu):
    name = "/rings.v3.skycell/1784/059/rings.v3.skycell.1784.059.stk.q.unconv.fits"
    with pytest.raises(NotFoundError) as info:
        service.cutout_fits(name, *CRAB)
    assert info.value.status == 404
    assert emu.metrics()["requests_total"] == 1


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_cutout_image_decodes(service, crab_files, fmt):
    body = service.cutout_image(crab_files["g"], *CRAB, size=120, format=fmt)
    image = Image.open(io.BytesIO(body))
    assert image.format == {"jpg": "JPEG", "png": "PNG"}[fmt]
    assert image.size == (120, 120)
    big = service.cutout_image(
        crab_files["g"],
        *CRAB,
        size=120,
        format=fmt,
        output_size=200,
        autoscale=99.0,
        asinh=False,
        invert=True,
    )
    assert Image.open(io.BytesIO(big)).size == (200, 200)


def test_cutout_image_colour(service, crab_files):
    body = service.cutout_image(
        crab_files["r"], *CRAB, size=80, green=crab_files["g"], blue=crab_files["g"]
    )
    image = Image.open(io.BytesIO(body))
    assert image.mode == "RGB" and image.size == (80, 80)
    with pytest.raises(InvalidParameterError):
        service.cutout_image(crab_files["r"], *CRAB, format="fits")


# --------------------------------------------------------------------------- files and ranges


def test_download_head_and_ranges(service, crab_files, tmp_path, emu):
    name = crab_files["g"]
    # The emulator renders a file whole on its first GET (about 4 s of CPU; 20 s measured on
    # a loaded 2-core machine, past FAST's 10 s read timeout, so the client under test timed
    # out and sent its request again). Rendered first by a client that waits as long as it
    # takes, so that the counts below are those of the calls of this test, retry-free.
    with dask.config.set({**FAST, "ps1dask.http.read-timeout": 300}), PS1Service(emu.url) as first:
        first.read_range(name, 0, 1)
    emu.reset_metrics()
    size = service.file_size(name)
    path = service.download(name, tmp_path)
    assert path == tmp_path / name.rsplit("/", 1)[-1]
    data = path.read_bytes()
    assert len(data) == size > 2880
    assert data.startswith(b"SIMPLE  =")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    with fits.open(path) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU) and hdul[1].header["NAXIS1"] > 6000
    for start, stop in [(0, 2880), (1000, 5000), (size - 100, size), (size - 10, size + 1000)]:
        assert service.read_range(name, start, stop) == data[start:stop]
    assert service.read_range(name, 5, 5) == b""
    with pytest.raises(ServiceHTTPError) as info:
        service.read_range(name, size + 10, size + 20)
    assert info.value.status == 416
    # An explicit destination file name.
    other = service.download(name, tmp_path / "sub" / "copy.fits")
    assert other.read_bytes() == data
    metrics = emu.metrics()
    assert metrics["range_requests"] == 5
    assert service.stats.snapshot()["by_kind"] == {"head": 1, "download": 2, "range": 5}
    assert service.stats.bytes >= 2 * size


def test_download_of_unknown_file_leaves_nothing(service, tmp_path):
    name = "/rings.v3.skycell/1784/059/rings.v3.skycell.1784.059.stk.g.unconv.nope.fits"
    with pytest.raises(NotFoundError):
        service.download(name, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidParameterError):
        service.read_range(name, 10, 5)


# --------------------------------------------------------------------------- faults and retries


def _workload(service, files, n=12):
    for i in range(n):
        hdu = service.cutout_fits(files["g" if i % 2 else "r"], *CRAB, size=32 + i)
        assert hdu.data.shape == (32 + i, 32 + i)


@pytest.mark.parametrize("kind", ["503", "429", "reset", "truncate"])
def test_each_fault_kind_is_retried(service, emu, crab_files, kind):
    emu.configure(fault_rate=0.3, fault_kinds=kind, seed=3)
    _workload(service, crab_files)
    frame = service.list_images_many([CRAB[0], NGC7222[0]], [CRAB[1], NGC7222[1]], filters="g")
    assert list(frame["position"]) == [0, 1]
    metrics = emu.metrics()
    assert metrics["faults_by_kind"].get(kind, 0) > 0
    stats = service.stats.snapshot()
    assert stats["retries"] == metrics["faults_injected"] > 0
    assert stats["failures"] == 0
    assert stats["requests"] == metrics["requests_total"]


def test_stalls_time_out_and_are_retried(emu, crab_files):
    # a read timeout far above an answer's time even under load, far below the stall
    emu.configure(fault_rate=0.3, fault_kinds="stall", stall_seconds=5.0, seed=5)
    with dask.config.set({**FAST, "ps1dask.http.read-timeout": 1.0}):
        svc = PS1Service(emu.url)
    with svc:
        _workload(svc, crab_files, n=8)
    stats = svc.stats.snapshot()
    stalls = emu.metrics()["faults_by_kind"].get("stall", 0)
    assert stalls > 0
    # Each stall cost exactly one read timeout and one retry (a client waiting the stall out
    # would have had its answer without a retry), and nothing else timed out.
    assert stats["retries"] == stats["retried_errors"].get("ServiceTimeoutError", 0) == stalls
    assert stats["failures"] == 0 and stats["requests"] == 8 + stalls


def test_mixed_faults_everything_succeeds(service, emu, crab_files, tmp_path):
    emu.configure(fault_rate=0.3, fault_kinds="503,429,reset,truncate", seed=11)
    name = crab_files["g"]
    data = service.download(name, tmp_path).read_bytes()
    assert service.file_size(name) == len(data)
    for start in (0, 7000, 20000):
        assert service.read_range(name, start, start + 3000) == data[start : start + 3000]
    _workload(service, crab_files, n=6)
    assert service.list_images(*CRAB, filters="g")["filter"].tolist() == ["g"]
    assert service.stats.retries > 0 and service.stats.failures == 0


def test_persistent_503_gives_up_after_the_configured_attempts(emu, crab_files):
    emu.configure(fault_rate=1.0, fault_kinds="503", retry_after=0.1)
    settings = {
        **FAST,
        "ps1dask.http.attempts": 4,
        "ps1dask.http.backoff-initial": 0.1,
        "ps1dask.http.backoff-max": 0.2,
    }
    with dask.config.set(settings):
        svc = PS1Service(emu.url)
    policy = svc.settings.retry
    # The retry log line is written just before each sleep: no slot may be held then.
    slots_while_sleeping = []

    class SlotProbe(logging.Handler):
        def emit(self, record):
            if record.getMessage().startswith("retrying"):
                slots_while_sleeping.append(svc.throttle.in_use)

    probe = SlotProbe(level=logging.INFO)
    logger = logging.getLogger("ps1dask.client")
    old_level = logger.level
    logger.addHandler(probe)
    logger.setLevel(logging.INFO)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailableError) as info:
            svc.cutout_fits(crab_files["g"], *CRAB)
    finally:
        elapsed = time.monotonic() - started
        logger.removeHandler(probe)
        logger.setLevel(old_level)
    assert slots_while_sleeping == [0, 0, 0]
    assert info.value.status == 503
    assert emu.metrics()["requests_total"] == 4  # exactly the attempts, no hot loop
    # Every sleep honoured Retry-After (0.1 s) and the backoff floor, and stayed within
    # backoff-max (the sleeps chosen, as counted; the clock shows they were slept).
    stats = svc.stats.snapshot()
    assert 3 * max(0.1, policy.min_backoff) <= stats["backoff_seconds"] <= 3 * 0.2
    assert elapsed >= stats["backoff_seconds"]
    assert stats["retries"] == 3 and stats["failures"] == 1 and stats["by_status"] == {"503": 4}
    assert any("gave up after 4 attempt" in note for note in info.value.__notes__)


def test_retry_after_beyond_the_maximum_gives_up_at_once(emu, crab_files):
    emu.configure(fault_rate=1.0, fault_kinds="429", retry_after=30)
    with dask.config.set({**FAST, "ps1dask.http.retry-after-max": 1}):
        svc = PS1Service(emu.url)
    with pytest.raises(ServiceUnavailableError) as info:
        svc.list_images(*CRAB)
    assert info.value.status == 429 and info.value.retry_after == 30
    assert emu.metrics()["requests_total"] == 1
    stats = svc.stats.snapshot()  # given up at once: no retry, no sleep
    assert stats["retries"] == 0 and stats["backoff_seconds"] == 0 and stats["failures"] == 1


# --------------------------------------------------------------------------- the limit


def test_thirty_threads_never_exceed_ten_requests_in_flight(emu, crab_files):
    emu.configure(latency=0.1)
    with dask.config.set({**FAST, "ps1dask.http.max-concurrency": 10}):
        svc = PS1Service(emu.url)
    assert svc.throttle.kind == "local" and svc.throttle.max_concurrency == 10
    svc.throttle.reset_peak()
    barrier = threading.Barrier(30)

    def hammer(i):
        barrier.wait()
        for j in range(3):
            hdu = svc.cutout_fits(crab_files["g" if (i + j) % 2 else "r"], *CRAB, size=48)
            assert hdu.data.shape == (48, 48)
        return i

    with svc, ThreadPoolExecutor(30) as pool:
        assert sorted(pool.map(hammer, range(30))) == list(range(30))
    metrics = emu.metrics()
    assert metrics["requests_total"] == 90
    assert 8 <= metrics["max_in_flight"] <= 10
    assert metrics["refused_over_limit"] == 0
    assert svc.throttle.peak_in_use <= 10 and svc.throttle.in_use == 0
    stats = svc.stats.snapshot()
    assert stats["retries"] == 0 and stats["wait_seconds"] > 0


# --------------------------------------------------------------------------- pure helpers


def test_service_pickles_settings_not_connections(emu):
    with dask.config.set({**FAST, "ps1dask.http.read-timeout": 7}):
        svc = PS1Service(emu.url)
    svc.stats.record_call()
    blob = pickle.dumps(svc)
    assert b"Session" not in blob and b"Semaphore" not in blob and len(blob) < 2000
    back = pickle.loads(blob)
    assert back.url == svc.url and back.settings == svc.settings
    assert back.settings.read_timeout == 7
    assert back.stats.calls == 0
    assert back.list_images(*CRAB, filters="g")["filter"].tolist() == ["g"]
    clone = back.with_stats()
    assert clone.stats is not back.stats and clone.throttle is back.throttle


def test_stats_merge_and_pickle():
    a, b = RequestStats(), RequestStats()
    a.record_request("cutout", 0.5)
    a.record_response(200, 100, 0.25)
    b.record_request("list", 0.0)
    b.record_response(503, 10, 0.1)
    b.record_retry(RuntimeError("x"), 0.3)
    total = RequestStats().merge(a).merge(b.snapshot())
    snap = total.snapshot()
    assert snap["requests"] == 2 and snap["bytes"] == 110 and snap["retries"] == 1
    assert snap["by_status"] == {"200": 1, "503": 1}
    assert snap["by_kind"] == {"cutout": 1, "list": 1}
    assert pickle.loads(pickle.dumps(total)) == total
    assert (a + b) == total
    assert "2 requests" in total.summary()


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2024, 1, 1, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(90)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0


def test_retry_policy_backoff_windows():
    policy = RetryPolicy(attempts=5, backoff_initial=0.5, backoff_max=3.0, retry_after_max=10)
    assert policy.backoff_window(1) == (0.25, 0.5)
    assert policy.backoff_window(3) == (0.25, 2.0)
    assert policy.backoff_window(10) == (0.25, 3.0)
    rng = np.random.default_rng(0)
    for attempt in range(1, 8):
        sleep = policy.backoff(attempt, rng=_Rng(rng))
        low, high = policy.backoff_window(attempt)
        assert low <= sleep <= high
    assert policy.backoff(1, retry_after=4.0) >= 4.0
    assert policy.backoff(1, retry_after=60.0) <= 11.0


class _Rng:
    def __init__(self, gen):
        self.gen = gen

    def uniform(self, a, b):
        return float(self.gen.uniform(a, b))


def test_retry_call_counts_attempts_and_sleeps():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("boom")
        return "ok"

    policy = RetryPolicy(attempts=4, backoff_initial=0.2, backoff_max=1.0)
    assert retry_call(flaky, policy=policy, retryable=lambda e: True, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and all(s >= 0.1 for s in sleeps)
    calls.clear()
    with pytest.raises(ValueError):
        retry_call(
            lambda: calls.append(1) or int("x"),
            policy=policy,
            retryable=lambda e: isinstance(e, ConnectionError),
            sleep=sleeps.append,
        )
    assert len(calls) == 1


def _thread_locals() -> int:
    return sum(isinstance(o, threading.local) for o in gc.get_objects())


def test_retry_calls_leave_no_thread_local_for_the_cyclic_gc():
    """A ``threading.local`` freed by a collection that starts inside
    ``sys._current_frames()`` (Dask's worker profiler, every 10 ms) deadlocks CPython 3.11:
    retried calls must not leave one in cyclic garbage per call (tenacity's ``Retrying``
    holds one in a reference cycle)."""
    policy = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.01)
    outcomes = iter([ConnectionError("boom"), None] * 50)

    def flaky() -> str:
        error = next(outcomes)
        if error is not None:
            raise error
        return "ok"

    gc.collect()
    gc.disable()  # what is cyclic garbage stays visible
    try:
        before = _thread_locals()
        for _ in range(50):
            assert retry_call(flaky, policy=policy, retryable=lambda e: True, sleep=lambda s: None)
        with pytest.raises(KeyError):
            retry_call(lambda: {}["x"], policy=policy, retryable=lambda e: False)
        assert _thread_locals() <= before
    finally:
        gc.enable()


def test_retry_calls_from_many_threads_keep_their_own_attempts():
    policy = RetryPolicy(attempts=5, backoff_initial=0.001, backoff_max=0.002)

    def worker(n_failures: int) -> tuple[int, list[float]]:
        calls, sleeps = [], []

        def flaky() -> int:
            calls.append(1)
            if len(calls) <= n_failures:
                raise ConnectionError(f"fail {len(calls)}")
            return len(calls)

        try:
            return retry_call(
                flaky, policy=policy, retryable=lambda e: True, sleep=sleeps.append
            ), sleeps
        except ConnectionError as err:
            assert "gave up after 5 attempt(s)" in str(err.__notes__)
            return -len(calls), sleeps

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, [i % 7 for i in range(64)]))
    for i, (attempts, sleeps) in enumerate(results):
        n_failures = i % 7
        if n_failures < 5:
            assert attempts == n_failures + 1 and len(sleeps) == n_failures
        else:
            assert attempts == -5 and len(sleeps) == 4


def test_listing_format_parse_round_trip_and_positions():
    rows = [
        (1784, 59, CRAB[0], CRAB[1], "g", 0.0, "stack", "/a/x.g.fits", "x.g.fits", 0),
        (1784, 59, CRAB[0], CRAB[1], "r", 0.0, "stack", "/a/x.r.fits", "x.r.fits", 0),
        (1784, 59, CRAB[0], CRAB[1], "g", 0.0, "stack", "/a/x.g.fits", "x.g.fits", 0),
        (1405, 53, 332.6, 2.2, "g", 55676.42336, "warp", "/b/w.fits", "w.fits", 0),
    ]
    for sep in (" ", ",", "\t"):
        frame = parse_listing(format_listing(rows, sep=sep))
        assert frame["ra"].tolist()[0] == CRAB[0] and frame["mjd"].tolist()[3] == 55676.42336
    # Inputs: Crab, outside, Crab again (duplicate), NGC 7222.
    positions = assign_positions(
        frame, [CRAB[0], 10.0, CRAB[0], 332.6], [CRAB[1], -60, CRAB[1], 2.2]
    )
    assert positions.tolist() == [0, 0, 2, 3]
    with pytest.raises(BadResponseError):
        assign_positions(frame, [CRAB[0]], [CRAB[1]])
    with pytest.raises(BadResponseError):
        parse_listing("<html>oops</html>")
    empty = parse_listing(" ".join(LISTING_COLUMNS[:-1]) + "\n")
    assert empty.empty and list(empty.columns) == list(LISTING_COLUMNS)
