"""Whole skycell files of the emulator, rendered once and kept on disk.

A file is what STScI serves: an empty primary HDU, then the image as a tile-compressed HDU
(RICE_1, one tile per image row) holding the raw 16-bit integers with BZERO/BSCALE/_BLANK
and the header of :meth:`SyntheticSky.image_header` (obsolete PC keywords, no RADESYS, no
TIMESYS, asinh keywords on stacks). ``fits.open(path, do_not_scale_image_data=True)[1].data``
equals :meth:`SyntheticSky.render_whole` exactly.

Every file reserves its heap for the worst case: ``PCOUNT`` counts the bytes each row takes
in RICE's high-entropy form (16 bits a pixel, plus each block's code and the row's first
pixel), and the compressed tiles, which always fit, leave the rest of it as a gap of zeros
(FITS allows a heap with unused space). So a file's size follows from its header and shape
alone (:func:`whole_file_size`): a HEAD or a listing needs no render. The price is about 15%
more bytes for the emulator's noise-dominated pixels, which compress to ~1.75 bytes a pixel.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dask.config
import numpy as np
from astropy.io import fits

import ps1dask.config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.emulator.sky import ImageRef, SyntheticSky
from ps1dask.exceptions import InvalidParameterError

__all__ = ["WholeFileCache", "whole_file_size"]

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
_BLOCK = 2880
_CARD = 80
#: RICE_1's block of pixels and the bits of its per-block code for 16-bit pixels (ZVAL1 and
#: the ``fsbits`` of the algorithm): a block in high-entropy form is that code plus 16 bits
#: a pixel.
_RICE_BLOCK = 32
_RICE_CODE_BITS = 4
#: Most whole-file sizes a cache remembers (a few MB): a HEAD flood over the whole sky must
#: not grow the emulator without bound.
_SIZES_REMEMBERED = 65536


def _padded(n: int) -> int:
    return -(-n // _BLOCK) * _BLOCK


def reserved_row_bytes(width: int) -> int:
    """Heap bytes reserved for one RICE_1 row of ``width`` 16-bit pixels: the row's first
    pixel (16 bits), then every block in high-entropy form (a 4-bit code and 16 bits a
    pixel), rounded up to whole bytes. Noise-dominated rows take less (~14 bits a pixel)."""
    blocks = -(-width // _RICE_BLOCK)
    return -(-(16 + _RICE_CODE_BITS * blocks + 16 * width) // 8)


@dataclass(frozen=True)
class _TableLayout:
    """Where the parts of a whole file's compressed-image HDU lie (bytes from the start)."""

    pcount_card_at: int
    pcount_card: str
    data_start: int
    table_bytes: int
    pcount: int
    theap: int | None


def _read_header(fh: BinaryIO, at: int) -> tuple[list[str], int]:
    """The card images of the header starting at byte ``at``, and where its data starts."""
    fh.seek(at)
    cards: list[str] = []
    while True:
        block = fh.read(_BLOCK)
        if len(block) < _BLOCK:
            raise ValueError(f"header at byte {at} has no END card")
        for i in range(0, _BLOCK, _CARD):
            card = block[i : i + _CARD].decode("ascii")
            if card.startswith("END") and card[3:].strip() == "":
                return cards, at + _padded(_CARD * (len(cards) + 1))
            cards.append(card)


def _table_layout(fh: BinaryIO) -> _TableLayout:
    """The layout of the second HDU of a whole file (the primary HDU holds no data)."""
    _, ext_at = _read_header(fh, 0)
    cards, data_start = _read_header(fh, ext_at)
    values: dict[str, int] = {}
    pcount_index = -1
    for i, image in enumerate(cards):
        card = fits.Card.fromstring(image)
        if card.keyword in ("NAXIS1", "NAXIS2", "PCOUNT", "THEAP"):
            values[card.keyword] = int(card.value)
            if card.keyword == "PCOUNT":
                pcount_index = i
    if pcount_index < 0:
        raise ValueError("the compressed-image HDU has no PCOUNT card")
    return _TableLayout(
        pcount_card_at=ext_at + _CARD * pcount_index,
        pcount_card=cards[pcount_index],
        data_start=data_start,
        table_bytes=values["NAXIS1"] * values["NAXIS2"],
        pcount=values["PCOUNT"],
        theap=values.get("THEAP"),
    )


