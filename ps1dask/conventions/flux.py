"""Pixel values of PS1 FITS files to linear flux (and back).

Whole stack files hold 16-bit integers ``j`` with ``v = BZERO + BSCALE * j`` an asinh
("luptitude"-like) value; the linear flux is ``BOFFSET + BSOFTEN * (exp(v/a) - exp(-v/a))``
with ``a = 2.5 / ln 10``. Warps (and cutouts) are linear. Every fetch strategy and the
strategy goes through :func:`linear_pixels`, so they agree to the bit.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

#: The constant ``a`` of the PS1 asinh scaling, 2.5 / ln(10).
ASINH_A = 2.5 / np.log(10.0)

Header = Mapping[str, Any]


def is_asinh_scaled(header: Header) -> bool:
    """True where the file carries the asinh scaling keywords (stacks, some auxiliaries)."""
    return "BSOFTEN" in header and "BOFFSET" in header


def disk_to_true(raw: npt.ArrayLike, header: Header) -> npt.NDArray[np.float64]:
    """Apply BLANK, BZERO and BSCALE to on-disk integers: ``TRUE = BZERO + BSCALE * DISK``.

    Computed in float64; pixels equal to BLANK become NaN. Float input passes through
    (only BZERO/BSCALE are applied, as FITS prescribes for integer data only when present).
    """
    arr = np.asarray(raw)
    out = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        bscale = float(header.get("BSCALE", 1.0))
        bzero = float(header.get("BZERO", 0.0))
        out = bzero + bscale * out
        if "BLANK" in header:
            out[arr == int(header["BLANK"])] = np.nan
    return out


def linearize_stack_flux(
    values: npt.ArrayLike, bsoften: float, boffset: float
) -> npt.NDArray[np.float64]:
    """Asinh-scaled values ``v`` (after BZERO/BSCALE) to linear flux (counts), float64."""
    x = np.asarray(values, dtype=np.float64) / ASINH_A
    return boffset + bsoften * (np.exp(x) - np.exp(-x))


def asinh_encode_flux(
    flux: npt.ArrayLike, bsoften: float, boffset: float
) -> npt.NDArray[np.float64]:
    """Inverse of :func:`linearize_stack_flux`: linear flux to asinh-scaled values."""
    return ASINH_A * np.arcsinh((np.asarray(flux, dtype=np.float64) - boffset) / (2.0 * bsoften))


def linear_pixels(
    raw: npt.ArrayLike,
    header: Header,
    *,
    out: npt.NDArray[np.float32] | None = None,
    batch_pixels: int = 0,
) -> npt.NDArray[np.float32]:
    """THE conversion from a PS1 file's stored pixels to linear flux, float32.

    ``raw`` are the values exactly as stored (integers before BZERO/BSCALE for whole files,
    floats for cutouts); ``header`` is that image's header. Applies BLANK -> NaN, BZERO and
    BSCALE, then the asinh inversion only where BSOFTEN and BOFFSET exist. ``out``: a
    float32 array of ``raw``'s shape to write the flux into (and return), e.g. a cutout's
    place in a larger array; None: a new array.

    8- and 16-bit integers (whole stack files) take at most 65,536 values: their flux comes
    from a table of the same formula evaluated once per value, so the result is the same to
    the bit and several times faster on large arrays. ``batch_pixels``: the pixels the
    caller converts with this same scaling in all (e.g. every cutout of one file's rows),
    so that small cutouts (120x120) share a table their batch repays; the table is used
    when ``raw`` or its batch reaches ``_TABLE_MIN_PIXELS``.
    """
    arr = np.asarray(raw)
    by_table = max(arr.size, batch_pixels) >= _TABLE_MIN_PIXELS
    if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2 and by_table:
        table = _linear_table(arr.dtype.newbyteorder("=").str, *_scaling_key(header))
        index = arr.view(arr.dtype.str.replace("i", "u"))  # keeps the byte order
        # np.take rather than table[index]: the same values, about 3x faster; every
        # unsigned value is in the table, so "clip" never clips (no bounds check).
        return np.take(table, _as_intp(index), mode="clip", out=out)
    flux = _linear_pixels_direct(arr, header)
    if out is None:
        return flux
    out[...] = flux
    return out


def _linear_pixels_direct(raw: npt.ArrayLike, header: Header) -> npt.NDArray[np.float32]:
    true = disk_to_true(raw, header)
    if is_asinh_scaled(header):
        true = linearize_stack_flux(true, float(header["BSOFTEN"]), float(header["BOFFSET"]))
    return true.astype(np.float32)


#: Largest index array (pixels) converted into the calling thread's reused buffer.
_SCRATCH_MAX_PIXELS = 1 << 20
_scratch = threading.local()


def _as_intp(index: npt.NDArray[np.unsignedinteger[Any]]) -> npt.NDArray[np.intp]:
    """``index`` as intp (what np.take indexes with), in a buffer the calling thread reuses.

    np.take would convert small integers into a new intp array per call: for a cutout that
    is 8 bytes a pixel, and a new array that large is fresh memory the kernel maps in page
    by page (on Dask workers, whose malloc returns freed memory at once, on every call).
    """
    if index.size > _SCRATCH_MAX_PIXELS:
        return index.astype(np.intp)
    buffer = getattr(_scratch, "index", None)
    if buffer is None or buffer.size < index.size:
        buffer = np.empty(index.size, dtype=np.intp)
        _scratch.index = buffer
    out = buffer[: index.size].reshape(index.shape)
    np.copyto(out, index)
    return out


#: Below this many pixels the formula is applied directly: a table costs 65,536 evaluations,
#: repaid within one 240x240 cutout and many times over when a file's rows give many cutouts.
_TABLE_MIN_PIXELS = 16384

_ScalingKey = tuple[float, float, int | None, float | None, float | None]

_SCALING_KEYWORDS = ("BSCALE", "BZERO", "BLANK", "BSOFTEN", "BOFFSET")


def scaling_keywords(header: Header) -> dict[str, Any]:
    """The keywords of ``header`` that :func:`linear_pixels` reads, in a plain dict: pass it
    instead of the header when one file gives many cutouts (the same flux, without FITS
    header look-ups, some microseconds each with the GIL held, per cutout)."""
    return {key: header[key] for key in _SCALING_KEYWORDS if key in header}


def _scaling_key(header: Header) -> _ScalingKey:
    """The header values :func:`linear_pixels` depends on, hashable."""
    asinh = is_asinh_scaled(header)
    return (
        float(header.get("BSCALE", 1.0)),
        float(header.get("BZERO", 0.0)),
        int(header["BLANK"]) if "BLANK" in header else None,
        float(header["BSOFTEN"]) if asinh else None,
        float(header["BOFFSET"]) if asinh else None,
    )


@functools.lru_cache(maxsize=128)
def _linear_table(
    dtype: str,
    bscale: float,
    bzero: float,
    blank: int | None,
    bsoften: float | None,
    boffset: float | None,
) -> npt.NDArray[np.float32]:
    """Flux of every stored value of ``dtype``, indexed by the value's unsigned bit pattern."""
    size = np.dtype(dtype).itemsize
    values = np.arange(1 << (8 * size), dtype=np.int64).astype(f"u{size}").view(dtype)
    header: dict[str, Any] = {"BSCALE": bscale, "BZERO": bzero}
    if blank is not None:
        header["BLANK"] = blank
    if bsoften is not None:
        header["BSOFTEN"], header["BOFFSET"] = bsoften, boffset
    table = _linear_pixels_direct(values, header)
    table.setflags(write=False)
    return table


def quantize_to_disk(
    true: npt.ArrayLike, bzero: float, bscale: float, blank: int = -32768
) -> npt.NDArray[np.int16]:
    """Store float values as int16 with BZERO/BSCALE (NaN -> BLANK), as PS1 files do."""
    arr = np.asarray(true, dtype=np.float64)
    j = np.rint((arr - bzero) / bscale)
    j = np.clip(j, -32767, 32767)
    j[~np.isfinite(arr)] = blank
    return j.astype(np.int16)
