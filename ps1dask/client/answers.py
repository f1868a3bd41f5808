"""Parsing the service's answers: FITS cutouts (checked, linearised, header repaired),
image magic numbers and text bodies."""

from __future__ import annotations

import io
import math

import dask.config
import numpy as np
from astropy.io import fits

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.conventions import linear_pixels, repair_header
from ps1dask.exceptions import (
    BadFITSError,
)

#: Keywords that describe stored (not linear float32) pixels; dropped from repaired headers.
_SCALING_KEYWORDS = ("BZERO", "BSCALE", "BLANK", "BSOFTEN", "BOFFSET")
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def body_text(body: bytes) -> str:
    """A text answer (listings, error pages) as str, undecodable bytes replaced."""
    return body.decode("utf-8", errors="replace")


def _check_declared_shape(
    naxes: list[int], expected_shape: tuple[int, int] | None, url: str
) -> None:
    """Refuse an image whose header declares another shape than requested, or too many
    pixels (``naxes`` in FITS order: NAXIS1 = columns first)."""
    declared = tuple(reversed(naxes))
    if expected_shape is not None and declared != tuple(expected_shape):
        raise BadFITSError(
            f"FITS answer declares an image of shape {declared}, the request asked for "
            f"(height, width) = {tuple(expected_shape)}",
            url,
        )
    limit = int(dask.config.get("ps1dask.http.max-answer-pixels"))
    pixels = math.prod(naxes)
    if pixels > limit or any(n < 0 for n in naxes):
        raise BadFITSError(
            f"FITS answer declares an image of shape {declared} ({pixels} pixels), more than "
            f"ps1dask.http.max-answer-pixels = {limit}",
            url,
        )


# --- FITS ------------------------------------------------------------------------------------


def parse_fits_answer(
    body: bytes, url: str, raw: bool, *, expected_shape: tuple[int, int] | None = None
) -> fits.PrimaryHDU:
    """The first image of a FITS answer; BadFITSError if unreadable or truncated.

    The image's declared dimensions (``NAXISn``, or ``ZNAXISn`` of a compressed image) are
    checked from the header alone, before any pixel is read or decompressed: against
    ``expected_shape`` (rows, columns) when the request fixes it, and against
    ``ps1dask.http.max-answer-pixels`` always, so that a broken or hostile answer declaring
    a huge image costs nothing.
    """
    if len(body) < 2880 or not body.startswith(b"SIMPLE  ="):
        head = body[:80].decode("ascii", errors="replace")
        raise BadFITSError(f"answer is not FITS ({len(body)} bytes, starting {head!r})", url)
    try:
        with fits.open(
            io.BytesIO(body),
            memmap=False,
            lazy_load_hdus=False,
            do_not_scale_image_data=not raw,
        ) as hdul:
            hdu = next((h for h in hdul if h.is_image and h.header.get("NAXIS", 0) >= 2), None)
            if hdu is None:
                raise BadFITSError("FITS answer holds no 2-d image", url)
            header = hdu.header
            bitpix = abs(int(header["BITPIX"]))
            naxes = [int(header[f"NAXIS{i}"]) for i in range(1, int(header["NAXIS"]) + 1)]
            _check_declared_shape(naxes, expected_shape, url)
            # astropy presents a compressed image's header without ZIMAGE; its body holds
            # compressed tiles, so only an uncompressed image can be checked for length here
            if not isinstance(hdu, fits.CompImageHDU):
                needed = hdu.fileinfo()["datLoc"] + bitpix // 8 * int(np.prod(naxes))
                if len(body) < needed:
                    raise BadFITSError(
                        f"FITS answer truncated: {len(body)} bytes, the image needs {needed}", url
                    )
            data = np.array(hdu.data, copy=True)
            header = header.copy()
    except BadFITSError:
        raise
    except Exception as err:  # noqa: BLE001 - bytes from the network: whatever astropy
        # raises on them (OSError, ValueError, zlib.error, its CfitsioException, MemoryError
        # for a garbled NAXIS, ...) means the answer is unreadable, and retryable
        raise BadFITSError(f"unreadable FITS answer: {type(err).__name__}: {err}", url) from None
    if data.ndim != 2:
        raise BadFITSError(f"FITS answer image has shape {data.shape}, expected 2-d", url)
    if raw:
        return fits.PrimaryHDU(data=data, header=header)
    pixels = linear_pixels(data, header)
    fixed = repair_header(header)
    for key in _SCALING_KEYWORDS:
        fixed.remove(key, ignore_missing=True, remove_all=True)
    for key in ("XTENSION", "EXTNAME", "PCOUNT", "GCOUNT"):
        fixed.remove(key, ignore_missing=True, remove_all=True)
    hdu_out = fits.PrimaryHDU(data=pixels, header=fixed)
    hdu_out.header["BITPIX"] = -32
    return hdu_out
