"""The emulator under hostile or careless clients: bounded bodies, answers, settings and disk.

Every test drives the emulator over real loopback HTTP (raw sockets where a well-behaved
client library would not misbehave on purpose).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from ps1dask.emulator import Emulator
from ps1dask.emulator.service import (
    MAX_BODY_BYTES,
    MAX_LISTING_ROWS,
    MAX_POSITIONS_PER_REQUEST,
)
from ps1dask.tessellation import SkycellId, skycell_center
from ps1dask.wire import FILES_PREFIX, LIST_PATH, LISTING_COLUMNS

TIMEOUT = 60
CELL = SkycellId(1405, 53)
RA, DEC = skycell_center(CELL)


@pytest.fixture(scope="module")
def emu():
    with Emulator(seed=0) as e:
        yield e


@pytest.fixture(autouse=True)
def _fresh_knobs(emu):
    knobs = emu.knobs.as_dict()
    yield
    emu.configure(**knobs)


def _post_positions(emu: Emulator, lines: list[str], **form: str) -> requests.Response:
    payload = ("\n".join(lines) + "\n").encode()
    return requests.post(
        emu.url + LIST_PATH,
        data=form,
        files={"file": ("positions.txt", payload, "text/plain")},
        timeout=TIMEOUT,
    )


# --------------------------------------------------------------------------- ps1filenames POST


def test_position_file_over_the_line_cap_is_refused_before_any_work(emu):
    # 20,000 lines of every type: about 95 MB of answer before the cap
    n = 2 * MAX_POSITIONS_PER_REQUEST
    r = _post_positions(emu, [f"{RA} {DEC}"] * n, type="stack,warp,warp.wt,warp.mask")
    assert r.status_code == 413, r.text[:200]
    assert str(MAX_POSITIONS_PER_REQUEST) in r.text and str(n) in r.text
    assert len(r.content) < 1000


def test_listing_over_the_row_cap_is_refused(emu):
    types = "stack,stack.wt,stack.mask,stack.exp,stack.num,stack.expwt,warp,warp.wt,warp.mask"
    per_position = len(emu.sky.images(CELL, "grizy", types.split(",")))
    n = MAX_POSITIONS_PER_REQUEST
    assert n * per_position > MAX_LISTING_ROWS  # the premise of the test
    r = _post_positions(emu, [f"{RA} {DEC}"] * n, type=types)
    assert r.status_code == 413, r.text[:200]
    assert f"{n * per_position} rows" in r.text


def test_long_listing_is_streamed_and_complete(emu):
    n = 3000
    r = _post_positions(emu, [f"{RA} {DEC}"] * n, filters="r", type="stack,stack.wt")
    assert r.status_code == 200
    # sent in chunks as it is made: no Content-Length, chunked transfer encoding
    assert "Content-Length" not in r.headers
    assert r.headers.get("Transfer-Encoding") == "chunked"
    lines = r.text.rstrip("\n").split("\n")
    assert lines[0] == " ".join(LISTING_COLUMNS)
    rows = [line.split(" ") for line in lines[1:]]
    assert len(rows) == 2 * n
    assert {(row[0], row[1], row[6]) for row in rows} == {
        ("1405", "53", "stack"),
        ("1405", "53", "stack.wt"),
    }


def test_request_body_over_the_limit_is_refused(emu):
    lines = [f"{RA:.10f} {DEC:.10f}"] * (MAX_BODY_BYTES // 20)
    assert len("\n".join(lines)) > MAX_BODY_BYTES
    r = _post_positions(emu, lines)
    assert r.status_code == 413


# --------------------------------------------------------------------------- stalled bodies


def _stalled_post(emu: Emulator) -> socket.socket:
    """A POST whose headers announce 1000 body bytes, of which it sends 10."""
    sock = socket.create_connection((emu.host, emu.port), timeout=TIMEOUT)
    head = (
        f"POST {LIST_PATH} HTTP/1.1\r\nHost: {emu.host}:{emu.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b"filters=r&")
    return sock


def test_stalled_post_bodies_do_not_lock_other_clients_out(emu):
    emu.configure(body_timeout=600)
    emu.reset_metrics()
    stalled = [_stalled_post(emu) for _ in range(emu.knobs.max_concurrency)]
    try:
        # the emulator has seen every stalled request before the next one
        assert emu.metrics()["in_flight"] == 0
        r = requests.get(
            emu.url + LIST_PATH, params={"ra": RA, "dec": DEC, "filters": "r"}, timeout=TIMEOUT
        )
        assert r.status_code == 200, r.text
        metrics = emu.metrics()
        assert metrics["refused_over_limit"] == 0 and metrics["requests_total"] == 1
    finally:
        for sock in stalled:
            sock.close()


def test_a_stalled_body_times_out_with_408(emu):
    emu.configure(body_timeout=0.3)
    sock = _stalled_post(emu)
    try:
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]


# --------------------------------------------------------------------------- settings endpoint


def _config(emu: Emulator, body: bytes | str, **headers: str) -> requests.Response:
    return requests.post(emu.url + "/_emulator/config", data=body, headers=headers, timeout=30)


def test_settings_refuse_text_plain_and_foreign_origins(emu):
    before = emu.knobs.as_dict()
    body = json.dumps({"latency": 5})
    # a web page's plain form post (no CORS preflight)
    assert _config(emu, body, **{"Content-Type": "text/plain"}).status_code == 415
    # JSON, but from another page, or addressed to another host name (DNS rebinding)
    json_type = {"Content-Type": "application/json"}
    origin = _config(emu, body, **json_type, Origin="http://evil.example")
    assert origin.status_code == 403
    host = _config(emu, body, **json_type, Host=f"evil.example:{emu.port}")
    assert host.status_code == 403
    reset = requests.post(
        emu.url + "/_emulator/metrics/reset", headers={"Origin": "http://evil.example"}, timeout=30
    )
    assert reset.status_code == 403
    assert emu.knobs.as_dict() == before
    # the emulator's own origin is fine
    own = _config(emu, body, **json_type, Origin=emu.url)
    assert own.status_code == 200 and own.json()["latency"] == 5.0


@pytest.mark.parametrize(
    "body",
    [
        '{"latency": 1e300}',
        '{"stall_seconds": 1e9}',
        '{"max_concurrency": 1e12}',
        '{"latency": {"a": 1}}',
        '{"fault_kinds": 5}',
        '{"seed": ' + "9" * 5000 + "}",
        '{"seed": [1]}',
        '{"latency": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=[
        "huge-latency",
        "huge-stall",
        "huge-limit",
        "object",
        "kinds-number",
        "long-int",
        "seed-list",
        "deep-value",
        "deep-body",
    ],
)
def test_settings_out_of_bounds_or_nested_give_400(emu, body):
    before = emu.knobs.as_dict()
    r = _config(emu, body, **{"Content-Type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    assert "error" in r.json()
    assert emu.knobs.as_dict() == before


# --------------------------------------------------------------------------- whole-file cache


def test_whole_file_cache_keeps_to_its_budget_and_head_needs_no_render(tmp_path):
    names = [f"rings.v3.skycell.1405.053.stk.{band}.unconv.num.fits" for band in ("g", "r", "i")]
    with Emulator(seed=0, cache_dir=tmp_path, cache_max_bytes=1) as emu:
        url = emu.url + FILES_PREFIX + "1405/053/"
        bodies = {}
        for name in names:
            r = requests.get(url + name, timeout=TIMEOUT)
            assert r.status_code == 200
            bodies[name] = r.content
        on_disk = sorted(p.name for p in Path(tmp_path).rglob("*.fits"))
        assert on_disk == [names[-1]]  # one file at a time fits a 1-byte budget
        assert emu.cache.total_bytes == len(bodies[names[-1]])
        # HEAD of an evicted file: its size from the header, nothing rendered again
        head = requests.head(url + names[0], timeout=TIMEOUT)
        assert head.status_code == 200
        assert int(head.headers["Content-Length"]) == len(bodies[names[0]])
        assert sorted(p.name for p in Path(tmp_path).rglob("*.fits")) == [names[-1]]
        # and a GET renders it again, identical
        again = requests.get(url + names[0], timeout=TIMEOUT)
        assert again.content == bodies[names[0]]
        ranged = requests.get(url + names[0], headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
        assert ranged.status_code == 206 and ranged.content == bodies[names[0]][10:20]
