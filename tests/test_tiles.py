"""Byte-range reads of row-tiled compressed FITS images (ps1dask.fetch.tiles).

Every file here is written by astropy and every answer is checked against astropy reading the
whole file with ``do_not_scale_image_data=True``; a counting ``read_range`` checks how many
requests and bytes each operation costs.
"""

from __future__ import annotations

import functools
import io

import dask.config
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.conventions import CutoutBox, cut, cut_array, linear_pixels
from ps1dask.exceptions import BadFITSError
from ps1dask.fetch.strategies import file_index, has_file_index
from ps1dask.fetch.tiles import (
    BLOCK,
    CompressedImageIndex,
    _direct_rice_block_size,
    merge_spans,
    read_region,
)

NX = 6240  # PS1 skycell width in zones 22-23
BLANK = -32768


def ps1_like_file(
    raw: np.ndarray,
    *,
    tile_shape: tuple[int, int] | None = None,
    compression_type: str = "RICE_1",
    bzero: float = 3.5,
    bscale: float = 0.0005,
    extra_cards: int = 0,
    primary: fits.PrimaryHDU | None = None,
) -> bytes:
    """A whole-skycell-like FITS file whose HDU 1 stores ``raw`` (int16) exactly, as bytes.

    THE RECIPE for int16 + BZERO/BSCALE files (the emulator needs the same): astropy takes
    the ``data`` given to ``CompImageHDU``/``ImageHDU`` as PHYSICAL values and drops
    BZERO/BSCALE from the header passed with it (``do_not_scale_image_data=True`` at
    construction does not keep them either). So build the HDU from the on-disk ints, THEN set
    ``hdu.header["BSCALE"]`` and ``hdu.header["BZERO"]`` on the constructed HDU: astropy writes
    the ints unchanged with those keywords, and ``fits.open(f, do_not_scale_image_data=True)``
    gives back ``raw`` bit for bit while a plain ``fits.open`` gives ``BZERO + BSCALE * raw``
    (BLANK -> NaN). Do not call ``hdu.scale(...)``: it requantises physical values.
    """
    header = fits.Header()
    header["BLANK"] = BLANK
    header["BSOFTEN"] = 2.5
    header["BOFFSET"] = 10.0
    header["CTYPE1"] = "RA---TAN"
    header["CTYPE2"] = "DEC--TAN"
    header["CRVAL1"] = 332.0
    header["CRVAL2"] = 2.0
    header["CRPIX1"] = 11760.0
    header["CRPIX2"] = 242.0
    header["CDELT1"] = 6.94444461259988e-05
    header["CDELT2"] = 6.94444461259988e-05
    header["PC001001"] = -1.0
    header["PC001002"] = 0.0
    header["PC002001"] = 0.0
    header["PC002002"] = 1.0
    for i in range(extra_cards):
        header[f"HIST{i:04d}"] = (i * 0.5, "padding card so the header spans many blocks")
    hdu = fits.CompImageHDU(
        data=raw,
        header=header,
        compression_type=compression_type,
        tile_shape=tile_shape or (1, raw.shape[1]),
    )
    hdu.header["BSCALE"] = bscale
    hdu.header["BZERO"] = bzero
    buf = io.BytesIO()
    fits.HDUList([primary or fits.PrimaryHDU(), hdu]).writeto(buf)
    return buf.getvalue()


def sky_ints(ny: int, nx: int = NX, seed: int = 0) -> np.ndarray:
    """Noisy int16 'sky' with a few BLANK pixels; rows differ (cheap for 6243 rows too)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(2000.0, 60.0, size=(min(ny, 512), nx)).astype(np.int16)
    raw = base[np.arange(ny) % len(base)] + (np.arange(ny, dtype=np.int16) // 512)[:, None]
    raw[rng.integers(0, ny, 50), rng.integers(0, nx, 50)] = BLANK
    return raw.astype(np.int16)


class Remote:
    """``read_range`` over bytes held in memory, counting calls and bytes."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, stop: int) -> bytes:
        assert 0 <= start < stop, (start, stop)
        self.calls.append((start, stop))
        return self.blob[start:stop]

    @property
    def nbytes(self) -> int:
        return sum(min(b, len(self.blob)) - a for a, b in self.calls)

    def reset(self) -> None:
        self.calls.clear()


