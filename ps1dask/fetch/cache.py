"""A bounded on-disk cache of whole skycell files, shared by the worker processes of a host.

Files are named from the parsed PS1 file name (never from a raw server path), written to a
temporary file and renamed into place, and guarded by a per-file lock so that concurrent
workers download each file once. When the cache grows past its byte budget, the least
recently used files are deleted (open readers keep their data: POSIX unlink semantics).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import dask.config

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions import parse_filename


class Downloader(Protocol):
    url: str

    def download(self, filename: str, dest: str | Path) -> Path: ...


def default_cache_directory() -> Path:
    """``ps1dask.cache.directory``, else a per-user directory in the system temp dir."""
    configured = dask.config.get("ps1dask.cache.directory", None)
    if configured:
        return Path(configured).expanduser()
    return Path(tempfile.gettempdir()) / f"ps1dask-cache-{os.getuid()}"


class LocalFileCache:
    """Whole files of the service, by PS1 file name, within ``max_bytes`` on disk."""

    def __init__(self, directory: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_directory()
        self.max_bytes = int(
            max_bytes if max_bytes is not None else dask.config.get("ps1dask.cache.max-bytes")
        )
        self.directory.mkdir(parents=True, exist_ok=True)

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
        return self.path_for(filename, service_url).exists()

    @contextlib.contextmanager
    def _lock(self, path: Path) -> Iterator[None]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def open(self, filename: str, service: Downloader) -> tuple[BinaryIO, bool]:
        """Open the cached file, downloading it first if needed.

        Returns ``(file, downloaded)``; the caller closes the file. Holding it open keeps the
        data readable even if another process evicts the file meanwhile.
        """
        path = self.path_for(filename, service.url)
        downloaded = False
        with self._lock(path):
            if not path.exists():
                service.download(filename, path)
                downloaded = True
            handle = open(path, "rb")  # noqa: SIM115 - returned to the caller
            os.utime(path)  # mark as recently used
        if downloaded:
            self._evict(keep=path)
        return handle, downloaded

    def _evict(self, keep: Path) -> None:
        files = [p for p in self.directory.rglob("*.fits") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        if total <= self.max_bytes:
            return
        for p in sorted(files, key=lambda q: q.stat().st_mtime):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                size = p.stat().st_size
                p.unlink()
                total -= size
