"""The whole-file cache of the skycell strategy: eviction shared by concurrent processes and
jobs, files in use kept, only the cache's own files touched, a directory safe to trust."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _jobs import assert_same_store, positions_in_one_skycell

import ps1dask
from ps1dask.cli import main as cli_main
from ps1dask.client import PS1Service
from ps1dask.conventions import image_filename
from ps1dask.exceptions import FileCacheError
from ps1dask.fetch.cache import LocalFileCache, default_cache_directory
from ps1dask.tessellation import SkycellId

#: A service that is never asked for anything: every file these tests open is already cached.
UNUSED_SERVICE = PS1Service("http://127.0.0.1:9")


def _short(sid: SkycellId, band: str) -> str:
    """A stack's file name without its directories."""
    return image_filename(sid, band).rsplit("/", 1)[-1]


def _names(n: int, band: str = "r") -> list[str]:
    """``n`` distinct PS1 stack file names."""
    return [_short(SkycellId(1000 + k // 100, k % 100), band) for k in range(n)]


def _plant(cache: LocalFileCache, names: list[str], size: int, url: str = "http://old") -> list:
    """Sparse files of ``size`` bytes at the cache paths of ``names``, oldest first."""
    paths = []
    t0 = time.time() - 86400
    for k, name in enumerate(names):
        path = cache.path_for(name, url)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.truncate(size)
        os.utime(path, (t0 + k, t0 + k))
        paths.append(path)
    return paths


def _run_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


_PLANT_AND_EVICT = """
import json, sys, time
from pathlib import Path
from ps1dask.fetch.cache import LocalFileCache
directory, go, me, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cache = LocalFileCache(directory, 0)
(go.parent / f"ready-{me}").touch()
while not go.exists():
    time.sleep(0.001)
planted = removed = 0
for _ in range(rounds):
    for k in range(100):
        path = cache.path_for(f"rings.v3.skycell.{1000 + me}.{k:03d}.stk.g.unconv.fits", "http://a")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.truncate(1 << 20)
        planted += 1
    removed += cache.evict().removed
print(json.dumps([planted, removed]))
"""


def test_processes_evicting_at_once_never_trip_over_each_other(tmp_path):
    """Four processes keep adding files to one directory and evicting them, all at once (the
    issue: a stat of a file another process had just deleted raised FileNotFoundError, and
    failed the job)."""
    cache = LocalFileCache(tmp_path / "cache", 0)
    go = tmp_path / "go"
    procs = [
        _run_python(_PLANT_AND_EVICT, str(cache.directory), str(go), str(i), "10") for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(4)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out))
    # every file planted was deleted exactly once, by one of the processes
    assert sum(r[1] for r in results) == sum(r[0] for r in results) == 4 * 10 * 100
    assert cache.info().files == 0
    assert not list(cache.directory.rglob("*.fits.lock"))


_HOLD_OPEN = """
import sys
from ps1dask.client import PS1Service
from ps1dask.fetch.cache import LocalFileCache
cache = LocalFileCache(sys.argv[1], 0)
handle, downloaded = cache.open(sys.argv[2], PS1Service("http://127.0.0.1:9"))
print(downloaded, handle.read(4).hex(), flush=True)
sys.stdin.read()  # hold the file until the test closes our stdin
handle.close()
"""


def test_a_file_in_use_by_another_process_is_not_evicted(tmp_path):
    cache = LocalFileCache(tmp_path / "cache", 0)
    names = _names(5)
    paths = _plant(cache, names, 4096, url=UNUSED_SERVICE.url)
    paths[0].write_bytes(b"SIMPLE" + bytes(4090))  # the oldest file: first to go
    reader = subprocess.Popen(
        [sys.executable, "-c", _HOLD_OPEN, str(cache.directory), names[0]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert reader.stdout.readline().split() == [b"False", b"53494d50"]  # "SIMP"
        result = cache.evict()
        assert (result.removed, result.busy) == (4, 1)
        assert paths[0].exists() and not any(p.exists() for p in paths[1:])
        # readers share it: this process opens it too while the other holds it
        handle, downloaded = cache.open(names[0], UNUSED_SERVICE)
        with handle:
            assert not downloaded and handle.read(6) == b"SIMPLE"
    finally:
        reader.communicate(b"", timeout=60)
    assert reader.returncode == 0
    # nobody reads it any more: it goes
    assert cache.evict().removed == 1 and not paths[0].exists()


def test_a_file_this_process_reads_is_kept_until_closed(tmp_path):
    cache = LocalFileCache(tmp_path / "cache", 0)
    names = _names(2)
    paths = _plant(cache, names, 1000, url=UNUSED_SERVICE.url)
    handle, _ = cache.open(names[0], UNUSED_SERVICE)
    assert cache.clear().busy == 1 and paths[0].exists() and not paths[1].exists()
    handle.close()
    assert cache.clear().removed == 1 and not paths[0].exists()


def test_eviction_touches_only_the_cache_layout(tmp_path):
    """A user's --cache-dir ~/data keeps every file that is not the cache's own."""
    data = tmp_path / "data"
    cache = LocalFileCache(data, 0)
    name = _names(1)[0]
    [ours] = _plant(cache, [name], 100)
    outside = tmp_path / "precious.fits"
    outside.write_bytes(b"precious")
    svc = ours.parent.parent.parent
    keep = [
        data / "my-image.fits",
        data / name,  # a PS1 name, but not where the cache puts it
        svc / "1405" / "053" / "notes.fits",  # not a PS1 name
        svc / "1405" / "053" / name,  # a PS1 name in another skycell's directory
        data / "projects" / "1405" / "053" / _short(SkycellId(1405, 53), "g"),
    ]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"user data")
    # symlinks, to a file and to a directory outside, are never followed nor deleted
    link = ours.with_name(_short(SkycellId(1000, 0), "i"))
    link.symlink_to(outside)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "1000" / "000").mkdir(parents=True)
    (elsewhere / "1000" / "000" / name).write_bytes(b"user data")
    keep.append(elsewhere / "1000" / "000" / name)
    (data / "0123456789ab").symlink_to(elsewhere, target_is_directory=True)
    result = cache.clear()
    assert result.removed == 1 and not ours.exists()
    assert all(p.read_bytes() == b"user data" for p in keep)
    assert link.is_symlink() and outside.read_bytes() == b"precious"


def test_cache_directory_must_be_private_and_the_users(tmp_path, monkeypatch):
    made = LocalFileCache(tmp_path / "new" / "cache", 10).directory
    assert stat.S_IMODE(os.stat(made).st_mode) == 0o700

    for mode in (0o770, 0o707, 0o777):
        loose = tmp_path / f"loose-{mode:o}"
        loose.mkdir()
        loose.chmod(mode)
        with pytest.raises(FileCacheError, match=f"writable by other users.*chmod go-w {loose}"):
            LocalFileCache(loose, 10)

    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    with pytest.raises(FileCacheError, match="is a symlink"):
        LocalFileCache(tmp_path / "link", 10)

    foreign = tmp_path / "foreign"
    if os.geteuid() == 0:
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
    else:
        foreign = Path("/")  # root's
    with pytest.raises(FileCacheError, match="belongs to another user"):
        LocalFileCache(foreign, 10)

    # the default: the platform's per-user cache directory, honouring XDG_CACHE_HOME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert default_cache_directory() == tmp_path / "xdg" / "ps1dask"
    assert LocalFileCache(None, 10).directory == default_cache_directory()


def test_lock_files_are_never_followed_through_symlinks(tmp_path):
    cache = LocalFileCache(tmp_path / "cache", 10**9)
    name = _names(1)[0]
    [path] = _plant(cache, [name], 100, url=UNUSED_SERVICE.url)
    lock = path.with_name(path.name + ".lock")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    lock.symlink_to(victim)
    with pytest.raises(FileCacheError, match="symlink"):
        cache.open(name, UNUSED_SERVICE)
    with pytest.raises(FileCacheError, match="symlink"):
        cache.clear()
    assert victim.read_bytes() == b"keep" and path.exists()
    # a dangling one is not created through either
    lock.unlink()
    lock.symlink_to(tmp_path / "planted")
    with pytest.raises(FileCacheError, match="symlink"):
        cache.open(name, UNUSED_SERVICE)
    assert not (tmp_path / "planted").exists()


def test_cache_cli_info_and_clear(tmp_path, capsys):
    cache = LocalFileCache(tmp_path / "cache", 10**9)
    _plant(cache, _names(3), 2_000_000)
    (cache.directory / "mine.fits").write_bytes(b"kept")
    assert cli_main(["cache", "info", "--cache-dir", str(cache.directory)]) == 0
    out = capsys.readouterr().out
    assert str(cache.directory) in out and "files      3" in out and "0.006 GB" in out
    assert cli_main(["cache", "clear", "--cache-dir", str(cache.directory)]) == 0
    assert "removed 3 files (0.006 GB)" in capsys.readouterr().out
    assert cache.info().files == 0 and (cache.directory / "mine.fits").exists()

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert cli_main(["cache", "info", "--cache-dir", str(loose)]) == 1
    assert "writable by other users" in capsys.readouterr().err


# -- two jobs of two worker processes each, sharing a cache smaller than they need ----------


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


@pytest.mark.slow
@pytest.mark.timeout(900)  # three jobs, two of them starting clusters; minutes on a busy box
def test_two_jobs_share_a_cache_smaller_than_their_working_set(emu, dask_client, tmp_path):
    """The issue's failure: a cache over its budget, holding older files, and skycell jobs
    whose worker processes evict at the same time. Both jobs complete, exactly as server
    cutouts would give."""
    table = positions_in_one_skycell(12, seed=11)
    table.to_csv(tmp_path / "positions.csv", index=False)
    cache = LocalFileCache(tmp_path / "cache", 1)
    old = _plant(cache, _names(400), 10 << 20)  # 4 GB of older (sparse) files
    reference = tmp_path / "cutout.zarr"
    ps1dask.cutouts(
        table,
        reference,
        filters="r",
        size=20,
        strategy="cutout",
        service=emu.url,
        client=dask_client,
        progress=False,
    )
    # a budget of one byte: every download evicts every file no unit is reading right now
    env = {**os.environ, "DASK_PS1DASK__CACHE__MAX_BYTES": "1"}
    jobs = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "ps1dask", "cutouts", str(tmp_path / "positions.csv")),
                *("-o", str(tmp_path / f"job{j}.zarr"), "--strategy", "skycell"),
                *("--workers", "2", "--filters", "r", "--size", "20", "--unit-size", "3"),
                *("--service", emu.url, "--cache-dir", str(cache.directory)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for j in range(2)
    ]
    for proc in jobs:
        out, err = proc.communicate(timeout=280)
        assert proc.returncode == 0, (out.decode(), err.decode()[-3000:])
        assert b"ok 12" in out
    for j in range(2):
        assert_same_store(reference, tmp_path / f"job{j}.zarr")
    assert not any(p.exists() for p in old)
    assert cache.info().files <= 1  # the file units were reading at the last eviction
    assert emu.metrics()["max_in_flight"] <= 10


def test_a_job_blames_an_unsafe_cache_not_the_disk(emu, dask_client, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(FileCacheError, match=f"{shared} is writable by other users") as info:
        ps1dask.cutouts(
            positions_in_one_skycell(3),
            tmp_path / "s.zarr",
            filters="r",
            size=20,
            strategy="skycell",
            service=emu.url,
            client=dask_client,
            cache_dir=shared,
            progress=False,
        )
    assert "full disk" not in str(info.value)
    assert not list(shared.iterdir())
