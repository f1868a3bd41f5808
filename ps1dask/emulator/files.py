"""Whole skycell files of the emulator, rendered once and kept on disk.

A file is what STScI serves: an empty primary HDU, then the image as a tile-compressed HDU
(RICE_1, one tile per image row) holding the raw 16-bit integers with BZERO/BSCALE/_BLANK
and the header of :meth:`SyntheticSky.image_header` (obsolete PC keywords, no RADESYS, no
TIMESYS, asinh keywords on stacks). ``fits.open(path, do_not_scale_image_data=True)[1].data``
equals :meth:`SyntheticSky.render_whole` exactly.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO

import dask.config
import numpy as np
from astropy.io import fits

import ps1dask.config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.emulator.sky import ImageRef, SyntheticSky
from ps1dask.exceptions import InvalidParameterError

__all__ = ["WholeFileCache"]

# keywords astropy derives from the data (or that must follow it); set from the header after
_STRUCTURAL = (
    "SIMPLE",
    "XTENSION",
    "BITPIX",
    "NAXIS",
    "NAXIS1",
    "NAXIS2",
    "PCOUNT",
    "GCOUNT",
    "EXTEND",
)
_SCALING = ("BSCALE", "BZERO")


def _compressed_hdu(raw: np.ndarray, header: fits.Header) -> fits.CompImageHDU:
    """The tile-compressed image HDU of raw int16 pixels with the image header."""
    if raw.dtype != np.int16 or raw.ndim != 2:
        raise ValueError(f"expected a 2-d int16 image, got {raw.dtype} {raw.shape}")
    base = fits.Header()
    for card in header.cards:
        if card.keyword in _STRUCTURAL or card.keyword in _SCALING:
            continue
        base.append(card)
    hdu = fits.CompImageHDU(
        data=np.ascontiguousarray(raw),
        header=base,
        compression_type="RICE_1",
        tile_shape=(1, raw.shape[1]),
    )
    # astropy drops BZERO/BSCALE given with integer data it is not asked to scale: add them
    # back afterwards, so the raw integers are stored untouched and the keywords say how to
    # read them.
    after = "GCOUNT"
    for key in _SCALING:
        if key in header:
            hdu.header.insert(after, (key, header[key], header.comments[key]), after=True)
            after = key
    return hdu


def _write_whole_file(sky: SyntheticSky, ref: ImageRef, path: str | Path) -> Path:
    """Render ``ref`` and write it as the service's whole file to ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = sky.render_whole(ref)
    header = sky.image_header(ref)
    hdul = fits.HDUList([fits.PrimaryHDU(), _compressed_hdu(raw, header)])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            hdul.writeto(fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


class WholeFileCache:
    """Render each whole file once, on first request, under ``directory``, within a budget.

    Thread-safe: concurrent callers for the same image wait for one render; different images
    render concurrently. Files are written to a temporary name and renamed into place, so a
    reader (or another process sharing the directory) never sees a partial file. Files live
    at ``directory/seed-<seed>/rings.v3.skycell/PPPP/SSS/<shortname>``.

    The files this cache holds total at most ``max_bytes`` (default
    ``ps1dask.emulator.cache-max-bytes``): after each new file, the least recently used
    others are deleted until they fit. :meth:`open` opens a file under the same lock, and
    POSIX keeps an open file readable after its deletion, so a file being sent is never cut
    short by an eviction. Sizes of files once rendered are remembered (:meth:`known_size`),
    so a HEAD needs no render after an eviction.

    A file's size is that of its RICE-compressed pixels: it cannot be known without rendering
    them. :attr:`renders` counts whole-file renders and :attr:`max_rendering` the most at
    once (the service bounds them, see ``Service.open_file``).
    """

    def __init__(
        self, sky: SyntheticSky, directory: str | Path, max_bytes: int | None = None
    ) -> None:
        self.sky = sky
        self.directory = Path(directory)
        if max_bytes is None:
            max_bytes = int(dask.config.get("ps1dask.emulator.cache-max-bytes"))
        if int(max_bytes) < 0:
            raise InvalidParameterError(f"cache max_bytes={max_bytes!r} must be >= 0")
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._locks: dict[ImageRef, threading.Lock] = {}
        #: path -> size of the files on disk, least recently used first
        self._files: OrderedDict[Path, int] = OrderedDict()
        self._sizes: dict[ImageRef, int] = {}
        #: whole files rendered so far, and the most rendered at once
        self.renders = 0
        self.rendering = 0
        self.max_rendering = 0

    @property
    def total_bytes(self) -> int:
        """Bytes of the files the cache holds now."""
        with self._lock:
            return sum(self._files.values())

    def _target(self, ref: ImageRef) -> Path:
        return self.directory / f"seed-{self.sky.seed}" / ref.filename.lstrip("/")

    def _cached(self, ref: ImageRef) -> Path | None:
        """The file's path if it is already rendered, else None (never renders)."""
        target = self._target(ref)
        return target if target.exists() else None

    def known_size(self, ref: ImageRef) -> int | None:
        """Size in bytes of ``ref``'s file if it was ever rendered here, else None."""
        with self._lock:
            size = self._sizes.get(ref)
        if size is None:
            target = self._cached(ref)
            if target is not None:
                size = target.stat().st_size
        return size

    def path(self, ref: ImageRef) -> Path:
        """Path of the whole file of ``ref``, rendering and writing it on first use.

        Raises :class:`~ps1dask.exceptions.NotFoundError` for files the service does not have.
        The file may be evicted later: to read it, use :meth:`open`.
        """
        target = self._target(ref)
        if target.exists():
            self._touch(ref, target)
            return target
        self.sky.check(ref)
        with self._lock:
            lock = self._locks.setdefault(ref, threading.Lock())
        with lock:
            if not target.exists():
                with self._lock:
                    self.renders += 1
                    self.rendering += 1
                    self.max_rendering = max(self.max_rendering, self.rendering)
                try:
                    _write_whole_file(self.sky, ref, target)
                finally:
                    with self._lock:
                        self.rendering -= 1
        with self._lock:
            self._locks.pop(ref, None)
        self._touch(ref, target)
        self._evict(keep=target)
        return target

    def open_existing(self, ref: ImageRef) -> tuple[BinaryIO, int] | None:
        """``(open file, size)`` of ``ref``'s file if it is on disk now, else None (no render)."""
        target = self._target(ref)
        with self._lock:  # no eviction between the check and the open
            try:
                fh = open(target, "rb")  # noqa: SIM115 - the caller closes it
            except FileNotFoundError:
                return None
        self._touch(ref, target)
        return fh, os.fstat(fh.fileno()).st_size

    def open(self, ref: ImageRef) -> tuple[BinaryIO, int]:
        """``(open file, size)`` of ``ref``'s whole file (rendered if needed); close it."""
        for _ in range(3):
            target = self.path(ref)
            with self._lock:  # no eviction between the check and the open
                try:
                    fh = open(target, "rb")  # noqa: SIM115 - the caller closes it
                except FileNotFoundError:
                    continue  # evicted (another process?) before we got here: render again
                return fh, os.fstat(fh.fileno()).st_size
        raise FileNotFoundError(f"{target}: removed as soon as it was written, three times")

    def _touch(self, ref: ImageRef, target: Path) -> None:
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            return
        with self._lock:
            self._files[target] = size
            self._files.move_to_end(target)
            self._sizes[ref] = size

    def _evict(self, keep: Path) -> None:
        """Delete least recently used files until the others fit the budget."""
        with self._lock:
            total = sum(self._files.values())
            for path in list(self._files):
                if total <= self.max_bytes:
                    break
                if path == keep:
                    continue
                total -= self._files.pop(path)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def _clear(self) -> None:
        """Delete every file this cache wrote for its sky's seed."""
        import shutil

        with self._lock:
            self._files.clear()
        shutil.rmtree(self.directory / f"seed-{self.sky.seed}", ignore_errors=True)