def _reserve_heap(fh: BinaryIO, height: int, width: int, name: str) -> int:
    """Grow the heap of the file written in ``fh`` to its reserved size; return the file's
    size. The gap after the tiles is zeros; the table's descriptors are untouched."""
    layout = _table_layout(fh)
    if layout.theap not in (None, layout.table_bytes):
        raise ValueError(f"{name}: THEAP={layout.theap} (the heap must follow the table)")
    reserved = height * reserved_row_bytes(width)
    if layout.pcount > reserved:  # cannot happen for RICE_1 rows; checked, not assumed
        raise ValueError(
            f"{name}: its compressed tiles take {layout.pcount} bytes, "
            f"more than the {reserved} reserved for them"
        )
    card = fits.Card.fromstring(layout.pcount_card)
    card.value = reserved
    fh.seek(layout.pcount_card_at)
    fh.write(card.image.encode("ascii"))
    size = layout.data_start + _padded(layout.table_bytes + reserved)
    fh.truncate(size)
    return size


def whole_file_size(sky: SyntheticSky, ref: ImageRef) -> int:
    """Size in bytes of ``ref``'s whole file, from its header alone (no pixels rendered).

    The table holds one descriptor per image row and the heap each row's reserve
    (:func:`reserved_row_bytes`); the headers' length is that of a one-row file with the same
    header cards (they do not depend on the pixels or the number of rows).
    """
    header = sky.image_header(ref)
    width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
    data_start, row_bytes = _headers_and_row_bytes(header)
    return data_start + _padded(height * (row_bytes + reserved_row_bytes(width)))


#: (cards' keywords and lengths, width) -> (bytes before the table, table bytes per row)
_LAYOUTS: dict[tuple[tuple[tuple[str, int], ...], int], tuple[int, int]] = {}
_LAYOUT_LOCK = threading.Lock()


def _headers_and_row_bytes(header: fits.Header) -> tuple[int, int]:
    """(bytes before the table, table bytes per image row) of a whole file with ``header``.

    They depend only on the cards' keywords and lengths (long strings take several cards)
    and on the width (the tile size): measured once per such header, on a one-row file."""
    width = int(header["NAXIS1"])
    key = (tuple((card.keyword, len(card.image)) for card in header.cards), width)
    with _LAYOUT_LOCK:
        known = _LAYOUTS.get(key)
    if known is not None:
        return known
    one_row = fits.HDUList(
        [fits.PrimaryHDU(), _compressed_hdu(np.zeros((1, width), np.int16), header)]
    )
    buffer = io.BytesIO()
    one_row.writeto(buffer)
    layout = _table_layout(buffer)
    measured = (layout.data_start, layout.table_bytes)  # one row: the bytes of one descriptor
    with _LAYOUT_LOCK:
        if len(_LAYOUTS) >= 256:  # a handful of kinds of header in practice
            _LAYOUTS.clear()
        _LAYOUTS[key] = measured
    return measured


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
        with os.fdopen(fd, "w+b") as fh:
            hdul.writeto(fh)
            _reserve_heap(fh, raw.shape[0], raw.shape[1], path.name)
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
    short by an eviction.

    :meth:`size` gives a file's size without rendering it (see :func:`whole_file_size`), and
    every render is checked to have exactly that size. :attr:`renders` counts whole-file
    renders and :attr:`max_rendering` the most at once (the service bounds them, see
    ``Service.open_file``).
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
        #: computed whole-file sizes, least recently used first (at most _SIZES_REMEMBERED)
        self._sizes: OrderedDict[ImageRef, int] = OrderedDict()
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

    def size(self, ref: ImageRef) -> int:
        """Size in bytes of ``ref``'s whole file, computed from its header: never renders.

        A few milliseconds the first time (a one-row file is written in memory), then
        remembered. ``ref`` must be an image the sky has (see :meth:`SyntheticSky.check`).
        """
        with self._lock:
            size = self._sizes.get(ref)
            if size is not None:
                self._sizes.move_to_end(ref)
                return size
        size = whole_file_size(self.sky, ref)
        with self._lock:
            self._sizes[ref] = size
            while len(self._sizes) > _SIZES_REMEMBERED:
                self._sizes.popitem(last=False)
        return size

    def path(self, ref: ImageRef) -> Path:
        """Path of the whole file of ``ref``, rendering and writing it on first use.

        Raises :class:`~ps1dask.exceptions.NotFoundError` for files the service does not have.
        The file may be evicted later: to read it, use :meth:`open`.
        """
        target = self._target(ref)
        if target.exists():
            self._touch(target)
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
                written, computed = target.stat().st_size, self.size(ref)
                if written != computed:  # what HEADs and listings answered would be wrong
                    target.unlink()
                    raise RuntimeError(
                        f"{ref.filename}: rendered {written} bytes, but its size computed "
                        f"from the header is {computed}"
                    )
        with self._lock:
            self._locks.pop(ref, None)
        self._touch(target)
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
        self._touch(target)
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

    def _touch(self, target: Path) -> None:
        try:
            size = target.stat().st_size
        except FileNotFoundError:
            return
        with self._lock:
            self._files[target] = size
            self._files.move_to_end(target)

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
