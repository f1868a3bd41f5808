"""The emulator's S3 mode, driven over loopback by raw HTTP, obstore, s3fs and astropy.

The same bytes as the service path, S3's ranges, headers and XML errors, ListObjectsV2 with
pagination, the missing-key knob, signed and anonymous requests, faults and latency, metrics
counted apart from the service's, and HEAD sizes without a render per HEAD.
"""

from __future__ import annotations

import base64
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor

import fsspec.asyn
import numpy as np
import obstore
import pytest
import requests
import s3fs
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st
from obstore.store import S3Store

from ps1dask.emulator import Emulator
from ps1dask.emulator.faults import s3_key_missing
from ps1dask.tessellation import SkycellId
from ps1dask.wire import FILES_PREFIX, S3_BUCKET, S3_KEY_PREFIX

TIMEOUT = 60
NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
CELL = SkycellId(1784, 59)
BASE = f"rings.v3.skycell.{CELL.projcell:04d}.{CELL.subcell:03d}"
CELL_DIR = f"{FILES_PREFIX}{CELL.projcell:04d}/{CELL.subcell:03d}/"
#: small, quick files: a stack mask and a stack number map
MASK = f"{CELL_DIR}{BASE}.stk.r.unconv.mask.fits"
NUM = f"{CELL_DIR}{BASE}.stk.r.unconv.num.fits"


def key_of(path: str) -> str:
    return S3_KEY_PREFIX + path


def object_url(emu: Emulator, path: str) -> str:
    return f"{emu.url}/{S3_BUCKET}/{key_of(path)}"


@pytest.fixture(scope="module")
def emu(emulator_cache):
    with Emulator(seed=0, cache_dir=emulator_cache) as e:
        yield e


@pytest.fixture(autouse=True)
def _fresh_knobs(request):
    if "emu" not in request.fixturenames:
        yield
        return
    emu = request.getfixturevalue("emu")
    knobs = emu.knobs.as_dict()
    yield
    emu.configure(**knobs)


def anonymous_store(emu: Emulator) -> S3Store:
    return S3Store(
        S3_BUCKET,
        endpoint=emu.url,
        region="us-east-1",
        skip_signature=True,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def signed_store(emu: Emulator) -> S3Store:
    return S3Store(
        S3_BUCKET,
        endpoint=emu.url,
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="not-a-secret",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def anonymous_fs(emu: Emulator) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        anon=True, client_kwargs={"endpoint_url": emu.url}, skip_instance_cache=True
    )


def signed_fs(emu: Emulator) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key="AKIDEXAMPLE",
        secret="not-a-secret",
        client_kwargs={"endpoint_url": emu.url, "region_name": "us-east-1"},
        skip_instance_cache=True,
    )


def service_bytes(emu: Emulator, path: str) -> bytes:
    r = requests.get(emu.url + path, timeout=TIMEOUT)
    assert r.status_code == 200
    return r.content


