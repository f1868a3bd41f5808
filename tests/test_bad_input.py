"""Bad input and safety: every mistake gets a clear error naming the problem, before any
change to an existing store; names from the server never escape the cache; the parsers of
positions and of service answers raise only their documented errors, whatever they read."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import dask.config
import numpy as np
import pandas as pd
import pytest
import zarr
from _jobs import cutout_job, cutouts_args, positions_in_one_skycell, tree_digest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ps1dask
from ps1dask.cli import main
from ps1dask.client.answers import parse_fits_answer
from ps1dask.client.listing import LISTING_COLUMNS, parse_listing
from ps1dask.exceptions import (
    BadFITSError,
    BadResponseError,
    InvalidParameterError,
    InvalidPositionError,
    PS1DaskError,
)
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.storage import STATUS, StoreMismatchError

FILTERS, SIZE, UNIT = "r", 16, 4
#: The bad inputs tried (filled by the tests, printed at the end with pytest -s).
TRIED: list[str] = []


@pytest.fixture(scope="module")
def dask_client():
    """A cluster of this module's own: its failures and kills must not reach other tests."""
    from conftest import local_cluster_client

    with local_cluster_client() as client:
        yield client


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if TRIED:
        print(f"\nbad inputs tried ({len(TRIED)}): " + "; ".join(TRIED))


@pytest.fixture(scope="module")
def table():
    return positions_in_one_skycell(8, seed=31)


@pytest.fixture(scope="module")
def existing(job_emulator, dask_client, table, tmp_path_factory):
    """A complete store every bad call points at: it must come out byte-identical."""
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    store = tmp_path_factory.mktemp("bad-input") / "existing.zarr"
    summary = cutout_job(
        table, store, job_emulator.url, dask_client, filters=FILTERS, size=SIZE, unit=UNIT
    )
    assert summary.statuses == {"ok": len(table)}
    return store


# --- files of positions ----------------------------------------------------------------------


def _write_inputs(d: Path, table: pd.DataFrame) -> dict[str, Path]:
    files = {}

    def text(name: str, content: str) -> None:
        files[name] = d / name
        files[name].write_text(content)

    def raw(name: str, content: bytes) -> None:
        files[name] = d / name
        files[name].write_bytes(content)

    raw("binary.csv", bytes(range(256)) * 4)
    raw("corrupt.parquet", b"PAR1" + b"\x00garbage" * 20)
    raw("corrupt.fits", b"SIMPLE  =                    T" + b" " * 50 + b"garbage" * 500)
    raw("notgzip.csv.gz", b"this is not gzip")
    text("unclosed.xml", "<VOTABLE><RESOURCE><TABLE><garbage")
    text("quote.csv", 'ra,dec\n"1,2\n')
    text("columns.csv", "x,y\n10,20\n")
    text("onlyra.csv", "ra,mag\n10,20\n")
    text("nan.csv", "ra,dec\n10,nan\ninf,20\n332.6,2.2\n")
    text("dec91.csv", "ra,dec\n10,91\n")
    text("sexagesimal.csv", "ra,dec\n25:00:00,+10:00:00\n")
    text("dup.csv", "id,ra,dec\na,332.6,2.2\na,332.61,2.21\n")
    text("header.csv", "ra,dec\n")
    text("empty.csv", "")
    text("noext", "ra,dec\n1,2\n")
    files["directory.csv"] = d / "directory.csv"
    files["directory.csv"].mkdir()
    files["good.csv"] = d / "good.csv"
    table.to_csv(files["good.csv"], index=False)
    return files