def astropy_raw(blob: bytes) -> tuple[np.ndarray, fits.Header]:
    with fits.open(io.BytesIO(blob), do_not_scale_image_data=True) as hdul:
        return np.array(hdul[1].data), hdul[1].header.copy()


@functools.cache
def small_file() -> tuple[bytes, np.ndarray]:
    raw = sky_ints(300)
    return ps1_like_file(raw), raw


@functools.cache
def strip_file() -> tuple[bytes, np.ndarray]:
    raw = sky_ints(203, 500, seed=3)
    return ps1_like_file(raw, tile_shape=(16, 500)), raw


# --- the write recipe and the index ---------------------------------------------------------


def test_write_recipe_keeps_raw_ints_and_scaling():
    blob, raw = small_file()
    data, header = astropy_raw(blob)
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data, raw)
    assert header["BZERO"] == 3.5 and header["BSCALE"] == 0.0005 and header["BLANK"] == BLANK
    with fits.open(io.BytesIO(blob)) as hdul:  # the scaled view applies BZERO/BSCALE/BLANK
        scaled = hdul[1].data
        ok = raw != BLANK
        np.testing.assert_allclose(scaled[ok], 3.5 + 0.0005 * raw[ok].astype(float), rtol=1e-6)
        assert np.isnan(scaled[~ok]).all()


def test_index_parse():
    blob, _ = small_file()
    remote = Remote(blob)
    index = CompressedImageIndex.read(remote)
    assert len(remote.calls) == 1  # headers and the 300 x 8 byte descriptor table in 64 kB
    assert (index.naxis1, index.naxis2) == (NX, 300)
    _, header = astropy_raw(blob)
    assert index.header == header
    for key in ("BZERO", "BSCALE", "BLANK", "BSOFTEN", "BOFFSET", "PC001001", "CRPIX1"):
        assert index.header[key] == header[key]
    assert index.header["NAXIS1"] == NX and index.header["NAXIS2"] == 300
    assert index.table_header["ZCMPTYPE"] == "RICE_1"
    assert index.table_header["TFORM1"].startswith("1PB")
    with fits.open(io.BytesIO(blob), disable_image_compression=True) as hdul:
        table = hdul[1]
        info = table.fileinfo()
        assert index.data_start == info["datLoc"]
        assert index.heap_start == info["datLoc"] + table.header["NAXIS1"] * table.header["NAXIS2"]
        lengths = [len(table.data.field("COMPRESSED_DATA")[i]) for i in (0, 1, 150, 299)]
    desc = np.frombuffer(_raw_table(blob)[1], dtype=">i4").reshape(300, 2)
    assert lengths == desc[[0, 1, 150, 299], 0].tolist()
    assert len(index.tile_offsets) == len(index.tile_sizes) == 300
    np.testing.assert_array_equal(index.tile_sizes, desc[:, 0])
    np.testing.assert_array_equal(index.tile_offsets, index.heap_start + desc[:, 1])
    assert index.tile_offsets[-1] + index.tile_sizes[-1] <= len(blob)
    assert "6240x300" in repr(index)


def test_a_process_reads_a_file_index_once():
    """Strategies keep each file's index per process (and source): the second group of a
    file sends no request for it, and the cost model is told so (``has_file_index``)."""
    blob, _ = small_file()
    remote = Remote(blob)
    name = f"rings.v3.skycell.test{id(remote)}.stk.r.unconv.fits"
    assert not has_file_index("http://here", name)
    first = file_index("http://here", name, remote)
    assert len(remote.calls) == 1 and has_file_index("http://here", name)
    assert file_index("http://here", name, remote) is first
    assert len(remote.calls) == 1
    assert not has_file_index("http://elsewhere", name)


