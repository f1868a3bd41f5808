"""Read rows of a remote tile-compressed FITS image through byte ranges (the ``range`` strategy).

A PS1 whole skycell file is an empty primary HDU followed by a tile-compressed image stored
as a FITS binary table (``ZIMAGE = T``) with one row per tile. The tiles are full image rows
(``ZTILE1 = ZNAXIS1``, ``ZTILE2 = 1``), so a cutout needs only the tiles of its rows. This
module is pure parsing and decoding: the caller passes ``read_range(start, stop) -> bytes``
returning bytes ``[start, stop)`` of the remote file (one HTTP Range request each, through the
project's throttled client), and the functions here keep the number of calls and bytes low:

1. :meth:`CompressedImageIndex.read`: 1 call in the usual case (``first_read`` bytes cover the
   primary header, the table header and the descriptor table), 2 when the descriptor table
   runs past ``first_read``, one more each time the headers outgrow what was read (the read
   size doubles). The descriptor table of a 6243-row PS1 file is about 50 kB.
2. :meth:`CompressedImageIndex.read_rows`: one call per merged run of tile bytes
   (:meth:`CompressedImageIndex.row_byte_ranges`); for consecutive row tiles, one call.

Decoding has two paths that give the same values. PS1 files are RICE_1-coded integers with
nothing else in the tile table, and their tiles are handed one by one straight to the RICE
decoder of :mod:`imagecodecs` (cfitsio's algorithm, as astropy uses), written into the output
rows in place: about twice as fast as going through astropy, whose per-file overhead dominates
when a job decodes tens of thousands of rows. Everything else uses only the public
:mod:`astropy.io.fits` API: the fetched tiles are wrapped in a
small, valid tile-compressed FITS file built in memory (the original table header with
``NAXIS2``/``ZNAXIS2`` cut down to the tiles read, their table rows with heap descriptors
rebased onto a heap that holds only the fetched bytes, and ``ZDITHER0`` shifted so that
dithered float tiles keep their random sequence), which ``fits.open(...,
do_not_scale_image_data=True)`` decompresses. This was preferred over calling astropy's codecs
directly (``astropy.io.fits.hdu.compressed._codecs`` / ``_tiled_compression``): those are
private and have changed between astropy 5, 6 and 7, while the file format is a standard.
Every compression astropy reads (RICE_1, GZIP_1/2, PLIO_1, HCOMPRESS_1, NOCOMPRESS), ZBLANK
(keyword or column), ZSCALE/ZZERO columns (quantised float data, with or without dither) and
tiles stored in GZIP_COMPRESSED_DATA / UNCOMPRESSED_DATA (astropy's fallback for tiles that do
not quantise) are therefore decoded exactly as astropy decodes the whole file.

Typical use with the cut rule (``rr`` being the client's range reader)::

    index = CompressedImageIndex.read(rr)
    pixels = cut(box, index.naxis1, index.naxis2,
                 lambda rows, cols: linear_pixels(read_region(rr, index, rows, cols), index.header))
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import dask.config
import numpy as np
import numpy.typing as npt
from astropy.io import fits
from imagecodecs import rcomp_decode

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.exceptions import BadFITSError

__all__ = ["CompressedImageIndex", "ReadRange", "merge_spans", "read_region"]

#: ``read_range(start, stop)`` returns bytes ``[start, stop)`` of the remote file (bytes, or
#: a memoryview of a buffer the source already holds: tile bytes are not copied again).
ReadRange = Callable[[int, int], bytes | memoryview]

BLOCK = 2880
_CARD = 80
#: A header larger than this is taken as a broken file rather than read on and on.
MAX_HEADER_BYTES = 4000 * BLOCK
#: Compressions astropy decodes (``RICE_ONE`` is an old alias of ``RICE_1``).
SUPPORTED_COMPRESSIONS = frozenset(
    {"RICE_1", "RICE_ONE", "GZIP_1", "GZIP_2", "PLIO_1", "HCOMPRESS_1", "NOCOMPRESS"}
)
#: The variable-length columns of a compressed image table that hold tile bytes.
HEAP_COLUMNS = ("COMPRESSED_DATA", "GZIP_COMPRESSED_DATA", "UNCOMPRESSED_DATA")
_N_RANDOM = 10000  # length of the FITS dither random sequence
_DITHERED = {"SUBTRACTIVE_DITHER_1", "SUBTRACTIVE_DITHER_2"}
_TFORM = re.compile(r"^\s*(\d*)\s*([LXBIJKAEDCMPQ])(.*)$", re.IGNORECASE)
_ELEMENT_SIZE = {"L": 1, "B": 1, "A": 1, "I": 2, "J": 4, "K": 8, "E": 4, "D": 8, "C": 8, "M": 16}
_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32, -64: np.float64}
_PRIMARY_CARDS = fits.PrimaryHDU().header.tostring().encode("ascii")


# --- reading the headers -------------------------------------------------------------------


class _Window:
    """The bytes read so far: one contiguous window of the file, grown on demand."""

    def __init__(self, read_range: ReadRange, first_read: int) -> None:
        self.read_range = read_range
        self.start = 0
        self.data = b""
        self.eof: int | None = None  # file size, once a read came back short
        self.calls = 0
        self.data = self._fetch(0, first_read)

    @property
    def stop(self) -> int:
        return self.start + len(self.data)

    def _fetch(self, start: int, stop: int) -> bytes:
        if self.eof is not None:
            stop = min(stop, self.eof)
        if stop <= start:
            return b""
        data = bytes(self.read_range(start, stop))
        self.calls += 1
        if len(data) > stop - start:
            raise BadFITSError(
                f"read_range({start}, {stop}) returned {len(data)} bytes, more than asked"
            )
        if len(data) < stop - start:
            self.eof = start + len(data)
        return data

    def get(self, start: int, stop: int, *, grow: int = 0) -> bytes | None:
        """Bytes [start, stop), reading (at least ``grow`` more bytes) if needed; None past EOF."""
        if not (self.start <= start and stop <= self.stop):
            if self.start <= start <= self.stop:  # extend the window
                self.data += self._fetch(self.stop, max(stop, self.stop + grow))
            else:  # jump (only when a primary HDU holds data)
                self.start = start
                self.data = self._fetch(start, max(stop, start + grow))
            if stop > self.stop:
                return None
        return self.data[start - self.start : stop - self.start]


def _read_header(window: _Window, start: int, what: str) -> tuple[fits.Header, int]:
    """Parse the header starting at ``start``; returns it and the offset of its data."""
    end = None
    pos = start
    while end is None:
        block = window.get(pos, pos + BLOCK, grow=max(window.stop - window.start, BLOCK))
        if block is None:
            raise BadFITSError(f"the file ends inside the {what} header (no END card)")
        for i in range(0, BLOCK, _CARD):
            if block[i : i + 8] == b"END     ":
                end = pos + BLOCK
                break
        pos += BLOCK
        if end is None and pos - start > MAX_HEADER_BYTES:
            raise BadFITSError(f"no END card in the first {MAX_HEADER_BYTES} bytes of the {what}")
    raw = window.get(start, end)
    assert raw is not None
    try:
        text = raw.decode("ascii")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy's VerifyWarnings on odd cards
            header = fits.Header.fromstring(text, sep="")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadFITSError(f"the {what} header is not a valid FITS header: {exc}") from exc
    return header, end


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _primary_data_size(header: fits.Header) -> int:
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if header.get("GROUPS", False) and dims[0] == 0:
        dims = dims[1:]
    n = (
        abs(int(header["BITPIX"]))
        // 8
        * int(header.get("GCOUNT", 1))
        * (int(header.get("PCOUNT", 0)) + math.prod(dims))
    )
    return _padded(n)


# --- the binary table layout ---------------------------------------------------------------


@dataclass(frozen=True)
class _HeapColumn:
    name: str
    offset: int  # byte offset of the descriptor in a table row
    wide: bool  # Q (two int64) rather than P (two int32)
    element_size: int  # bytes per heap element (B: 1, I: 2, J: 4, ...)

    @property
    def dtype(self) -> np.dtype:
        k = 8 if self.wide else 4
        return np.dtype(
            {
                "names": ["count", "offset"],
                "formats": [f">i{k}", f">i{k}"],
                "offsets": [0, k],
                "itemsize": 2 * k,
            }
        )


def _table_layout(header: fits.Header) -> tuple[int, list[_HeapColumn]]:
    """Row width computed from the TFORMs, and the tile-bytes (heap) columns."""
    width = 0
    columns = []
    for i in range(1, int(header.get("TFIELDS", 0)) + 1):
        tform = str(header.get(f"TFORM{i}", ""))
        m = _TFORM.match(tform)
        if m is None:
            raise BadFITSError(f"unreadable TFORM{i} = {tform!r}")
        repeat = int(m.group(1)) if m.group(1) else 1
        code = m.group(2).upper()
        name = str(header.get(f"TTYPE{i}", "")).strip().upper()
        if code in "PQ":
            if repeat > 1:
                raise BadFITSError(f"TFORM{i} = {tform!r}: repeat count above 1")
            element = m.group(3).strip()[:1].upper()
            if name in HEAP_COLUMNS and repeat == 1:
                if element not in _ELEMENT_SIZE:
                    raise BadFITSError(f"TFORM{i} = {tform!r}: unsupported element type")
                columns.append(_HeapColumn(name, width, code == "Q", _ELEMENT_SIZE[element]))
            width += repeat * (16 if code == "Q" else 8)
        elif code == "X":
            width += -(-repeat // 8)
        else:
            width += repeat * _ELEMENT_SIZE[code]
    return width, columns


def _descriptors(
    table: bytes | np.ndarray, naxis1: int, column: _HeapColumn
) -> tuple[np.ndarray, np.ndarray]:
    """(count, offset) int64 arrays of one descriptor column of raw table rows."""
    buf = np.frombuffer(table, dtype=np.uint8).reshape(-1, naxis1)
    view = buf[:, column.offset : column.offset + column.dtype.itemsize].copy()
    desc = view.view(column.dtype).reshape(-1)
    return desc["count"].astype(np.int64), desc["offset"].astype(np.int64)


# --- the index ------------------------------------------------------------------------------


def _mini_file(table_header: fits.Header, rows: np.ndarray, heap: bytes | memoryview) -> bytes:
    """A whole FITS file: an empty primary HDU and a compressed table of ``rows`` + ``heap``."""
    body = rows.tobytes() + heap
    return (
        _PRIMARY_CARDS
        + table_header.tostring().encode("ascii")
        + body
        + b"\0" * (_padded(len(body)) - len(body))
    )


def _open_compressed(blob: bytes) -> fits.HDUList:
    return fits.open(io.BytesIO(blob), do_not_scale_image_data=True, memmap=False)


@dataclass(frozen=True, eq=False, repr=False)
class CompressedImageIndex:
    """Where each tile of a remote row-tiled compressed FITS image lies.

    ``header`` is the image header as astropy shows ``CompImageHDU.header`` (NAXIS1/2,
    BZERO/BSCALE/BLANK, BSOFTEN/BOFFSET, WCS keywords), fit for
    :func:`ps1dask.conventions.linear_pixels`; ``table_header`` the raw binary-table header.
    ``tile_offsets``/``tile_sizes`` give, per tile, the file byte span of its heap bytes (its
    COMPRESSED_DATA, or GZIP_COMPRESSED_DATA/UNCOMPRESSED_DATA for tiles stored that way).
    A tile is ``tile_rows`` full image rows (1 for PS1 files); ``table_bytes`` holds the raw
    descriptor table, needed to decode. Compared by identity (it holds numpy arrays).
    """

    header: fits.Header
    naxis1: int
    naxis2: int
    table_header: fits.Header
    data_start: int
    heap_start: int
    tile_offsets: npt.NDArray[np.int64]
    tile_sizes: npt.NDArray[np.int64]
    tile_rows: int = 1
    table_bytes: bytes = field(default=b"")

    def __repr__(self) -> str:
        return (
            f"CompressedImageIndex({self.naxis1}x{self.naxis2}, "
            f"{self.table_header.get('ZCMPTYPE')}, {len(self.tile_sizes)} tiles of "
            f"{self.tile_rows} row(s), heap at byte {self.heap_start}, "
            f"{int(self.tile_sizes.sum())} compressed bytes)"
        )

    @property
    def ntiles(self) -> int:
        return len(self.tile_sizes)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the decoded (raw, unscaled) pixels."""
        return np.dtype(_DTYPES[int(self.table_header["ZBITPIX"])])

    # -- parsing --------------------------------------------------------------------------

    @classmethod
    def read(cls, read_range: ReadRange, *, first_read: int = 65536) -> CompressedImageIndex:
        """Read the headers and the tile descriptors of HDU 1.

        Calls ``read_range`` once when ``first_read`` bytes hold both headers and the
        descriptor table, once more for the rest of the table, and once more per doubling of
        the read size while the headers run past what was read.

        Raises :class:`~ps1dask.exceptions.BadFITSError` for a file that is not FITS, whose
        HDU 1 is not a tile-compressed 2-D image, whose tiles are not full rows, or that this
        module cannot decode exactly.
        """
        window = _Window(read_range, max(int(first_read), BLOCK))
        head = window.get(0, 9)
        if head is None or head != b"SIMPLE  =":
            raise BadFITSError("not a FITS file (it does not start with SIMPLE =)")
        primary, end = _read_header(window, 0, "primary")
        if primary.get("SIMPLE") is not True:
            raise BadFITSError("not a standard FITS file (SIMPLE is not T)")
        ext_start = end + _primary_data_size(primary)
        first = window.get(ext_start, ext_start + 9, grow=BLOCK)
        if first is None:
            raise BadFITSError("the file has no extension HDU 1 (no compressed image)")
        if first != b"XTENSION=":
            raise BadFITSError(f"no extension header at byte {ext_start}")
        th, data_start = _read_header(window, ext_start, "HDU 1")
        naxis1, nrows, columns = cls._check_table_header(th)
        tile_rows = int(th.get("ZTILE2", 1))
        size = naxis1 * nrows
        table = window.get(data_start, data_start + size)
        if table is None:
            raise BadFITSError(
                f"the file ends inside the tile table of HDU 1 (table is bytes "
                f"{data_start}..{data_start + size})"
            )
        heap_start = data_start + int(th.get("THEAP", size))
        pcount = int(th.get("PCOUNT", 0))

        lo = np.full(nrows, np.iinfo(np.int64).max, dtype=np.int64)
        hi = np.zeros(nrows, dtype=np.int64)
        for col in columns:
            count, offset = _descriptors(table, naxis1, col)
            nbytes = count * col.element_size
            if (count < 0).any() or (offset < 0).any():
                raise BadFITSError(f"negative heap descriptor in column {col.name}")
            outside = (offset + nbytes > pcount) & (nbytes > 0)
            if outside.any():
                bad = int(np.argmax(outside))
                raise BadFITSError(
                    f"tile {bad} of {col.name} lies outside the heap (PCOUNT={pcount})"
                )
            used = nbytes > 0
            lo = np.where(used, np.minimum(lo, offset), lo)
            hi = np.where(used, np.maximum(hi, offset + nbytes), hi)
        empty = hi == 0
        if empty.any():
            raise BadFITSError(f"tile {int(np.argmax(empty))} of HDU 1 has no data")
        tile_offsets = heap_start + lo
        tile_sizes = hi - lo

        header_only = th.copy()
        header_only["NAXIS2"] = 0
        header_only["PCOUNT"] = 0
        cls._strip(header_only)
        try:
            with _open_compressed(_mini_file(header_only, np.empty(0, np.uint8), b"")) as hdul:
                hdu = hdul[1]
                if not isinstance(hdu, fits.CompImageHDU):
                    raise BadFITSError("astropy does not read HDU 1 as a compressed image")
                header = hdu.header.copy()
        except BadFITSError:
            raise
        except Exception as exc:  # astropy's errors on malformed compression keywords
            raise BadFITSError(f"astropy cannot read the header of HDU 1: {exc}") from exc

        return cls(
            header=header,
            naxis1=int(th["ZNAXIS1"]),
            naxis2=int(th["ZNAXIS2"]),
            table_header=th,
            data_start=data_start,
            heap_start=heap_start,
            tile_offsets=tile_offsets,
            tile_sizes=tile_sizes,
            tile_rows=tile_rows,
            table_bytes=bytes(table),
        )

    @staticmethod
    def _check_table_header(th: fits.Header) -> tuple[int, int, list[_HeapColumn]]:
        xt = str(th.get("XTENSION", "")).strip()
        if xt != "BINTABLE" or th.get("ZIMAGE") is not True:
            raise BadFITSError(
                f"HDU 1 is not a tile-compressed image (XTENSION={xt!r}, "
                f"ZIMAGE={th.get('ZIMAGE')!r})"
            )
        if int(th.get("ZNAXIS", 0)) != 2:
            raise BadFITSError(f"HDU 1 is not a 2-D image (ZNAXIS={th.get('ZNAXIS')})")
        znaxis1, znaxis2 = int(th["ZNAXIS1"]), int(th["ZNAXIS2"])
        ztile1, ztile2 = int(th.get("ZTILE1", znaxis1)), int(th.get("ZTILE2", 1))
        if ztile1 != znaxis1 or ztile2 < 1:
            raise BadFITSError(
                f"HDU 1 is not tiled by rows (ZTILE1={ztile1}, ZTILE2={ztile2} for a "
                f"{znaxis1}x{znaxis2} image): byte-range reads need full-width row tiles"
            )
        # Checked before any tile is read or decoded: a broken or hostile file declaring a
        # huge image must not make us allocate it.
        limit = int(dask.config.get("ps1dask.http.max-answer-pixels"))
        if znaxis1 < 1 or znaxis2 < 1 or znaxis1 * znaxis2 > limit:
            raise BadFITSError(
                f"HDU 1 declares a {znaxis1}x{znaxis2} image: outside 1 .. "
                f"ps1dask.http.max-answer-pixels = {limit} pixels"
            )
        cmp = str(th.get("ZCMPTYPE", "")).strip().upper()
        if cmp not in SUPPORTED_COMPRESSIONS:
            raise BadFITSError(f"HDU 1 uses an unsupported compression ZCMPTYPE={cmp!r}")
        if int(th.get("ZBITPIX", 0)) not in _DTYPES:
            raise BadFITSError(f"HDU 1 has an invalid ZBITPIX={th.get('ZBITPIX')!r}")
        if "ZSCALE" in th or "ZZERO" in th:
            raise BadFITSError(
                "HDU 1 quantises with ZSCALE/ZZERO header keywords rather than columns; "
                "this reader does not decode that form"
            )
        if int(th.get("NAXIS", 0)) != 2 or int(th.get("GCOUNT", 1)) != 1:
            raise BadFITSError("HDU 1 is not a valid binary table (NAXIS != 2 or GCOUNT != 1)")
        naxis1, nrows = int(th["NAXIS1"]), int(th["NAXIS2"])
        width, columns = _table_layout(th)
        if width != naxis1:
            raise BadFITSError(f"HDU 1 rows are {naxis1} bytes but its TFORMs add up to {width}")
        if not any(c.name == "COMPRESSED_DATA" for c in columns):
            raise BadFITSError("HDU 1 has no COMPRESSED_DATA column of type P or Q")
        if nrows != -(-znaxis2 // ztile2):
            raise BadFITSError(
                f"HDU 1 has {nrows} tiles, expected {-(-znaxis2 // ztile2)} for "
                f"{znaxis2} rows in tiles of {ztile2}"
            )
        return naxis1, nrows, columns

    @staticmethod
    def _strip(th: fits.Header) -> None:
        for key in ("THEAP", "CHECKSUM", "DATASUM", "ZHECKSUM", "ZDATASUM"):
            th.remove(key, ignore_missing=True, remove_all=True)

    # -- planning --------------------------------------------------------------------------

    def _tiles(self, rows: slice) -> tuple[range, int, int]:
        """The image rows asked for, and the tile range [t0, t1) that holds them."""
        wanted = range(*rows.indices(self.naxis2))
        if len(wanted) == 0:
            return wanted, 0, 0
        lo, hi = min(wanted[0], wanted[-1]), max(wanted[0], wanted[-1]) + 1
        return wanted, lo // self.tile_rows, -(-hi // self.tile_rows)

    def _heap_spans(self, t0: int, t1: int) -> list[tuple[int, int]]:
        naxis1 = int(self.table_header["NAXIS1"])
        _, columns = _table_layout(self.table_header)
        rows = self.table_bytes[t0 * naxis1 : t1 * naxis1]
        spans: list[tuple[int, int]] = []
        for col in columns:
            count, offset = _descriptors(rows, naxis1, col)
            nbytes = count * col.element_size
            used = nbytes > 0
            start = self.heap_start + offset[used]
            spans.extend(zip(start.tolist(), (start + nbytes[used]).tolist()))
        return spans

    def row_byte_ranges(self, rows: slice, *, max_gap: int = 262144) -> list[tuple[int, int]]:
        """Merged ``[start, stop)`` file byte ranges holding the tiles of image ``rows``.

        Ranges whose gap is below ``max_gap`` bytes are merged (reading the gap costs less
        than another request); touching or overlapping ranges are always merged.
        """
        _, t0, t1 = self._tiles(rows)
        return merge_spans(self._heap_spans(t0, t1), max_gap)

    # -- decoding --------------------------------------------------------------------------

    def read_rows(self, read_range: ReadRange, rows: slice, *, max_gap: int = 262144) -> np.ndarray:
        """Raw stored values of image ``rows`` x all columns (no BZERO/BSCALE applied).

        Equal to ``fits.open(path, do_not_scale_image_data=True)[1].data[rows]``; one
        ``read_range`` call per range of :meth:`row_byte_ranges`. Any slice is accepted
        (steps and negative indices too; a step reads every tile between its ends).
        """
        wanted, t0, t1 = self._tiles(rows)
        if len(wanted) == 0:
            return np.empty((0, self.naxis1), dtype=self.dtype)
        ranges = merge_spans(self._heap_spans(t0, t1), max_gap)
        pieces = []
        for start, stop in ranges:
            data = read_range(start, stop)
            if len(data) != stop - start:
                raise BadFITSError(
                    f"read_range({start}, {stop}) returned {len(data)} bytes instead of "
                    f"{stop - start}"
                )
            pieces.append(data)
        # one range (the usual case) is decoded where it lies: a copy of every tile byte,
        # with the GIL held, is what keeps one process's threads from decoding at once
        heap = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        block = self._decode(t0, t1, heap, ranges)
        first_row = t0 * self.tile_rows
        return (
            block[np.asarray(wanted) - first_row]
            if wanted.step != 1
            else block[wanted.start - first_row : wanted.stop - first_row]
        )

    @property
    def decoder(self) -> str:
        """``"rice"`` when tiles are decoded directly (see the module notes), else ``"astropy"``."""
        return "rice" if _direct_rice_block_size(self.table_header) is not None else "astropy"

    def _decode(
        self, t0: int, t1: int, heap: bytes | memoryview, ranges: list[tuple[int, int]]
    ) -> np.ndarray:
        """Decompress tiles [t0, t1) whose heap bytes are ``heap`` (the ``ranges`` read)."""
        block_size = _direct_rice_block_size(self.table_header)
        if block_size is not None:
            return self._decode_rice(t0, t1, heap, ranges, block_size)
        return self._decode_with_astropy(t0, t1, heap, ranges)

    def _heap_offsets(
        self, table: np.ndarray, column: _HeapColumn, ranges: list[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per tile of ``table`` rows: (bytes, offset in the concatenated ``ranges``)."""
        starts = np.array([a for a, _ in ranges], dtype=np.int64)
        positions = np.cumsum([0] + [b - a for a, b in ranges])[:-1]
        count, offset = _descriptors(table, int(self.table_header["NAXIS1"]), column)
        nbytes = count * column.element_size
        file_offset = self.heap_start + offset
        k = np.maximum(np.searchsorted(starts, file_offset, side="right") - 1, 0)
        return nbytes, np.where(nbytes > 0, file_offset - starts[k] + positions[k], 0)

    def _decode_rice(
        self,
        t0: int,
        t1: int,
        heap: bytes | memoryview,
        ranges: list[tuple[int, int]],
        block_size: int,
    ) -> np.ndarray:
        naxis1 = int(self.table_header["NAXIS1"])
        _, (column,) = _table_layout(self.table_header)
        table = np.frombuffer(self.table_bytes, dtype=np.uint8).reshape(-1, naxis1)[t0:t1]
        nbytes, offsets = self._heap_offsets(table, column, ranges)
        first_row = t0 * self.tile_rows
        dtype = self.dtype
        out = np.empty((min(t1 * self.tile_rows, self.naxis2) - first_row, self.naxis1), dtype)
        flat = out.reshape(-1)
        tile_pixels = self.tile_rows * self.naxis1
        view = memoryview(heap)
        try:
            for k, (size, at) in enumerate(zip(nbytes.tolist(), offsets.tolist())):
                pixels = flat[k * tile_pixels : (k + 1) * tile_pixels]
                if size <= 0:
                    raise ValueError("tile has no compressed bytes")
                rcomp_decode(
                    # the codec reads any buffer; its stub names only bytes, bytearray, mmap
                    view[at : at + size],  # type: ignore[arg-type]
                    shape=pixels.shape,
                    dtype=dtype,
                    nblock=block_size,
                    out=pixels,
                )
        except Exception as exc:
            raise BadFITSError(f"cannot decompress tile {t0 + k} of HDU 1: {exc}") from exc
        return out

    def _decode_with_astropy(
        self, t0: int, t1: int, heap: bytes | memoryview, ranges: list[tuple[int, int]]
    ) -> np.ndarray:
        naxis1 = int(self.table_header["NAXIS1"])
        _, columns = _table_layout(self.table_header)
        table = np.frombuffer(self.table_bytes, dtype=np.uint8).reshape(-1, naxis1)[t0:t1].copy()
        limit = np.iinfo(np.int32).max
        for col in columns:
            nbytes, new_offset = self._heap_offsets(table, col, ranges)
            if not col.wide and new_offset.max(initial=0) > limit:
                raise BadFITSError("too many tile bytes for one decode; read fewer rows")
            desc = np.empty(len(table), dtype=col.dtype)
            desc["count"] = nbytes // col.element_size
            desc["offset"] = new_offset
            table[:, col.offset : col.offset + col.dtype.itemsize] = desc.view(np.uint8).reshape(
                len(table), -1
            )

        th = self.table_header.copy()
        self._strip(th)
        th["NAXIS2"] = t1 - t0
        th["PCOUNT"] = len(heap)
        th["ZNAXIS2"] = min(t1 * self.tile_rows, self.naxis2) - t0 * self.tile_rows
        quantiz = str(th.get("ZQUANTIZ", "")).strip().upper()
        if t0 and (quantiz in _DITHERED or "ZDITHER0" in th):
            # astropy and cfitsio start tile i's dither at (i + ZDITHER0 - 1) mod 10000
            seed = int(th.get("ZDITHER0", 0))
            th["ZDITHER0"] = (seed - 1 + t0) % _N_RANDOM + 1 if seed >= 1 else seed + t0
        try:
            with _open_compressed(_mini_file(th, table, heap)) as hdul:
                data = hdul[1].data
                return np.array(data, copy=True)
        except Exception as exc:
            raise BadFITSError(f"cannot decompress tiles {t0}..{t1 - 1} of HDU 1: {exc}") from exc


#: Integer tile data RICE codes, by ZBITPIX (FITS stores 8-bit images unsigned).
_RICE_DTYPES = {8: np.uint8, 16: np.int16, 32: np.int32}


def _direct_rice_block_size(th: fits.Header) -> int | None:
    """RICE block size when tiles can go straight to the RICE decoder, else None.

    That is when the table holds only COMPRESSED_DATA (no ZSCALE/ZZERO/ZBLANK columns, no
    GZIP_COMPRESSED_DATA fallback tiles) of RICE-coded integers whose BYTEPIX is the pixel
    size (astropy's default BYTEPIX is 4, so a 16-bit image must state BYTEPIX = 2).
    """
    if str(th.get("ZCMPTYPE", "")).strip().upper() not in ("RICE_1", "RICE_ONE"):
        return None
    if int(th.get("TFIELDS", 0)) != 1 or int(th.get("ZBITPIX", 0)) not in _RICE_DTYPES:
        return None
    settings = {"BLOCKSIZE": 32, "BYTEPIX": 4}
    i = 1
    while f"ZNAME{i}" in th:
        settings[str(th[f"ZNAME{i}"]).strip().upper()] = th.get(f"ZVAL{i}")
        i += 1
    if settings["BYTEPIX"] != int(th["ZBITPIX"]) // 8:
        return None
    return int(settings["BLOCKSIZE"])


def merge_spans(spans: list[tuple[int, int]], max_gap: int) -> list[tuple[int, int]]:
    """[start, stop) spans sorted and merged where less than ``max_gap`` apart (touching or
    overlapping spans always merge)."""
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if merged and start - merged[-1][1] < max(max_gap, 1):
            if stop > merged[-1][1]:
                merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def read_region(
    read_range: ReadRange,
    index: CompressedImageIndex,
    rows: slice,
    cols: slice,
    *,
    max_gap: int = 262144,
) -> np.ndarray:
    """Raw stored values of the region ``[rows, cols]`` of the image (no scaling applied).

    Row tiles span the whole width, so this reads the tiles of ``rows`` and slices the columns.
    """
    return np.ascontiguousarray(index.read_rows(read_range, rows, max_gap=max_gap)[:, cols])