# (positions file, extra options, what the message must say)
CLI_CASES = [
    ("binary.csv", [], "no position columns"),
    ("corrupt.parquet", [], "cannot read positions"),
    ("corrupt.fits", [], "cannot read positions"),
    ("notgzip.csv.gz", [], "cannot read positions"),
    ("unclosed.xml", [], "cannot read positions"),
    ("quote.csv", [], "cannot read the header"),
    ("columns.csv", [], "no position columns. Columns are ['x', 'y']"),
    ("onlyra.csv", [], "no dec column"),
    ("nan.csv", [], "row 1: ra: not a finite number"),
    ("dec91.csv", [], "row 0: dec: |dec| > 90"),
    ("sexagesimal.csv", [], "row 0: ra: sexagesimal hours outside [0, 24)"),
    ("dup.csv", [], "id 'a': rows 0, 1"),
    ("header.csv", [], "no positions"),
    ("empty.csv", [], "no position columns"),
    ("noext", [], "unknown table format"),
    ("missing.csv", [], "does not exist"),
    ("directory.csv", [], "Is a directory"),
    ("good.csv", ["--size", "6001"], "each side must be 1..6000"),
    ("good.csv", ["--size", "240,100000"], "each side must be 1..6000"),
    ("good.csv", ["--size", "0"], "each side must be 1..6000"),
    ("good.csv", ["--size", "12x"], "size '12x' is not N, 'W,H'"),
    ("good.csv", ["--filters", "gq"], "unknown ['q']"),
    ("good.csv", ["--filters", "ugr"], "unknown ['u']"),
    ("good.csv", ["--types", "stack,stack.foo"], "unknown ['stack.foo']"),
    ("good.csv", ["--types", "warp"], "warp images"),
    ("good.csv", ["--service", "ftp://example.org"], "not an http(s) URL"),
    # the store exists, made for another request: refused, never overwritten
    ("good.csv", ["--size", "17"], "was made for a different request"),
    ("good.csv", ["--filters", "gr"], "filters"),
    ("good.csv", ["--types", "stack,stack.wt"], "types"),
    ("nan_dropped", [], "positions"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, table):
    d = tmp_path_factory.mktemp("inputs")
    files = _write_inputs(d, table)
    files["nan_dropped"] = d / "other.csv"  # other positions: a different request
    table.iloc[:-1].to_csv(files["nan_dropped"], index=False)
    return files


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["cutouts", *args])
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    CLI_CASES,
    ids=[f"{n}{'-' + '-'.join(o).strip('-') if o else ''}" for n, o, _ in CLI_CASES],
)
def test_cli_bad_input_clear_error_store_intact(
    name, options, expected, inputs, existing, job_emulator, capsys
):
    before = tree_digest(existing)
    path = inputs.get(name, inputs["good.csv"].parent / name)
    args = [
        str(path),
        "-o",
        str(existing),
        "--filters",
        FILTERS,
        "--size",
        str(SIZE),
        "--strategy",
        "cutout",
        "--service",
        job_emulator.url,
        "--unit-size",
        str(UNIT),
    ]
    args += options  # later options win
    code, err = _cli(args, capsys)
    assert code == 1, err
    first = err.splitlines()[0] if err else ""
    assert first.startswith("ps1dask cutouts: error: "), err
    assert expected in err, err
    assert "Traceback" not in err
    assert tree_digest(existing) == before
    TRIED.append(f"{name} {' '.join(options)}".strip())


@pytest.mark.parametrize(
    ("kwargs", "error", "expected"),
    [
        ({"size": 17}, StoreMismatchError, "width: store has 16, request has 17"),
        ({"filters": "ri"}, StoreMismatchError, "filters: store has 'r', request has 'ri'"),
        ({"types": ("stack", "stack.mask")}, StoreMismatchError, "types"),
        ({"service": "http://127.0.0.1:9"}, StoreMismatchError, "service_url"),
        ({"positions": "shifted"}, StoreMismatchError, "positions_digest"),
        ({"strategy": "fastest"}, InvalidParameterError, "strategy 'fastest'"),
        ({"size": 6001}, InvalidParameterError, "1..6000"),
        ({"size": (10, -1)}, InvalidParameterError, "1..6000"),
        ({"filters": "x"}, InvalidParameterError, "unknown ['x']"),
        ({"positions": "nan"}, InvalidPositionError, "row 2"),
        ({"positions": "dup"}, InvalidPositionError, "must be unique"),
        ({"positions": "nodec"}, InvalidParameterError, "no dec column"),
    ],
)
def test_api_bad_input_raises_ps1dask_error_store_intact(
    kwargs, error, expected, table, existing, job_emulator, dask_client
):
    before = tree_digest(existing)
    positions: object = table
    kind = kwargs.pop("positions", None)
    if kind == "shifted":
        positions = table.assign(ra=table.ra + 1e-6)
    elif kind == "nan":
        positions = table.assign(dec=[*table.dec[:2], np.nan, *table.dec[3:]])
    elif kind == "dup":
        positions = table.assign(name=["same"] * len(table))
    elif kind == "nodec":
        positions = table.rename(columns={"dec": "declination"})
    call = {
        "filters": FILTERS,
        "size": SIZE,
        "strategy": "cutout",
        "service": job_emulator.url,
        "client": dask_client,
        "progress": False,
        "max_unit_positions": UNIT,
        **kwargs,
    }
    with pytest.raises(error) as info:
        ps1dask.cutouts(positions, existing, **call)
    assert isinstance(info.value, PS1DaskError)
    assert expected in str(info.value)
    assert tree_digest(existing) == before
    TRIED.append(f"API {kind or kwargs}")


