"""The slot account the service-bound benchmarks print, and the emulator's request log."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.bench.slots import PARTS, account


def _flights(intervals: list[tuple[float, float]]) -> dict[str, list[float]]:
    return {"arrived": [a for a, _ in intervals], "answered": [b for _, b in intervals]}


def test_account_of_one_full_wave():
    # 10 requests from 1 s to 3 s of a 10 s job at latency 0.5 s
    got = account(_flights([(1.0, 3.0)] * 10), 0.0, 10.0, 0.5)
    assert got.wall == 10.0
    assert got.useful == pytest.approx(5.0) and got.held == pytest.approx(20.0 - 5.0)
    assert got.idle == pytest.approx(
        {"start": 10.0, "ramp": 0.0, "middle": 0.0, "tail": 0.0, "end": 70.0}
    )
    assert (got.first_request_s, got.tail_s, got.end_s) == pytest.approx((1.0, 0.0, 7.0))


def test_account_sees_a_gap_between_requests_and_a_tail():
    # 10 slots busy 0-1 s; one slot idle 0.1 s (a hand-off) before its second request; then
    # a tail of one request alone from 2.1 s to 3.1 s
    first = [(0.0, 1.0)] * 10
    second = [(1.0, 2.0)] * 9 + [(1.1, 2.1)]
    tail = [(2.1, 3.1)]
    got = account(_flights(first + second + tail), 0.0, 3.2, 1.0)
    assert got.idle["start"] == pytest.approx(0.0)
    assert got.idle["ramp"] == pytest.approx(0.0)
    assert got.idle["middle"] == pytest.approx(0.1)  # full again from 1.1 s to 2.0 s
    # 2.0-2.1: 9 idle (one request left); 2.1-3.1: 9 idle
    assert got.idle["tail"] == pytest.approx(0.9 + 9.0)
    assert got.idle["end"] == pytest.approx(10 * 0.1)
    assert got.tail_s == pytest.approx(1.1) and got.end_s == pytest.approx(0.1)
    assert got.mean_gap_ms == pytest.approx(1e3 * 0.1 / 21)


def test_account_without_requests_is_all_start():
    got = account(_flights([]), 5.0, 7.0, 0.2)
    assert got.idle["start"] == pytest.approx(20.0) and got.useful == 0.0


# up to 10 lanes of back-to-back requests: never more than 10 in flight
lanes = st.lists(
    st.lists(st.tuples(st.floats(0.0, 2.0), st.floats(0.01, 2.0)), max_size=6),
    min_size=1,
    max_size=10,
)


@given(lanes, st.floats(0.0, 1.0))
def test_account_splits_every_slot_second(lane_specs, latency):
    intervals = []
    for lane in lane_specs:
        t = 0.0
        for gap, duration in lane:
            intervals.append((t + gap, t + gap + duration))
            t += gap + duration
    t_end = max([b for _, b in intervals], default=0.0) + 0.5
    got = account(_flights(intervals), 0.0, t_end, latency)
    assert set(got.idle) == set(PARTS)
    assert all(v >= -1e-9 for v in got.idle.values())
    in_flight = sum(b - a for a, b in intervals)
    assert got.useful + got.held == pytest.approx(in_flight, abs=1e-6)
    assert got.useful + got.held + sum(got.idle.values()) == pytest.approx(10 * t_end, abs=1e-6)


def test_emulator_logs_each_service_request(job_emulator):
    emu = job_emulator
    emu.configure(latency=0.05)
    try:
        emu.reset_metrics()
        t0 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(
                pool.map(
                    lambda _: requests.get(f"{emu.url}/cgi-bin/ps1filenames.py?skycell=1405.053"),
                    range(8),
                )
            )
        requests.get(f"{emu.url}/_emulator/metrics", timeout=30)  # not a service request
        t1 = time.monotonic()
        flights = requests.get(f"{emu.url}/_emulator/metrics/flights", timeout=30).json()
    finally:
        emu.configure(latency=0.0)
    assert (
        len(flights["arrived"]) == len(flights["answered"]) == 8 == emu.metrics()["requests_total"]
    )
    for a, b in zip(flights["arrived"], flights["answered"]):
        assert t0 <= a and a + 0.05 <= b <= t1  # the host's monotonic clock, latency held
    got = account(flights, t0, t1, 0.05)
    assert got.useful == pytest.approx(8 * 0.05) and got.held >= 0
    emu.reset_metrics()
    assert emu.flights()["arrived"] == []