def test_header_spanning_many_blocks():
    raw = sky_ints(40, seed=1)
    blob = ps1_like_file(raw, extra_cards=1500)  # ~ 120 kB of header, 42 blocks
    remote = Remote(blob)
    index = CompressedImageIndex.read(remote, first_read=4 * BLOCK)
    assert index.data_start > 40 * BLOCK
    assert index.header["HIST1499"] == 749.5
    assert index.header["BSOFTEN"] == 2.5
    assert len(remote.calls) <= 7  # 11.5 kB, doubling up to 184 kB, then the table
    assert remote.nbytes < 2 * index.heap_start
    with fits.open(io.BytesIO(blob), do_not_scale_image_data=True) as hdul:
        assert index.header == hdul[1].header
    remote.reset()
    np.testing.assert_array_equal(index.read_rows(remote, slice(5, 9)), raw[5:9])
    assert len(remote.calls) == 1


def test_primary_hdu_with_data_is_skipped():
    raw = sky_ints(30, 200, seed=2)
    blob = ps1_like_file(raw, primary=fits.PrimaryHDU(np.zeros((100, 100), np.float64)))
    index = CompressedImageIndex.read(Remote(blob), first_read=BLOCK)
    assert index.naxis1 == 200
    np.testing.assert_array_equal(index.read_rows(Remote(blob), slice(None)), raw)


# --- reading rows ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(-320, 320),
    stop=st.one_of(st.none(), st.integers(-320, 320)),
    step=st.sampled_from([None, 1, 2, 7, -1, -3]),
    max_gap=st.sampled_from([0, 1, 262144]),
)
def test_read_rows_matches_astropy(start, stop, step, max_gap):
    blob, _ = small_file()
    data, _ = astropy_raw(blob)
    index = CompressedImageIndex.read(Remote(blob))
    rows = slice(start, stop, step)
    remote = Remote(blob)
    got = index.read_rows(remote, rows, max_gap=max_gap)
    want = data[rows]
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    assert remote.calls == index.row_byte_ranges(rows, max_gap=max_gap)


@settings(max_examples=30, deadline=None)
@given(
    y0=st.integers(0, 299), h=st.integers(1, 300), x0=st.integers(0, NX - 1), w=st.integers(1, 400)
)
def test_read_region_equals_slicing(y0, h, x0, w):
    blob, raw = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    rows, cols = slice(y0, y0 + h), slice(x0, x0 + w)
    np.testing.assert_array_equal(read_region(Remote(blob), index, rows, cols), raw[rows, cols])


@settings(max_examples=25, deadline=None)
@given(start=st.integers(0, 203), length=st.integers(0, 60))
def test_strip_tiles(start, length):
    """Full-width tiles of several rows (ZTILE2 > 1) work too; partial last strip included."""
    blob, raw = strip_file()
    index = CompressedImageIndex.read(Remote(blob))
    assert index.tile_rows == 16 and len(index.tile_sizes) == 13
    rows = slice(start, start + length)
    remote = Remote(blob)
    np.testing.assert_array_equal(index.read_rows(remote, rows), raw[rows])
    assert len(remote.calls) == (1 if raw[rows].size else 0)


def test_empty_selection_reads_nothing():
    blob, _ = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    remote = Remote(blob)
    out = index.read_rows(remote, slice(100, 100))
    assert out.shape == (0, NX) and out.dtype == np.int16
    assert remote.calls == [] and index.row_byte_ranges(slice(5, 2)) == []


def test_linear_pixels_and_cut_rule_agree_with_astropy():
    blob, _ = small_file()
    data, header = astropy_raw(blob)
    remote = Remote(blob)
    index = CompressedImageIndex.read(remote)
    rows, cols = slice(30, 270), slice(3000, 3240)
    got = linear_pixels(read_region(remote, index, rows, cols), index.header)
    want = linear_pixels(data[rows, cols], header)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert np.isfinite(got).any()

    whole = linear_pixels(data, header)
    for box in [
        CutoutBox(-100, -50, 240, 240),
        CutoutBox(6100, 200, 240, 240),
        CutoutBox(10, 10, 64, 32),
        CutoutBox(7000, 0, 10, 10),
    ]:
        cutout = cut(
            box,
            index.naxis1,
            index.naxis2,
            lambda r, c: linear_pixels(read_region(remote, index, r, c), index.header),
        )
        np.testing.assert_array_equal(cutout, cut_array(whole, box))