def error_of(response: requests.Response) -> dict[str, str]:
    root = ET.fromstring(response.content)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def list_page(emu: Emulator, **params: object) -> ET.Element:
    r = requests.get(f"{emu.url}/{S3_BUCKET}", params={"list-type": 2, **params}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return ET.fromstring(r.content)


def page_entries(page: ET.Element) -> tuple[list[tuple[str, int]], list[str]]:
    keys = [
        (c.findtext("s3:Key", namespaces=NS), int(c.findtext("s3:Size", namespaces=NS)))
        for c in page.findall("s3:Contents", NS)
    ]
    prefixes = [
        c.findtext("s3:Prefix", namespaces=NS) for c in page.findall("s3:CommonPrefixes", NS)
    ]
    return keys, prefixes  # type: ignore[return-value]


def list_all(emu: Emulator, **params: object) -> tuple[list[tuple[str, int]], list[str], int]:
    """Every page of a listing: keys with sizes, common prefixes, number of pages."""
    keys: list[tuple[str, int]] = []
    prefixes: list[str] = []
    token = None
    pages = 0
    while True:
        extra = {} if token is None else {"continuation-token": token}
        page = list_page(emu, **params, **extra)
        pages += 1
        more_keys, more_prefixes = page_entries(page)
        assert int(page.findtext("s3:KeyCount", namespaces=NS)) == len(more_keys) + len(
            more_prefixes
        )
        keys += more_keys
        prefixes += more_prefixes
        if page.findtext("s3:IsTruncated", namespaces=NS) != "true":
            return keys, prefixes, pages
        token = page.findtext("s3:NextContinuationToken", namespaces=NS)
        assert token
        assert pages < 100


# --------------------------------------------------------------------------- objects


def test_objects_are_the_service_files_byte_for_byte(emu):
    warp = next(
        r.filename
        for r in emu.sky.images(CELL, "r", ("warp.mask",))
        if r.filename.endswith(".mask.fits")
    )
    fs = anonymous_fs(emu)
    store = anonymous_store(emu)
    for path in (MASK, NUM, warp):
        expected = service_bytes(emu, path)
        r = requests.get(object_url(emu, path), timeout=TIMEOUT)
        assert r.status_code == 200
        assert r.content == expected
        assert int(r.headers["Content-Length"]) == len(expected)
        assert bytes(obstore.get(store, key_of(path)).bytes()) == expected
        assert fs.cat(f"{S3_BUCKET}/{key_of(path)}") == expected


def test_head_and_get_carry_s3_headers(emu):
    url = object_url(emu, MASK)
    get = requests.get(url, timeout=TIMEOUT)
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(get.content)
    for response in (get, head):
        h = response.headers
        assert h["Accept-Ranges"] == "bytes"
        assert h["Last-Modified"].endswith(" GMT")
        assert h["ETag"].startswith('"') and len(h["ETag"]) == 34
        assert h["x-amz-request-id"]
    assert get.headers["ETag"] == head.headers["ETag"]
    meta = obstore.head(anonymous_store(emu), key_of(MASK))
    assert meta["size"] == len(get.content) and meta["e_tag"] == get.headers["ETag"]
    info = anonymous_fs(emu).info(f"{S3_BUCKET}/{key_of(MASK)}")
    assert info["size"] == len(get.content) and info["ETag"] == get.headers["ETag"]


def test_ranges(emu):
    whole = service_bytes(emu, MASK)
    size = len(whole)
    url = object_url(emu, MASK)
    cases = {
        "bytes=100-199": (100, 199),
        f"bytes={size - 50}-": (size - 50, size - 1),
        "bytes=-300": (size - 300, size - 1),
        f"bytes=10-{size + 1000}": (10, size - 1),
    }
    for spec, (start, end) in cases.items():
        r = requests.get(url, headers={"Range": spec}, timeout=TIMEOUT)
        assert r.status_code == 206, spec
        assert r.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
        assert r.content == whole[start : end + 1]
    # a malformed range is ignored, as S3 does: the whole object
    r = requests.get(url, headers={"Range": "bytes=abc"}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.content == whole
    store = anonymous_store(emu)
    assert bytes(obstore.get_range(store, key_of(MASK), start=2880, end=5760)) == whole[2880:5760]
    with anonymous_fs(emu).open(f"{S3_BUCKET}/{key_of(MASK)}", "rb", block_size=4096) as f:
        f.seek(size - 7000)
        assert f.read(5000) == whole[size - 7000 : size - 2000]


def test_unsatisfiable_range_is_invalid_range_xml(emu):
    size = len(service_bytes(emu, MASK))
    for spec in (f"bytes={size}-", f"bytes={size + 5}-{size + 10}", "bytes=-0"):
        r = requests.get(object_url(emu, MASK), headers={"Range": spec}, timeout=TIMEOUT)
        assert r.status_code == 416, spec
        error = error_of(r)
        assert error["Code"] == "InvalidRange"
        assert error["RangeRequested"] == spec
        assert error["ActualObjectSize"] == str(size)


def test_missing_keys_and_buckets_are_s3_errors(emu):
    missing = [
        key_of(f"{CELL_DIR}{BASE}.stk.r.unconv.psf.fits"),  # listed by nobody
        key_of(f"{FILES_PREFIX}0100/000/rings.v3.skycell.0100.000.stk.r.unconv.fits"),
        f"{S3_KEY_PREFIX}/elsewhere/file.fits",
        "not-the-prefix" + MASK,
    ]
    for key in missing:
        r = requests.get(f"{emu.url}/{S3_BUCKET}/{key}", timeout=TIMEOUT)
        assert r.status_code == 404, key
        assert error_of(r)["Code"] == "NoSuchKey" and error_of(r)["Key"] == key
        assert r.headers["Content-Type"] == "application/xml"
        head = requests.head(f"{emu.url}/{S3_BUCKET}/{key}", timeout=TIMEOUT)
        assert head.status_code == 404 and head.content == b""
    r = requests.get(f"{emu.url}/otherbucket/{key_of(MASK)}", timeout=TIMEOUT)
    assert r.status_code == 404 and error_of(r)["Code"] == "NoSuchBucket"
    assert error_of(r)["BucketName"] == "otherbucket"
    with pytest.raises(FileNotFoundError):
        obstore.get(anonymous_store(emu), missing[0]).bytes()
    with pytest.raises(FileNotFoundError):
        anonymous_fs(emu).cat(f"{S3_BUCKET}/{missing[0]}")
    # the bucket is read-only
    r = requests.put(object_url(emu, MASK), data=b"x", timeout=TIMEOUT)
    assert r.status_code == 405 and error_of(r)["Code"] == "MethodNotAllowed"
    # the service's own unknown paths keep the service's plain 404
    r = requests.get(emu.url + "/cgi-bin/nothing.cgi", timeout=TIMEOUT)
    assert r.status_code == 404 and not r.text.startswith("<?xml")


def test_signed_requests_are_answered_like_anonymous_ones(emu):
    expected = service_bytes(emu, NUM)
    assert bytes(obstore.get(signed_store(emu), key_of(NUM)).bytes()) == expected
    assert signed_fs(emu).cat(f"{S3_BUCKET}/{key_of(NUM)}") == expected
    # what botocore sends with SigV4, by hand: a signature nobody checks
    headers = {
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=00",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
        "x-amz-date": "20260101T000000Z",
        "Range": "bytes=0-2879",
    }
    r = requests.get(object_url(emu, NUM), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 206 and r.content == expected[:2880]


def test_astropy_opens_the_bucket_through_fsspec(emu):
    expected = fits.open(
        __import__("io").BytesIO(service_bytes(emu, NUM)), do_not_scale_image_data=True
    )[1].data
    with fits.open(
        f"s3://{S3_BUCKET}/{key_of(NUM)}",
        use_fsspec=True,
        fsspec_kwargs={"anon": True, "client_kwargs": {"endpoint_url": emu.url}},
        do_not_scale_image_data=True,
    ) as hdul:
        section = hdul[1].section[1000:1040, 2000:2100]
    np.testing.assert_array_equal(section, expected[1000:1040, 2000:2100])


# --------------------------------------------------------------------------- listing


def test_listing_directories_with_pagination(emu):
    prefix = key_of(FILES_PREFIX) + "17"
    _, prefixes, pages = list_all(emu, prefix=prefix, delimiter="/", **{"max-keys": 30})
    assert prefixes == [f"{key_of(FILES_PREFIX)}{p}/" for p in range(1700, 1800)]
    assert pages == 4
    # down the tree from the root, one level at a time
    keys, top, _ = list_all(emu, delimiter="/")
    assert keys == [] and top == ["panstarrs/"]
    subcells = list_all(emu, prefix=key_of(CELL_DIR)[:-4], delimiter="/")[1]
    assert subcells == [key_of(CELL_DIR)[:-4] + f"{s:03d}/" for s in range(100)]
    # max-keys is capped at 1000
    page = list_page(emu, prefix=key_of(FILES_PREFIX), delimiter="/", **{"max-keys": 5000})
    assert page.findtext("s3:MaxKeys", namespaces=NS) == "1000"
    assert len(page_entries(page)[1]) == 1000
    assert page.findtext("s3:IsTruncated", namespaces=NS) == "true"
    # obstore and s3fs list the same directories
    listed = obstore.list_with_delimiter(anonymous_store(emu), key_of(CELL_DIR)[:-4])
    assert [p.rstrip("/") for p in listed["common_prefixes"]] == [p.rstrip("/") for p in subcells]
    fs = anonymous_fs(emu)
    assert [p.rstrip("/") for p in fs.ls(f"{S3_BUCKET}/{key_of(CELL_DIR)[:-4]}")] == [
        f"{S3_BUCKET}/{p.rstrip('/')}" for p in subcells
    ]


def test_listing_keys_gives_exact_sizes(emu):
    prefix = key_of(f"{CELL_DIR}{BASE}.stk.i.unconv.e")  # .exp and .expwt
    keys, prefixes, pages = list_all(emu, prefix=prefix, **{"max-keys": 1})
    names = sorted(r.filename for r in emu.sky.images(CELL, "i", ("stack.exp", "stack.expwt")))
    assert [k for k, _ in keys] == [key_of(n) for n in names]
    assert prefixes == [] and pages == 2
    for key, size in keys:
        head = requests.head(f"{emu.url}/{S3_BUCKET}/{key}", timeout=TIMEOUT)
        assert int(head.headers["Content-Length"]) == size
    # botocore (under s3fs) reads the same pages
    fs = anonymous_fs(emu)
    answer = fsspec.asyn.sync(
        fs.loop, fs._call_s3, "list_objects_v2", Bucket=S3_BUCKET, Prefix=prefix, MaxKeys=1
    )
    assert [(c["Key"], c["Size"]) for c in answer["Contents"]] == keys[:1]
    assert answer["IsTruncated"] and answer["KeyCount"] == 1
    assert len(page_entries(list_page(emu, prefix=prefix))[0]) == 2


def test_a_listing_gives_sizes_without_rendering(tmp_path):
    """Sizes in a listing come from the files' headers: a page of never-rendered files is
    whole, renders nothing, and its sizes are what GET then sends."""
    with Emulator(seed=5, cache_dir=tmp_path) as fresh:
        prefix = key_of(f"{CELL_DIR}{BASE}.stk.z.unconv.")  # 6 files, none rendered
        page = list_page(fresh, prefix=prefix)
        keys, _ = page_entries(page)
        suffixes = ("exp", "expwt", "unconv", "mask", "num", "wt")  # "unconv": the image
        assert [k.rsplit(".", 2)[-2] for k, _ in keys] == list(suffixes)
        assert page.findtext("s3:IsTruncated", namespaces=NS) == "false"
        assert fresh.cache.renders == 0
        key, size = keys[3]  # the mask
        body = requests.get(f"{fresh.url}/{S3_BUCKET}/{key}", timeout=TIMEOUT).content
        assert len(body) == size and fresh.cache.renders == 1


def test_listing_a_prefix_without_keys_stays_bounded(emu):
    emu.configure(s3_missing_fraction=1.0)
    page = list_page(emu, prefix=key_of(FILES_PREFIX))
    assert page_entries(page) == ([], [])
    assert page.findtext("s3:IsTruncated", namespaces=NS) == "true"
    token = page.findtext("s3:NextContinuationToken", namespaces=NS)
    resume = base64.urlsafe_b64decode(token).decode()
    assert resume.startswith(key_of(FILES_PREFIX)) and resume.endswith("/")
    page2 = list_page(emu, prefix=key_of(FILES_PREFIX), **{"continuation-token": token})
    token2 = page2.findtext("s3:NextContinuationToken", namespaces=NS)
    assert base64.urlsafe_b64decode(token2).decode() > resume


def test_bad_listing_arguments(emu):
    for params in ({"max-keys": "many"}, {"continuation-token": "***"}):
        r = requests.get(
            f"{emu.url}/{S3_BUCKET}", params={"list-type": 2, **params}, timeout=TIMEOUT
        )
        assert r.status_code == 400 and error_of(r)["Code"] == "InvalidArgument"


# --------------------------------------------------------------------------- missing keys


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.floats(0, 1), st.floats(0, 1))
def test_missing_keys_grow_with_the_fraction(key, f1, f2):
    low, high = sorted((f1, f2))
    if s3_key_missing(key, low):
        assert s3_key_missing(key, high)
    assert not s3_key_missing(key, 0.0)
    assert s3_key_missing(key, 1.0)


def test_missing_fraction_hides_a_fixed_part_of_the_keys(emu):
    refs = emu.sky.images(CELL, "grizy", ("stack.mask", "stack.num", "warp"))
    keys = [key_of(r.filename) for r in refs]
    emu.configure(s3_missing_fraction=0.5)
    missing = [k for k in keys if s3_key_missing(k, 0.5)]
    # a hash, not a count: about half, by the binomial spread of this many keys
    n = len(keys)
    assert abs(len(missing) - n / 2) < 4 * (n / 4) ** 0.5
    cheap = [r.filename for r in refs if r.image_type in ("stack.mask", "stack.num")]
    gone = [p for p in cheap if s3_key_missing(key_of(p), 0.5)]
    kept = [p for p in cheap if not s3_key_missing(key_of(p), 0.5)]
    assert gone and kept
    for path in gone:
        r = requests.head(object_url(emu, path), timeout=TIMEOUT)
        assert r.status_code == 404
        assert error_of(requests.get(object_url(emu, path), timeout=TIMEOUT))["Code"] == "NoSuchKey"
        assert page_entries(list_page(emu, prefix=key_of(path)))[0] == []
        assert (
            requests.head(emu.url + path, timeout=TIMEOUT).status_code == 200
        )  # the service has it
    for path in kept[:3]:
        assert requests.head(object_url(emu, path), timeout=TIMEOUT).status_code == 200
        assert [k for k, _ in page_entries(list_page(emu, prefix=key_of(path)))[0]] == [
            key_of(path)
        ]
    emu.configure(s3_missing_fraction=0.0)
    assert requests.head(object_url(emu, gone[0]), timeout=TIMEOUT).status_code == 200


def test_missing_fraction_is_a_bounded_knob(emu):
    r = requests.post(
        emu.url + "/_emulator/config", json={"s3_missing_fraction": 0.25}, timeout=TIMEOUT
    )
    assert r.status_code == 200 and r.json()["s3_missing_fraction"] == 0.25
    r = requests.post(
        emu.url + "/_emulator/config", json={"s3_missing_fraction": 1.5}, timeout=TIMEOUT
    )
    assert r.status_code == 400 and "s3_missing_fraction" in r.json()["error"]


# --------------------------------------------------------------------------- faults, latency


def test_faults_are_answered_the_s3_way(emu):
    url = object_url(emu, MASK)
    expected = {"503": (503, "SlowDown"), "429": (503, "SlowDown"), "500": (500, "InternalError")}
    emu.reset_metrics()
    for kind, (status, code) in expected.items():
        emu.configure(fault_rate=1.0, fault_kinds=kind)
        r = requests.get(url, timeout=TIMEOUT)
        assert r.status_code == status and error_of(r)["Code"] == code
    emu.configure(fault_rate=1.0, fault_kinds="reset")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=TIMEOUT)
    emu.configure(fault_rate=1.0, fault_kinds="truncate")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, timeout=TIMEOUT)
    m = emu.metrics()
    assert m["s3"]["faults_by_kind"] == {"503": 1, "429": 1, "500": 1, "reset": 1, "truncate": 1}
    assert m["faults_injected"] == 0  # the service saw none
    # the service answers the new 500 kind in its own words
    emu.configure(fault_rate=1.0, fault_kinds="500")
    r = requests.get(emu.url + MASK, timeout=TIMEOUT)
    assert r.status_code == 500 and not r.text.startswith("<?xml")


