"""A bounded on-disk cache of whole skycell files, shared by every process of a user on a host.

Layout, and the only files the cache ever deletes::

    <directory>/<service: 12 hex digits>/<projcell: 4 digits>/<subcell: 3 digits>/<PS1 name>
    ... and next to each file its lock, ``<PS1 name>.lock``

Files are named from the parsed PS1 file name (never from a raw server path), downloaded to
a temporary file and renamed into place. Each file has a lock file (``flock``), opened
without following symlinks:

- a reader holds it shared (``LOCK_SH``) for as long as it uses the file, so any number of
  units, threads and processes read one file at once;
- the process that downloads a missing file holds it exclusive, so a file is downloaded once
  however many processes want it at the same time;
- eviction takes it exclusive *without waiting* (``LOCK_NB``) and skips files in use: a
  running job never loses a file from under it, and the cache may stay above its budget
  while its working set is larger than the budget.

When the cache outgrows its byte budget after a download, the least recently used files that
nobody uses are deleted; one process evicts at a time (a cache-wide lock), and every file
may vanish between listing and deleting (another job's ``ps1dask cache clear``, say), which
eviction takes in its stride. An open file stays readable if it is deleted anyway (POSIX
unlink semantics).

The directory must belong to the user and be writable by nobody else, and must not be a
symlink: its files are served as PS1 data, and anyone who can write there can plant files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dask.config
import platformdirs

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions import parse_filename
from ps1dask.exceptions import FileCacheError, PS1DaskError

_SERVICE_DIR = re.compile(r"[0-9a-f]{12}")
_PROJCELL_DIR = re.compile(r"[0-9]{4}")
_SUBCELL_DIR = re.compile(r"[0-9]{3}")
_LOCK_SUFFIX = ".lock"
#: Held while evicting: one evictor at a time, so two never count the same bytes as freed.
_EVICTION_LOCK = ".eviction.lock"
#: Lock files: created private, never through a symlink, not inherited by child processes.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


class Downloader(Protocol):
    url: str

    def download(self, filename: str, dest: str | Path) -> Path: ...


def default_cache_directory() -> Path:
    """``ps1dask.cache.directory``, else the user's cache directory (platform conventions:
    ``$XDG_CACHE_HOME/ps1dask``, by default ``~/.cache/ps1dask``, on Linux)."""
    configured = dask.config.get("ps1dask.cache.directory", None)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("ps1dask", appauthor=False))


def private_directory(directory: Path) -> Path:
    """Create ``directory`` (mode 0700) if missing; refuse it unless it is a real directory
    (not a symlink) owned by this user and writable by nobody else. Returns it."""
    if not os.path.lexists(directory):
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            directory.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another process made it meanwhile: checked below like any other
        except OSError as err:
            raise FileCacheError(
                f"cannot create the whole-file cache directory {directory}: {err}"
            ) from err
    fix = "choose another with --cache-dir or ps1dask.cache.directory"
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode):
        raise FileCacheError(
            f"the whole-file cache directory {directory} is a symlink; give its real path "
            f"({os.path.realpath(directory)}) if you trust it, or {fix}"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise FileCacheError(f"the whole-file cache directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise FileCacheError(
            f"the whole-file cache directory {directory} belongs to another user (uid "
            f"{info.st_uid}): its files would be trusted as PS1 data; {fix}"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FileCacheError(
            f"the whole-file cache directory {directory} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}): its files would be trusted as PS1 data; run "
            f"'chmod go-w {directory}' or {fix}"
        )
    return directory


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + _LOCK_SUFFIX)


def _acquire(lock: Path, operation: int) -> int | None:
    """A descriptor of ``lock`` locked with ``operation``; ``None`` if ``LOCK_NB`` and busy.

    An evictor deletes a lock file while it holds it: a lock taken on a file that is no
    longer (or no more the same file) at ``lock`` protects nothing, so try again."""
    while True:
        try:
            fd = os.open(lock, _LOCK_FLAGS, 0o600)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise FileCacheError(f"refusing the lock file {lock}: it is a symlink") from err
            raise
        try:
            fcntl.flock(fd, operation)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _wait_for(lock: Path, operation: int) -> int:
    """:func:`_acquire`, waiting as long as it takes."""
    fd = _acquire(lock, operation)
    assert fd is not None, "only LOCK_NB returns without the lock"
    return fd


class CachedFile(io.BufferedReader):
    """A cached file open for reading; it is not evicted until closed."""

    _lock_fd: int = -1

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the shared lock
                self._lock_fd = -1


@dataclass(frozen=True)
class CacheEntry:
    """One file of the cache: its path, size (bytes) and last use (POSIX seconds)."""

    path: Path
    size: int
    used: float


@dataclass(frozen=True)
class CacheInfo:
    """What ``ps1dask cache info`` reports."""

    directory: Path
    max_bytes: int
    files: int
    bytes: int

    def __str__(self) -> str:
        return (
            f"directory  {self.directory}\n"
            f"files      {self.files}\n"
            f"size       {self.bytes / 1e9:.3f} GB of a {self.max_bytes / 1e9:.3f} GB budget "
            f"(ps1dask.cache.max-bytes)"
        )


@dataclass(frozen=True)
class EvictionResult:
    """Files deleted (and their bytes), files skipped because a job was using them."""

    removed: int
    freed: int
    busy: int


class LocalFileCache:
    """Whole files of the service, by PS1 file name, within ``max_bytes`` on disk.

    ``directory`` defaults to :func:`default_cache_directory`; it is created private (0700)
    and refused (:class:`~ps1dask.exceptions.FileCacheError`) unless it is safe to trust.
    """

    def __init__(self, directory: str | Path | None = None, max_bytes: int | None = None) -> None:
        root = Path(directory).expanduser() if directory is not None else default_cache_directory()
        self.directory = private_directory(root)
        self.max_bytes = int(
            max_bytes if max_bytes is not None else dask.config.get("ps1dask.cache.max-bytes")
        )

    def path_for(self, filename: str, service_url: str) -> Path:
        """Cache path of a service file name; foreign names raise before touching the disk.

        Files of different services (e.g. STScI and an emulator) never share a path.
        """
        name = parse_filename(filename)
        short = filename.rsplit("/", 1)[-1]
        sid = name.skycell
        service = hashlib.sha1(service_url.encode()).hexdigest()[:12]
        return self.directory / service / f"{sid.projcell:04d}" / f"{sid.subcell:03d}" / short

    def contains(self, filename: str, service_url: str) -> bool:
        return _is_regular_file(self.path_for(filename, service_url))

    def open(self, filename: str, service: Downloader) -> tuple[CachedFile, bool]:
        """Open the cached file, downloading it first if needed.

        Returns ``(file, downloaded)``. The file is not evicted until the caller closes it.
        Errors of the cache's own directory raise :class:`FileCacheError`; the service's
        errors pass through.
        """
        path = self.path_for(filename, service.url)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, downloaded = self._open(filename, path, service)
        except PS1DaskError:
            raise
        except OSError as err:
            raise FileCacheError(
                f"the whole-file cache {self.directory} failed on {path.name}: "
                f"{type(err).__name__}: {err}"
            ) from err
        if downloaded:
            self.evict()
        return handle, downloaded

    def _open(self, filename: str, path: Path, service: Downloader) -> tuple[CachedFile, bool]:
        lock = _lock_path(path)
        # Most opens find the file: a shared lock lets every reader in at once.
        fd = _wait_for(lock, fcntl.LOCK_SH)
        try:
            downloaded = False
            if not _is_regular_file(path):
                # Missing: download it under the exclusive lock (once for all processes).
                os.close(fd)
                fd = -1
                fd = _wait_for(lock, fcntl.LOCK_EX)
                if not _is_regular_file(path):
                    service.download(filename, path)
                    downloaded = True
            handle = CachedFile(io.FileIO(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "r"))
            os.utime(path)  # recently used
            # Back to shared so that others may read too. Not atomic: an evictor slipping in
            # may delete the file, but what this open handle reads stays intact (POSIX).
            fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        handle._lock_fd = fd
        return handle, downloaded

    # -- listing, eviction ---------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """Every file of the cache's layout (nothing else below the directory is touched)."""
        out: list[CacheEntry] = []
        for service in _subdirectories(self.directory, _SERVICE_DIR):
            for projcell in _subdirectories(service, _PROJCELL_DIR):
                for subcell in _subdirectories(projcell, _SUBCELL_DIR):
                    out.extend(_cell_entries(subcell, projcell.name, subcell.name))
        return out

    def info(self) -> CacheInfo:
        entries = self.entries()
        return CacheInfo(self.directory, self.max_bytes, len(entries), sum(e.size for e in entries))

    def evict(self, max_bytes: int | None = None) -> EvictionResult:
        """Delete least recently used files that no one is using until the cache holds at
        most ``max_bytes`` (default the budget). Safe under any number of concurrent
        processes: files in use are skipped, files that vanish meanwhile are ignored."""
        budget = self.max_bytes if max_bytes is None else max_bytes
        fd = _wait_for(self.directory / _EVICTION_LOCK, fcntl.LOCK_EX)
        try:
            entries = self.entries()
            total = sum(e.size for e in entries)
            removed = freed = busy = 0
            for entry in sorted(entries, key=lambda e: e.used):
                if total <= budget:
                    break
                if self._remove_unless_busy(entry.path):
                    removed += 1
                    freed += entry.size
                    total -= entry.size
                else:
                    busy += 1  # in use: stays, and older files that are not go instead
            return EvictionResult(removed, freed, busy)
        finally:
            os.close(fd)

    def clear(self) -> EvictionResult:
        """Delete every file of the cache that no running job is using."""
        return self.evict(0)

    @staticmethod
    def _remove_unless_busy(path: Path) -> bool:
        lock = _lock_path(path)
        fd = _acquire(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            return False
        try:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            # deleted while held: the next user makes a new lock file (see _acquire)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            return True
        finally:
            os.close(fd)


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _subdirectories(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Real subdirectories (not symlinks) whose names match ``pattern``."""
    try:
        with os.scandir(directory) as it:
            return [
                Path(e.path)
                for e in it
                if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _cell_entries(directory: Path, projcell: str, subcell: str) -> Iterator[CacheEntry]:
    """Regular files of one skycell directory named as that skycell's PS1 files."""
    try:
        with os.scandir(directory) as it:
            found = [e for e in it if e.name.endswith(".fits")]
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in found:
        try:
            sid = parse_filename(e.name).skycell
        except PS1DaskError:
            continue
        if (f"{sid.projcell:04d}", f"{sid.subcell:03d}") != (projcell, subcell):
            continue
        try:
            info = e.stat(follow_symlinks=False)
        except FileNotFoundError:  # deleted since the listing (another evictor, a clear)
            continue
        if stat.S_ISREG(info.st_mode):
            yield CacheEntry(Path(e.path), info.st_size, info.st_mtime)