def test_blank_pixels_stay_raw():
    blob, raw = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    y, x = np.argwhere(raw == BLANK)[0]
    got = read_region(Remote(blob), index, slice(y, y + 1), slice(x, x + 1))
    assert got[0, 0] == BLANK
    assert np.isnan(linear_pixels(got, index.header)[0, 0])


def test_full_height_skycell_240px_cutout_costs():
    """A 6240 x 6243 file: a 240 x 240 cutout reads 2 ranges and ~4% of the file."""
    raw = sky_ints(6243, seed=5)
    blob = ps1_like_file(raw)
    remote = Remote(blob)
    index = CompressedImageIndex.read(remote)
    assert (index.naxis1, index.naxis2) == (6240, 6243)
    index_calls, index_bytes = len(remote.calls), remote.nbytes
    assert index_calls == 1  # 8 bytes x 6243 descriptors + 3 header blocks < 64 kB
    rows, cols = slice(3100, 3340), slice(2000, 2240)
    got = read_region(remote, index, rows, cols)
    np.testing.assert_array_equal(got, raw[rows, cols])
    assert len(remote.calls) == index_calls + 1  # tiles of consecutive rows: one run
    tile_bytes = remote.nbytes - index_bytes
    assert tile_bytes == int(index.tile_sizes[3100:3340].sum())
    assert remote.nbytes < 0.05 * len(blob)
    print(
        f"\n6240x6243 file {len(blob)} B: index {index_calls} call(s) {index_bytes} B; "
        f"240x240 cutout {len(remote.calls) - index_calls} call(s) {tile_bytes} B; "
        f"total {remote.nbytes} B = {remote.nbytes / len(blob):.1%}"
    )


def test_merge_ranges():
    spans = [(100, 110), (0, 10), (15, 20), (10, 12), (300, 400), (350, 360)]
    assert merge_spans(spans, 0) == [(0, 12), (15, 20), (100, 110), (300, 400)]
    assert merge_spans(spans, 6) == [(0, 20), (100, 110), (300, 400)]
    assert merge_spans(spans, 1000) == [(0, 400)]


# --- other encodings astropy writes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "tile_rows", "dtype"),
    [
        ("GZIP_1", 1, np.int16),
        ("GZIP_2", 1, np.int32),
        ("NOCOMPRESS", 1, np.int16),
        ("PLIO_1", 1, np.int16),
        ("HCOMPRESS_1", 4, np.int16),
        ("RICE_1", 1, np.uint16),
        ("RICE_1", 1, np.uint8),
        ("GZIP_1", 1, np.float64),
    ],
)
def test_other_compressions_and_types(compression, tile_rows, dtype):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 200, size=(40, 64)).astype(dtype)
    hdu = fits.CompImageHDU(data=data, compression_type=compression, tile_shape=(tile_rows, 64))
    if dtype == np.float64:
        hdu = fits.CompImageHDU(
            data=rng.normal(size=(40, 64)),
            compression_type=compression,
            tile_shape=(1, 64),
            quantize_level=0.0,
        )
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    blob = buf.getvalue()
    want, _ = astropy_raw(blob)
    index = CompressedImageIndex.read(Remote(blob))
    for rows in [slice(0, 40), slice(3, 4), slice(9, 30), slice(37, None)]:
        got = index.read_rows(Remote(blob), rows)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want[rows])


@pytest.mark.parametrize(
    ("dtype", "tile_rows"),
    [(np.int16, 1), (np.int32, 1), (np.uint8, 1), (np.int16, 7), (np.int32, 3)],
)
def test_direct_rice_decoding_equals_astropy(dtype, tile_rows):
    """The direct RICE path (PS1's files) and the astropy path agree with astropy's own read."""
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    data = rng.integers(
        max(info.min, -30000), min(info.max, 30000), size=(45, 97), endpoint=True
    ).astype(dtype)
    data[10] = data[10, 0]  # a constant row
    hdu = fits.CompImageHDU(data=data, compression_type="RICE_1", tile_shape=(tile_rows, 97))
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    blob = buf.getvalue()
    want, _ = astropy_raw(blob)
    index = CompressedImageIndex.read(Remote(blob))
    assert index.decoder == "rice"
    for rows in [slice(0, 45), slice(3, 4), slice(9, 30), slice(40, None), slice(44, 45)]:
        got = index.read_rows(Remote(blob), rows)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want[rows])
        _, t0, t1 = index._tiles(rows)
        ranges = merge_spans(index._heap_spans(t0, t1), 0)
        heap = b"".join(blob[a:b] for a, b in ranges)
        np.testing.assert_array_equal(
            index._decode_with_astropy(t0, t1, heap, ranges), index._decode(t0, t1, heap, ranges)
        )