def test_latency_and_bandwidth_apply_to_s3(emu):
    size = len(service_bytes(emu, MASK))
    emu.configure(latency=5.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.head(object_url(emu, MASK), timeout=0.5)
    emu.configure(latency=0.0, bandwidth=0.01)  # 10 kB/s: the 0.7 MB file takes a minute
    received = 0
    with requests.get(object_url(emu, MASK), timeout=TIMEOUT, stream=True) as r:
        assert r.status_code == 200  # the headers come at once; the body trickles
        deadline = time.monotonic() + 1.0
        for piece in r.iter_content(4096):
            received += len(piece)
            if time.monotonic() > deadline:
                break
    # unthrottled, loopback sends the 0.7 MB in milliseconds; at 10 kB/s a second is 10 kB
    assert 0 < received < size / 4


# --------------------------------------------------------------------------- metrics


def test_s3_is_counted_apart_and_not_limited(emu):
    url = object_url(emu, NUM)
    size = len(requests.get(url, timeout=TIMEOUT).content)
    emu.configure(latency=1.0)  # long enough for the burst to be in flight together
    emu.reset_metrics()
    n = 30
    barrier = threading.Barrier(n)

    def one(i: int) -> tuple[int, int]:
        barrier.wait()
        headers = {"Range": "bytes=0-99"} if i % 3 == 0 else {}
        r = requests.get(url, headers=headers, timeout=TIMEOUT)
        return r.status_code, len(r.content)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    assert sorted({s for s, _ in results}) == [200, 206]
    m = emu.metrics()
    s3 = m["s3"]
    assert s3["requests"] == n and s3["range_requests"] == n // 3
    assert s3["max_in_flight"] > 10 and s3["in_flight"] == 0
    assert s3["bytes_sent"] == sum(length for _, length in results) == 10 * 100 + 20 * size
    assert s3["responses_by_status"] == {"200": 20, "206": 10}
    # the service's counters saw nothing
    assert m["requests_total"] == 0 and m["requests_by_endpoint"] == {}
    assert m["max_in_flight"] == 0 and m["in_flight"] == 0 and m["bytes_sent"] == 0
    assert m["refused_over_limit"] == 0
    # and a service request counts there only
    emu.configure(latency=0.0)
    requests.get(emu.url + NUM, timeout=TIMEOUT)
    m = emu.metrics()
    assert m["requests_by_endpoint"] == {"files": 1} and m["s3"]["requests"] == n
    emu.reset_metrics()
    assert emu.metrics()["s3"] == {
        "requests": 0,
        "range_requests": 0,
        "in_flight": 0,
        "max_in_flight": 0,
        "bytes_sent": 0,
        "faults_injected": 0,
        "faults_by_kind": {},
        "responses_by_status": {},
    }


# --------------------------------------------------------------------------- HEAD sizes


def test_head_renders_nothing_and_gets_render_within_the_bound(tmp_path):
    """HEAD answers a file's size from its header: never-rendered files stay unrendered.
    GETs then send exactly that many bytes, each file rendered once, at most
    ``max_renders`` at once, also after an eviction."""
    with Emulator(seed=7, cache_dir=tmp_path, cache_max_bytes=1) as fresh:
        refs = fresh.sky.images(CELL, "gri", ("stack.mask", "stack.num"))
        paths = [r.filename for r in refs]
        n = len(paths)
        assert n == 6
        cache = fresh.cache
        bound = fresh.service.max_renders

        def url(i: int) -> str:
            # the service's and S3's routes to the same files
            return fresh.url + paths[i - n] if i >= n else object_url(fresh, paths[i])

        def head(i: int) -> int:
            r = requests.head(url(i), timeout=TIMEOUT)
            assert r.status_code == 200
            return int(r.headers["Content-Length"])

        with ThreadPoolExecutor(2 * n) as pool:
            sizes = list(pool.map(head, range(2 * n)))
        assert cache.renders == 0
        assert sizes[:n] == sizes[n:]

        def get(i: int) -> int:
            return len(requests.get(url(i), timeout=TIMEOUT).content)

        with ThreadPoolExecutor(2 * n) as pool:
            assert list(pool.map(get, range(2 * n))) == sizes
        assert n <= cache.renders <= 2 * n  # at most once more per route after an eviction
        assert 1 <= cache.max_rendering <= bound
        renders = cache.renders
        # all files but one were evicted (budget 1 byte): HEAD still knows every size
        for path, size in zip(paths, sizes):
            head = requests.head(object_url(fresh, path), timeout=TIMEOUT)
            assert int(head.headers["Content-Length"]) == size
        assert cache.renders == renders
        # and GET sends exactly that many bytes (rendering the evicted ones again)
        for path, size in zip(paths[:2], sizes[:2]):
            assert len(requests.get(object_url(fresh, path), timeout=TIMEOUT).content) == size
            assert len(requests.get(fresh.url + path, timeout=TIMEOUT).content) == size
