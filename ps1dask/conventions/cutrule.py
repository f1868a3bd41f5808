"""THE cutout pixel rule of the PS1 ``fitscut`` service, shared by every fetch strategy.

For a position at 1-based FITS pixel ``(xc, yc)`` and a cutout ``W x H``, fitscut cuts the
box whose first pixel has 0-based index ``x0 = floor(xc - 1 - W//2 + 0.5)`` (and ``y0``
likewise): FITS pixels ``x0+1 .. x0+W``. Pixels off the image are NaN; the output always has
the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ps1dask.conventions.header import repair_header
from ps1dask.exceptions import InvalidParameterError

#: Largest cutout side the service accepts (pixels).
MAX_CUTOUT_SIZE = 6000


def parse_size(size: int | str | tuple[int, int]) -> tuple[int, int]:
    """Cutout size as ``(width, height)`` pixels from ``N``, ``"N"``, ``"W,H"`` or ``(W, H)``."""
    try:
        if isinstance(size, str):
            parts = [int(p) for p in size.split(",")]
        elif isinstance(size, (tuple, list)):
            parts = [int(p) for p in size]
        else:
            if isinstance(size, float) and not size.is_integer():
                raise ValueError
            parts = [int(size)]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"size {size!r} is not N or 'W,H' in pixels") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(1 <= p <= MAX_CUTOUT_SIZE for p in parts):
        raise InvalidParameterError(
            f"size {size!r}: each side must be 1..{MAX_CUTOUT_SIZE} pixels (0.25 arcsec each)"
        )
    return parts[0], parts[1]


@dataclass(frozen=True)
class CutoutBox:
    """A cutout: 0-based index of its first pixel in the source image, and its size."""

    x0: int
    y0: int
    width: int
    height: int

    def overlap(self, naxis1: int, naxis2: int) -> tuple[slice, slice, slice, slice] | None:
        """(src_y, src_x, dst_y, dst_x) slices of the part inside an image, or None."""
        xa, xb = max(self.x0, 0), min(self.x0 + self.width, naxis1)
        ya, yb = max(self.y0, 0), min(self.y0 + self.height, naxis2)
        if xa >= xb or ya >= yb:
            return None
        return (
            slice(ya, yb),
            slice(xa, xb),
            slice(ya - self.y0, yb - self.y0),
            slice(xa - self.x0, xb - self.x0),
        )


def cutout_box(xc: float, yc: float, size: int | str | tuple[int, int]) -> CutoutBox:
    """The box fitscut cuts around 1-based FITS pixel (xc, yc)."""
    width, height = parse_size(size)
    if not (math.isfinite(xc) and math.isfinite(yc)):
        raise InvalidParameterError(f"cutout centre ({xc}, {yc}) is not finite")
    x0 = math.floor(xc - 1 - width // 2 + 0.5)
    y0 = math.floor(yc - 1 - height // 2 + 0.5)
    return CutoutBox(int(x0), int(y0), width, height)


def header_wcs(header: fits.Header) -> WCS:
    """Celestial WCS of a PS1 image header (repaired first, so every reader agrees)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(repair_header(header), naxis=2)


def position_pixel(header: fits.Header, ra: float, dec: float) -> tuple[float, float]:
    """1-based FITS pixel of (ra, dec) in degrees, from the image's own header WCS.

    fitscut places cutouts with the file's header WCS, so strategies that cut locally must
    too (the header's single-precision CDELT differs from the exact 0.25 arcsec scale).
    """
    x, y = header_wcs(header).all_world2pix(ra, dec, 1)
    return float(x), float(y)


RegionReader = Callable[[slice, slice], npt.NDArray[np.floating]]


def cut(box: CutoutBox, naxis1: int, naxis2: int, read: RegionReader) -> npt.NDArray[np.float32]:
    """Assemble a cutout: ``read(rows, cols)`` returns linear pixels of the in-image part.

    ``rows`` and ``cols`` are 0-based slices of the source image; off-image pixels are NaN.
    """
    out = np.full((box.height, box.width), np.nan, dtype=np.float32)
    parts = box.overlap(naxis1, naxis2)
    if parts is not None:
        src_y, src_x, dst_y, dst_x = parts
        out[dst_y, dst_x] = read(src_y, src_x)
    return out


def cut_array(image: npt.NDArray[np.floating], box: CutoutBox) -> npt.NDArray[np.float32]:
    """Cut a box out of a whole linear image held in memory (NaN off the image)."""
    height, width = image.shape
    return cut(box, width, height, lambda rows, cols: image[rows, cols])