def test_decoder_choice():
    blob, _ = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    assert index.decoder == "rice"  # PS1-like: RICE_1 int16 with BYTEPIX = 2
    header = index.table_header.copy()
    header["ZVAL2"] = 4  # BYTEPIX other than the pixel size: leave it to astropy
    assert _direct_rice_block_size(header) is None
    header = index.table_header.copy()
    header["ZCMPTYPE"] = "GZIP_1"
    assert _direct_rice_block_size(header) is None
    header = index.table_header.copy()
    header["TFIELDS"] = 2  # e.g. a ZSCALE column next to COMPRESSED_DATA
    assert _direct_rice_block_size(header) is None


@pytest.mark.parametrize("method", [1, 2, -1])
def test_quantised_float_with_dither_and_gzip_fallback(method):
    """ZSCALE/ZZERO columns, dither seeds wrapping past 10000, GZIP_COMPRESSED_DATA tiles."""
    rng = np.random.default_rng(11)
    data = rng.normal(100.0, 5.0, size=(60, 300)).astype(np.float32)
    data[7] = 42.0  # constant rows do not quantise: astropy stores them gzipped
    data[31] = np.arange(300)
    data[12, 5:9] = np.nan
    data[40, 0] = 0.0
    hdu = fits.CompImageHDU(
        data=data,
        compression_type="RICE_1",
        tile_shape=(1, 300),
        quantize_level=8,
        quantize_method=method,
        dither_seed=9990,
    )
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
    blob = buf.getvalue()
    want, _ = astropy_raw(blob)
    index = CompressedImageIndex.read(Remote(blob))
    assert {"ZSCALE", "ZZERO"} <= {index.table_header[f"TTYPE{i}"] for i in range(1, 5)}
    assert np.isnan(want[12, 5:9]).all()
    for rows in [slice(0, 60), slice(5, 9), slice(11, 13), slice(25, 45), slice(59, 60)]:
        got = index.read_rows(Remote(blob), rows)
        np.testing.assert_array_equal(got, want[rows])  # NaN == NaN here
    np.testing.assert_array_equal(index.read_rows(Remote(blob), slice(7, 8))[0], 42.0)


def _raw_table(blob: bytes) -> tuple[fits.Header, bytes, bytes]:
    """The compressed table's header, table bytes and heap bytes (from astropy's own view)."""
    with fits.open(io.BytesIO(blob), disable_image_compression=True) as hdul:
        header = hdul[1].header.copy()
        start = hdul[1].fileinfo()["datLoc"]
    size = header["NAXIS1"] * header["NAXIS2"]
    heap = start + header.get("THEAP", size)
    return header, blob[start : start + size], blob[heap : heap + header["PCOUNT"]]


def _assemble(header: fits.Header, table: bytes, gap: bytes, heap: bytes) -> bytes:
    body = table + gap + heap
    pad = b"\0" * (-len(body) % BLOCK)
    return fits.PrimaryHDU().header.tostring().encode() + header.tostring().encode() + body + pad