def test_foreign_paths_are_refused_and_left_alone(inputs, job_emulator, dask_client, tmp_path):
    call = {
        "filters": FILTERS,
        "size": SIZE,
        "strategy": "cutout",
        "service": job_emulator.url,
        "client": dask_client,
        "progress": False,
    }
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    afile = tmp_path / "afile.zarr"
    afile.write_text("a file where the store should be")
    for target, resume, expected in [
        (foreign, True, "not a ps1dask store"),
        (foreign, False, "refusing to delete"),
        (afile, True, "not a ps1dask store"),
        (afile, False, "refusing to delete"),
        (afile / "store.zarr", True, "is a file, not a directory"),
    ]:
        before = tree_digest(tmp_path)
        with pytest.raises(PS1DaskError, match=expected):
            ps1dask.cutouts(inputs["good.csv"], target, resume=resume, **call)
        assert tree_digest(tmp_path) == before
        TRIED.append(f"output {target.name} resume={resume}")
    assert (foreign / "thesis.tex").read_text() == "precious"


# --- read-only and full output locations (real processes) ------------------------------------

_RUNNER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from ps1dask.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(args)
        except BaseException as exc:  # what main() let through: a traceback for the user
            code, err = -1, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
        results.append([code, err.getvalue()])
    print(json.dumps(results))
    """
)


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply even to root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def _run_cli_calls(calls: list[list[str]], prefix: list[str], **popen) -> list[tuple[int, str]]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", _RUNNER, json.dumps(calls)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
        **popen,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]


def _chmod_tree(path: Path, writable: bool) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), 0o644 if writable else 0o444)
        os.chmod(root, 0o755 if writable else 0o555)


def test_read_only_output_clear_error_store_intact(existing, inputs, job_emulator, tmp_path):
    base = tmp_path / "ro"
    base.mkdir()
    partial = base / "partial.zarr"
    shutil.copytree(existing, partial)
    status = zarr.open_array(str(partial), path="stack_status", mode="r+")
    status[:UNIT] = STATUS["pending"]  # a unit still to do: the job wants to write
    locked = tmp_path / "locked"
    locked.mkdir()
    good = inputs["good.csv"]
    options = ["--unit-size", str(UNIT), "--workers", "1"]
    calls = [
        cutouts_args(
            good, locked / "new.zarr", job_emulator.url, *options, filters=FILTERS, size=SIZE
        ),
        cutouts_args(good, partial, job_emulator.url, *options, filters=FILTERS, size=SIZE),
        cutouts_args(
            good, partial, job_emulator.url, "--no-resume", *options, filters=FILTERS, size=SIZE
        ),
    ]
    _chmod_tree(partial, writable=False)
    os.chmod(base, 0o555)
    os.chmod(locked, 0o555)
    before = tree_digest(partial)
    try:
        results = _run_cli_calls(calls, _unprivileged())
    finally:
        os.chmod(base, 0o755)
        os.chmod(locked, 0o755)
        _chmod_tree(partial, writable=True)
    expected = ["is not writable", "is not writable", "nothing was deleted"]
    for (code, err), want in zip(results, expected):
        assert code == 1, err
        assert err.startswith("ps1dask cutouts: error: "), err
        assert want in err and "Traceback" not in err, err
    assert tree_digest(partial) == before
    assert not (locked / "new.zarr").exists()
    TRIED.extend(
        ["read-only parent dir", "read-only existing store", "read-only store --no-resume"]
    )


def test_full_output_location_clear_error_then_resume(
    table, inputs, existing, job_emulator, dask_client, tmp_path
):
    """A write that fails during the job (file size limit: EFBIG, as a full disk gives
    ENOSPC) stops the job with a clear error; the store stays consistent and resumes."""
    store = tmp_path / "full.zarr"
    options = ["--unit-size", str(UNIT), "--workers", "1"]
    args = cutouts_args(
        inputs["good.csv"], store, job_emulator.url, *options, filters=FILTERS, size=128
    )
    limit = 48 * 1024  # the metadata fits, the image chunks (4 x 128 x 128 x 4 bytes) do not

    def limited() -> None:  # in the child (and its dask workers), before exec
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    [(code, err)] = _run_cli_calls([args], [], preexec_fn=limited)
    assert code == 1, err
    lines = err.strip().splitlines()  # the local cluster prints its dashboard link first
    assert lines[-1].startswith("ps1dask cutouts: error: writing the store"), err
    assert all(line.startswith("Dask dashboard:") for line in lines[:-1]), err
    assert "File too large" in err and str(store) in err and "rerun" in err, err
    assert "Traceback" not in err
    status = np.asarray(zarr.open_array(str(store), path="stack_status", mode="r")[:])
    assert set(np.unique(status).tolist()) <= {STATUS["pending"]}  # nothing claimed done
    # space again: the same command completes the store
    summary = cutout_job(
        inputs["good.csv"],
        store,
        job_emulator.url,
        dask_client,
        filters=FILTERS,
        size=128,
        unit=UNIT,
    )
    assert summary.statuses == {"ok": len(table)}
    TRIED.append("output location full (RLIMIT_FSIZE) mid-job")


# --- names and paths from the server --------------------------------------------------------

HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "rings.v3.skycell.1405.053.stk.g.unconv.fits/../../../x",
    "rings.v3.skycell.1405.053.stk.g.unconv.fits\n",
    "rings.v3.skycell.1405.053.stk.g.unconv.fits\x00.txt",
    "..\\..\\rings.v3.skycell.1405.053.stk.g.unconv.fits",
    "rings.v3.skycell.1405.053.stk.g.unconv.fits/..",
    "%2e%2e/%2e%2e/rings.v3.skycell.1405.053.stk.g.unconv.fits.evil",
    "rings.v3.skycell.9999.999.stk.g.unconv.fits.sh",
    "",
    ".",
    "..",
    "~/rings.v3.skycell.1405.053.stk.g.unconv.fits",
]


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_cache_paths_never_escape(name, tmp_path):
    cache = LocalFileCache(tmp_path / "cache", 10**9)
    try:
        path = cache.path_for(name, "http://127.0.0.1:1/../../..")
    except PS1DaskError:
        return
    assert _inside(path, cache.directory), path
    assert "\n" not in path.name and "\x00" not in path.name and ".." not in path.parts


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(max_size=30),
    middle=st.sampled_from(
        [
            "rings.v3.skycell.1405.053.stk.g.unconv.fits",
            "rings.v3.skycell.0001.002.wrp.r.55000_1234.mask.fits",
            "",
        ]
    ),
    suffix=st.text(max_size=10),
    url=st.one_of(st.just("https://ps1images.stsci.edu"), st.text(max_size=20)),
)
def test_property_cache_paths_stay_inside(prefix, middle, suffix, url):
    directory = Path(tempfile.gettempdir()) / "ps1dask-cache-fuzz"
    cache = LocalFileCache.__new__(LocalFileCache)  # no mkdir: only the path arithmetic
    cache.directory, cache.max_bytes = directory, 0
    try:
        path = cache.path_for(prefix + middle + suffix, url)
    except PS1DaskError:
        return
    assert _inside(path, directory)
    assert path.name == path.name.strip() and path.name.endswith(".fits")


@pytest.mark.parametrize(
    "target",
    [
        "/rings.v3.skycell/1405/053/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/rings.v3.skycell/1405/053/../../../../etc/passwd",
        "/rings.v3.skycell/../../../etc/passwd",
        "/rings.v3.skycell/1405/053/..",
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.g.unconv.fits%00.txt",
        "/rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.g.unconv.fits/../../../../../etc/passwd",
        "/cgi-bin/fitscut.cgi?red=../../../../etc/passwd&ra=332.6&dec=2.2&size=10&format=fits",
        "/cgi-bin/fitscut.cgi?red=/rings.v3.skycell/1405/053/../../../../../etc/passwd&size=10",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/_emulator/../../etc/passwd",
    ],
)
def test_emulator_refuses_path_traversal(job_emulator, target):
    job_emulator.configure(fault_rate=0.0)
    host, port = job_emulator.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", target, skip_accept_encoding=True)  # sent as is, no normalising
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status in (400, 404), (resp.status, body[:200])
    assert b"root:" not in body


def test_emulator_binds_loopback_by_default(emulator_cache):
    from ps1dask.cli import build_parser
    from ps1dask.emulator import Emulator

    emu = Emulator(seed=0, cache_dir=emulator_cache)
    assert emu.host == "127.0.0.1"
    with emu:
        assert emu.url.startswith("http://127.0.0.1:")
    assert build_parser().parse_args(["emulator"]).host == "127.0.0.1"


# --- fuzzing the parsers ------------------------------------------------------------------------

_COLUMN_NAMES = st.sampled_from(
    [
        "ra",
        "dec",
        "RA",
        "Dec",
        "raj2000",
        "dej2000",
        "id",
        "name",
        "skycell",
        "mag",
        "",
        " ra ",
        "ra_deg",
        "dec_deg",
        "objid",
        "0",
        "x",
    ]
)
_CELLS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=12),
    st.sampled_from(
        [
            "05 34 31.94",
            "+22:00:52.2",
            "5h34m31.94s",
            "skycell.1405.053",
            "1405.053",
            "nan",
            "inf",
            "-0",
            "1e400",
            "",
            " ",
            "24:00:00",
            "-90",
            "90.0000001",
        ]
    ),
    st.booleans(),
    st.binary(max_size=6),
)


@st.composite
def _frames(draw):
    names = draw(st.lists(_COLUMN_NAMES, min_size=0, max_size=5))
    n = draw(st.integers(0, 6))
    columns = {}
    for i, name in enumerate(names):
        cells = draw(st.lists(_CELLS, min_size=n, max_size=n))
        columns[(name, i)] = cells
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    frame.columns = [k[0] for k in columns]  # duplicate names allowed
    return frame


def _assert_valid_table(table) -> None:
    assert np.all((table.ra >= 0) & (table.ra < 360))
    assert np.all(np.abs(table.dec) <= 90)
    assert len(set(table.ids)) == len(table)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames())
def test_property_read_positions_dataframes(frame):
    try:
        table = ps1dask.read_positions(frame)
    except (InvalidPositionError, InvalidParameterError):
        return
    _assert_valid_table(table)


_TEXT_LINES = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30),
        st.lists(
            st.sampled_from(
                [
                    "ra",
                    "dec",
                    "id",
                    "10.5",
                    "-5",
                    "nan",
                    '"',
                    "a b",
                    "#",
                    "",
                    "05:34:31.9",
                    "+22 00 52",
                    "skycell.1405.053",
                    "1e999",
                ]
            ),
            max_size=5,
        ).map(",".join),
    ),
    max_size=6,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    lines=_TEXT_LINES,
    header=st.sampled_from(["ra,dec\n", "ra dec id\n", "RA\tDEC\n", "", "# c\nra;dec\n"]),
    suffix=st.sampled_from([".csv", ".txt", ".tsv", ".dat"]),
)
def test_property_read_positions_csv_text(lines, header, suffix, tmp_path):
    path = tmp_path / f"fuzz{suffix}"
    path.write_text(header + "\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        table = ps1dask.read_positions(path)
    except (InvalidPositionError, InvalidParameterError):
        return
    _assert_valid_table(table)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.binary(max_size=300),
    suffix=st.sampled_from([".csv", ".parquet", ".fits", ".xml", ".csv.gz", ".ecsv"]),
)
def test_property_read_positions_garbage_files(content, suffix, tmp_path):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(content)
    try:
        table = ps1dask.read_positions(path)
    except (InvalidPositionError, InvalidParameterError):
        return
    _assert_valid_table(table)


_GOOD_LISTING = (
    " ".join(LISTING_COLUMNS) + "\n"
    "1405 53 332.6 2.2 g 0.0 stack /rings.v3.skycell/1405/053/rings.v3.skycell.1405.053.stk.g.unconv.fits "
    "rings.v3.skycell.1405.053.stk.g.unconv.fits 0\n"
)


@settings(max_examples=200, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=400),
        st.builds(
            lambda cut, junk: _GOOD_LISTING[:cut] + junk,
            st.integers(0, len(_GOOD_LISTING)),
            st.text(max_size=40),
        ),
        st.lists(
            st.sampled_from([*LISTING_COLUMNS, "1405", "x", "nan", "1e999", "-", ",", "\t"]),
            max_size=30,
        ).map(" ".join),
    ),
    sep=st.sampled_from([None, " ", ",", "\t", "comma"]),
)
def test_property_parse_listing_only_bad_response(text, sep):
    try:
        frame = parse_listing(text, sep=sep)
    except BadResponseError:
        return
    assert list(frame.columns) == list(LISTING_COLUMNS)


def _fits_answer(compressed: bool) -> bytes:
    data = np.arange(24 * 20, dtype=np.float32).reshape(20, 24)
    buf = io.BytesIO()
    if compressed:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(buf)
    else:
        fits.PrimaryHDU(data).writeto(buf)
    return buf.getvalue()


_FITS = {False: _fits_answer(False), True: _fits_answer(True)}


@settings(max_examples=150, deadline=None)
@given(compressed=st.booleans(), cut=st.integers(0, 4 * 2880), raw=st.booleans())
def test_property_truncated_fits_answers_raise_or_are_whole(compressed, cut, raw):
    """A FITS answer cut short anywhere raises BadFITSError, or (cut in the padding) gives
    exactly the pixels of the whole answer: never a silently incomplete image."""
    whole = _FITS[compressed]
    try:
        hdu = parse_fits_answer(whole[:cut], "http://emulator/test", raw=raw)
    except BadFITSError:
        return
    expected = parse_fits_answer(whole, "http://emulator/test", raw=raw)
    np.testing.assert_array_equal(hdu.data, expected.data)


@settings(max_examples=150, deadline=None)
@given(
    compressed=st.booleans(),
    flips=st.lists(
        st.tuples(st.integers(0, 4 * 2880), st.integers(0, 255)), min_size=1, max_size=6
    ),
    raw=st.booleans(),
)
def test_property_garbled_fits_answers_raise_only_bad_fits(compressed, flips, raw):
    body = bytearray(_FITS[compressed])
    for pos, value in flips:
        if pos < len(body):
            body[pos] = value
    try:
        hdu = parse_fits_answer(bytes(body), "http://emulator/test", raw=raw)
    except BadFITSError:
        return
    assert hdu.data.ndim == 2


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=6000), raw=st.booleans())
def test_property_garbage_answers_raise_only_bad_fits(body, raw):
    with pytest.raises(BadFITSError):
        parse_fits_answer(body, "http://emulator/test", raw=raw)
    with pytest.raises(BadFITSError):  # a FITS-looking start does not help
        parse_fits_answer(b"SIMPLE  =                    T" + body, "http://emulator/test", raw=raw)


def test_fits_answer_parser_accepts_the_untouched_answers():
    for compressed, body in _FITS.items():
        hdu = parse_fits_answer(body, "http://emulator/test", raw=False)
        assert hdu.data.shape == (20, 24), compressed
        with pytest.raises(BadFITSError):
            parse_fits_answer(body[: len(body) // 2], "http://emulator/test", raw=False)


def _compressed_answer(rows: int, cols: int) -> bytes:
    """A tiny compressed FITS answer (zeros compress ~1000:1) declaring a large image."""
    buf = io.BytesIO()
    data = np.zeros((rows, cols), dtype=np.int16)
    hdu = fits.CompImageHDU(data, compression_type="GZIP_1", tile_shape=(rows, cols))
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def test_fits_answer_declaring_a_larger_image_is_refused_before_decompressing():
    """A hostile or broken answer declaring a huge image (ZNAXISn) is checked against the
    requested shape from its header alone: its data are never decompressed."""
    import tracemalloc

    body = _compressed_answer(4000, 4000)  # 32 MB of pixels in ~50 kB
    assert len(body) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(BadFITSError, match=r"\(4000, 4000\).*\(20, 24\)"):
            parse_fits_answer(body, "http://emulator/test", raw=False, expected_shape=(20, 24))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"parsing allocated {peak} bytes: the data were decompressed"
    # the same answer with the matching request decodes (the check is not a blanket refusal)
    hdu = parse_fits_answer(body, "http://emulator/test", raw=True, expected_shape=(4000, 4000))
    assert hdu.data.shape == (4000, 4000) and not hdu.data.any()


def test_fits_answer_beyond_the_pixel_cap_is_refused_before_decompressing():
    body = _compressed_answer(64, 64)
    with (
        dask.config.set({"ps1dask.http.max-answer-pixels": 64 * 63}),
        pytest.raises(BadFITSError, match="4096 pixels"),
    ):
        parse_fits_answer(body, "http://emulator/test", raw=False)
    assert parse_fits_answer(body, "http://emulator/test", raw=False).data.shape == (64, 64)
