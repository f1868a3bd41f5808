"""THE cutout pixel rule of the PS1 ``fitscut`` service, shared by every fetch strategy.

For a position at 1-based FITS pixel ``(xc, yc)`` and a cutout ``W x H``, fitscut cuts the
box whose first pixel has 0-based index ``x0 = floor(xc - 1 - W//2 + 0.5)`` (and ``y0``
likewise): FITS pixels ``x0+1 .. x0+W``. Pixels off the image are NaN; the output always has
the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from ps1dask.conventions.header import repair_header
from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import PIXEL_SCALE_DEG, project

#: Largest cutout side the service accepts (pixels).
MAX_CUTOUT_SIZE = 6000


#: What a cutout size may be: pixels, a string, an astropy Quantity, or a pair of those.
SizeLike = Any


def _side_pixels(value: Any) -> int:
    """One side in whole pixels: an integer, an integral float or string, or a Quantity.

    A Quantity in pixels must be whole; an angle is converted at the 0.25"/pixel scale and
    rounded to the nearest pixel (as astropy's ``Cutout2D`` does with its WCS).
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("a boolean is no size")
    unit = getattr(value, "unit", None)
    if unit is not None:
        import astropy.units as u

        if getattr(value, "isscalar", True) is False:
            raise ValueError("one side is one value")
        if unit.is_equivalent(u.pix):
            number = float(value.to_value(u.pix))
        elif unit.is_equivalent(u.deg):
            number = float(value.to_value(u.deg)) / PIXEL_SCALE_DEG
            if not math.isfinite(number):
                raise ValueError("not finite")
            return math.floor(number + 0.5)
        else:
            raise ValueError(f"unit {unit} is neither pixels nor an angle")
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        number = float(value)
    if not math.isfinite(number) or not number.is_integer():
        raise ValueError("not a whole number of pixels")
    return int(number)


def parse_size(
    size: SizeLike, *, pair_order: str = "xy", max_side: int = MAX_CUTOUT_SIZE
) -> tuple[int, int]:
    """Cutout size as ``(width, height)`` in pixels (0.25 arcsec each).

    Parameters
    ----------
    size
        * ``N`` (int, or a float or string holding a whole number): an ``N x N`` cutout;
        * the string ``"W,H"``: **width first**, always (the command line's ``--size W,H``
          and the service's own ``size`` parameter);
        * an astropy ``Quantity``: pixels (``u.pix``) or an angle (``30 * u.arcsec`` is 120
          pixels; rounded to the nearest pixel);
        * a pair (tuple, list, array, or a 2-element Quantity) of the above, in the order
          ``pair_order`` says.
    pair_order : {"xy", "yx"}
        Order of a pair: ``"xy"`` is ``(width, height)`` (the internal and wire order);
        ``"yx"`` is ``(ny, nx)``, the order of numpy shapes and of astropy's ``Cutout2D``,
        which the public Python API (:func:`ps1dask.cutouts`, :func:`ps1dask.warps`) uses.
    max_side : int
        Largest side (pixels): the service's 6000 by default; mosaics go up to 14400.

    Returns
    -------
    tuple of int
        ``(width, height)`` in pixels, each in ``1..max_side``.

    Raises
    ------
    InvalidParameterError
        Anything else, naming ``size``.
    """
    if pair_order not in ("xy", "yx"):
        raise InvalidParameterError(f"pair_order {pair_order!r}: use 'xy' or 'yx'")
    try:
        if isinstance(size, str):
            fields = size.split(",")
            parts = [_side_pixels(p) for p in fields]  # "W,H": width first whatever the order
        elif getattr(size, "unit", None) is not None:  # a Quantity (an ndarray too)
            parts = [_side_pixels(q) for q in size.reshape(-1)]
            parts = parts[::-1] if pair_order == "yx" else parts
        elif isinstance(size, (tuple, list, np.ndarray)):
            parts = [_side_pixels(p) for p in size]
            parts = parts[::-1] if pair_order == "yx" else parts
        else:
            parts = [_side_pixels(size)]
    except (TypeError, ValueError, AttributeError):
        order = "(ny, nx)" if pair_order == "yx" else "(W, H)"
        raise InvalidParameterError(
            f"size {size!r} is not N, 'W,H' or {order} in pixels, nor an astropy Quantity "
            "in pixels or an angle"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(1 <= p <= max_side for p in parts):
        more = " (larger: mosaic=True, --mosaic)" if max_side == MAX_CUTOUT_SIZE else ""
        raise InvalidParameterError(
            f"size {size!r}: each side must be 1..{max_side} pixels (0.25 arcsec each){more}"
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


def cutout_origin(
    xc: npt.ArrayLike, yc: npt.ArrayLike, width: int, height: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """0-based ``(x0, y0)`` of the first pixel of the ``width x height`` box fitscut cuts
    around 1-based FITS pixel(s) ``(xc, yc)``: ``x0 = floor(xc - 1 - width//2 + 0.5)``.

    THE cut rule: :func:`cutout_box` and the planner's vectorised boxes both call it.
    """
    x0 = np.floor(np.asarray(xc, dtype=np.float64) - 1 - width // 2 + 0.5).astype(np.int64)
    y0 = np.floor(np.asarray(yc, dtype=np.float64) - 1 - height // 2 + 0.5).astype(np.int64)
    return x0, y0


def cutout_box(xc: float, yc: float, size: int | str | tuple[int, int]) -> CutoutBox:
    """The box fitscut cuts around 1-based FITS pixel (xc, yc)."""
    width, height = parse_size(size)
    if not (math.isfinite(xc) and math.isfinite(yc)):
        raise InvalidParameterError(f"cutout centre ({xc}, {yc}) is not finite")
    x0, y0 = cutout_origin(xc, yc, width, height)
    return CutoutBox(int(x0), int(y0), width, height)


def header_wcs(header: fits.Header) -> WCS:
    """Celestial WCS of a PS1 image header (repaired first, so every reader agrees)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(repair_header(header), naxis=2)


def _pixel_scale(header: Mapping[str, Any]) -> float:
    """Pixel scale (deg) of a PS1 header, checking it has the PS1 orientation (x west, y north)."""
    if "CD1_1" in header:
        m11, m22 = float(header["CD1_1"]), float(header["CD2_2"])
        off = (float(header.get("CD1_2", 0.0)), float(header.get("CD2_1", 0.0)))
    else:
        cdelt1, cdelt2 = float(header["CDELT1"]), float(header["CDELT2"])
        pc11 = float(header.get("PC001001", header.get("PC1_1", 1.0)))
        pc22 = float(header.get("PC002002", header.get("PC2_2", 1.0)))
        m11, m22 = cdelt1 * pc11, cdelt2 * pc22
        off = (
            float(header.get("PC001002", header.get("PC1_2", 0.0))),
            float(header.get("PC002001", header.get("PC2_1", 0.0))),
        )
    if off != (0.0, 0.0) or not (m11 < 0 < m22) or abs(abs(m11) - m22) > 1e-12:
        raise InvalidParameterError("not a PS1 skycell header (expected TAN, x west, y north)")
    return m22


def position_pixel(
    header: Mapping[str, Any], ra: npt.ArrayLike, dec: npt.ArrayLike
) -> tuple[Any, Any]:
    """1-based FITS pixel of (ra, dec) (degrees) from the image's own header, as fitscut does.

    Uses the header's CRVAL, CRPIX and scale (its single-precision CDELT differs from the
    exact 0.25 arcsec of the tessellation by 2.4e-8, up to 1e-3 px), with the same
    arithmetic for every strategy, so all of them cut the same box as the service.
    Scalars in give floats out; arrays give arrays.
    """
    scale = _pixel_scale(header)
    x, y = project(
        np.asarray(ra, dtype=np.float64),
        np.asarray(dec, dtype=np.float64),
        float(header["CRVAL1"]),
        float(header["CRVAL2"]),
        scale,
    )
    x = x + float(header["CRPIX1"])
    y = y + float(header["CRPIX2"])
    if np.ndim(x) == 0:
        return float(x), float(y)
    return x, y


RegionReader = Callable[[slice, slice], npt.NDArray[np.floating]]
#: ``write(rows, cols, dest)`` writes the linear pixels of image ``[rows, cols]`` into ``dest``.
RegionWriter = Callable[[slice, slice, npt.NDArray[np.float32]], None]


def cut(box: CutoutBox, naxis1: int, naxis2: int, read: RegionReader) -> npt.NDArray[np.float32]:
    """Assemble a cutout: ``read(rows, cols)`` returns linear pixels of the in-image part.

    ``rows`` and ``cols`` are 0-based slices of the source image; off-image pixels are NaN.
    """

    def write(rows: slice, cols: slice, dest: npt.NDArray[np.float32]) -> None:
        dest[...] = read(rows, cols)

    out = np.empty((box.height, box.width), dtype=np.float32)
    return cut_into(out, box, naxis1, naxis2, write)


def cut_into(
    out: npt.NDArray[np.float32], box: CutoutBox, naxis1: int, naxis2: int, write: RegionWriter
) -> npt.NDArray[np.float32]:
    """:func:`cut` in place: fill ``out`` (``(height, width)`` float32, e.g. a cutout's place
    in a work unit's array) and return it. ``write(rows, cols, dest)`` writes the linear
    pixels of the in-image part into ``dest`` (a view of ``out``); off-image pixels are NaN.

    Writing in place spares a new array and a copy per cutout: a dense job's cutouts are
    hundreds of MB, and on Dask workers every new array that large is fresh memory.
    """
    if out.shape != (box.height, box.width):
        raise ValueError(f"out has shape {out.shape}, the box {(box.height, box.width)}")
    parts = box.overlap(naxis1, naxis2)
    if parts is None:
        out.fill(np.nan)
        return out
    src_y, src_x, dst_y, dst_x = parts
    if dst_y.stop - dst_y.start != box.height or dst_x.stop - dst_x.start != box.width:
        out.fill(np.nan)  # a box across the image's edge: the part outside stays NaN
    write(src_y, src_x, out[dst_y, dst_x])
    return out


def cut_array(image: npt.NDArray[np.floating], box: CutoutBox) -> npt.NDArray[np.float32]:
    """Cut a box out of a whole linear image held in memory (NaN off the image)."""
    height, width = image.shape
    return cut(box, width, height, lambda rows, cols: image[rows, cols])