def test_q_descriptors_and_theap_gap():
    """1QB descriptors (files > 4 GB) and a heap that does not follow the table directly."""
    raw = sky_ints(50, 700, seed=4)
    blob = ps1_like_file(raw)
    header, table, heap = _raw_table(blob)
    n = header["NAXIS2"]
    desc = np.frombuffer(table, dtype=">i4").reshape(n, 2).astype(">i8")
    header["NAXIS1"] = 16
    header["TFORM1"] = header["TFORM1"].replace("P", "Q")
    header["THEAP"] = 16 * n + 1000
    header["PCOUNT"] = len(heap) + 1000
    qblob = _assemble(header, desc.tobytes(), b"\x55" * 1000, heap)
    want, _ = astropy_raw(qblob)
    np.testing.assert_array_equal(want, raw)  # astropy agrees the rewrite is valid
    index = CompressedImageIndex.read(Remote(qblob))
    assert index.heap_start == index.data_start + 16 * n + 1000
    for rows in [slice(0, 50), slice(10, 11), slice(20, 45)]:
        np.testing.assert_array_equal(index.read_rows(Remote(qblob), rows), raw[rows])


# --- rejection ------------------------------------------------------------------------------


def _image_file(hdu: fits.ImageHDU | fits.CompImageHDU | None) -> bytes:
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU()] + ([hdu] if hdu is not None else [])).writeto(buf)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"<html>Not Found</html>" * 200, "not a FITS file"),
        (_image_file(fits.ImageHDU(np.zeros((20, 30), np.int16))), "not a tile-compressed"),
        (_image_file(None), "no extension"),
        (
            _image_file(fits.BinTableHDU.from_columns([fits.Column("a", "J", array=[1, 2])])),
            "not a tile-compressed",
        ),
        (
            _image_file(fits.CompImageHDU(np.zeros((128, 128), np.int16), tile_shape=(64, 64))),
            "not tiled by rows",
        ),
        (
            _image_file(fits.CompImageHDU(np.zeros((4, 8, 8), np.int16), tile_shape=(1, 1, 8))),
            "not a 2-D image",
        ),
    ],
    ids=["html", "uncompressed", "primary-only", "plain-table", "square-tiles", "cube"],
)
def test_rejects_files_it_cannot_read(blob, message):
    with pytest.raises(BadFITSError, match=message):
        CompressedImageIndex.read(Remote(blob))


def test_rejects_a_declared_image_beyond_the_pixel_cap_before_reading_tiles():
    """A file declaring a huge image (ZNAXISn) is refused from its headers: no tile read."""
    blob = _image_file(fits.CompImageHDU(np.zeros((64, 64), np.int16), tile_shape=(1, 64)))
    remote = Remote(blob)
    with (
        dask.config.set({"ps1dask.http.max-answer-pixels": 64 * 63}),
        pytest.raises(BadFITSError, match="64x64 image"),
    ):
        CompressedImageIndex.read(remote)
    assert len(remote.calls) == 1  # the headers and tile table, no tile
    assert CompressedImageIndex.read(Remote(blob)).naxis2 == 64


def test_rejects_truncated_files_and_short_reads():
    blob, _ = small_file()
    index = CompressedImageIndex.read(Remote(blob))
    with pytest.raises(BadFITSError, match="ends inside the tile table"):
        CompressedImageIndex.read(Remote(blob[: index.data_start + 100]), first_read=BLOCK)
    with pytest.raises(BadFITSError, match="ends inside the HDU 1 header"):
        CompressedImageIndex.read(Remote(blob[: index.data_start - 100]), first_read=BLOCK)
    short = Remote(blob[: int(index.tile_offsets[100])])
    with pytest.raises(BadFITSError, match="returned"):
        index.read_rows(short, slice(90, 110))


def test_rejects_keyword_quantisation():
    header, table, heap = _raw_table(small_file()[0])
    header["ZSCALE"] = 1.0
    header["ZZERO"] = 0.0
    blob = _assemble(header, table, b"", heap)
    with pytest.raises(BadFITSError, match="ZSCALE/ZZERO header keywords"):
        CompressedImageIndex.read(Remote(blob))


def test_rejects_descriptors_outside_the_heap():
    header, table, heap = _raw_table(small_file()[0])
    header["PCOUNT"] = len(heap) - 5000  # the last tiles now point past the heap
    blob = _assemble(header, table, b"", heap[: len(heap) - 5000])
    with pytest.raises(BadFITSError, match="outside the heap"):
        CompressedImageIndex.read(Remote(blob))
