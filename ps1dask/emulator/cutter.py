"""The pixels side of ``fitscut.cgi``: which files the service lists, their headers, and
cutouts of them as FITS or pictures; pure CPU work on a :class:`SyntheticSky`, no I/O.

:class:`SkyCutter` holds nothing but the sky and its caches, so the same object answers in the
emulator's threads or, rebuilt from the sky, in worker processes
(:mod:`~ps1dask.emulator.cutout_processes`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from astropy.io import fits

from ps1dask.emulator.params import bool_param, float_param, limits_param
from ps1dask.emulator.pictures import (
    DEFAULT_AUTOSCALE,
    PICTURE_FORMATS,
    colour_picture,
    encode_picture,
    grey_picture,
    picture_shape,
)
from ps1dask.emulator.service_rules import (
    cut_origin,
    cut_out,
    fitscut_fits,
    header_pixel,
    linear_flux,
    parse_cutout_size,
)
from ps1dask.emulator.sky import ImageRef, SyntheticSky
from ps1dask.exceptions import HTTPFailure, InvalidParameterError
from ps1dask.tessellation import SkycellId

DEFAULT_CUTOUT_SIZE = 240


class SkyCutter:
    """Listings, headers and ``fitscut.cgi`` answers of one synthetic sky (cached, thread-safe)."""

    def __init__(self, sky: SyntheticSky) -> None:
        self.sky = sky
        self._header = functools.lru_cache(maxsize=4096)(self._header_uncached)
        self._listing = functools.lru_cache(maxsize=16384)(self._listing_uncached)
        self._images = functools.lru_cache(maxsize=4096)(self._images_uncached)

    def _header_uncached(self, ref: ImageRef) -> fits.Header:
        return self.sky.image_header(ref)

    def _images_uncached(self, skycell: SkycellId, bands: str, types: tuple[str, ...]) -> tuple:
        return tuple(self.sky.images(skycell, bands, types))

    def _listing_uncached(self, skycell: SkycellId, band: str, image_type: str) -> frozenset[str]:
        return frozenset(r.filename for r in self._images(skycell, band, (image_type,)))

    def listed_images(
        self, skycell: SkycellId, bands: str, types: tuple[str, ...]
    ) -> tuple[ImageRef, ...]:
        """What ``ps1filenames.py`` lists for one skycell (cached)."""
        return self._images(skycell, bands, types)

    def lookup(self, name: str) -> ImageRef:
        """The ImageRef of a listed file name; 404 unless the service lists it."""
        text = (name or "").strip()
        try:
            ref = ImageRef.from_filename(text)
        except (InvalidParameterError, ValueError):
            raise HTTPFailure(404, f"{text!r} is not a PS1 image file name") from None
        if "/" in text and "/" + text.lstrip("/") != ref.filename:
            raise HTTPFailure(404, f"{text!r}: no such file (it would be {ref.filename})")
        if not self.sky.has_data(ref.skycell):
            raise HTTPFailure(
                404, f"{text!r}: no PS1 data for {ref.skycell} (outside the 3pi footprint)"
            )
        if ref.filename not in self._listing(ref.skycell, ref.band, ref.image_type):
            raise HTTPFailure(404, f"{text!r}: no such image (not listed by ps1filenames.py)")
        return ref

    def _position(self, params: Mapping[str, Any]) -> tuple[str, float, float] | None:
        ra = float_param(params, "ra")
        dec = float_param(params, "dec")
        if ra is not None or dec is not None:
            if ra is None or dec is None:
                raise InvalidParameterError("give both ra and dec (degrees)")
            return ("radec", ra, dec)
        x = float_param(params, "x")
        y = float_param(params, "y")
        if x is None and y is None:
            return None
        if x is None or y is None:
            raise InvalidParameterError("give both x and y")
        if bool_param(params, "wcs", False):
            return ("radec", x, y)
        return ("pixel", x, y)

    def cut_linear(
        self, ref: ImageRef, position: tuple[str, float, float] | None, size: tuple[int, int]
    ) -> tuple[np.ndarray, tuple[int, int], fits.Header]:
        """Linear float32 cutout of one image, the fitscut way (thread pool).

        Returns the pixels, the 0-based ``(x0, y0)`` of the cutout's first pixel, and the
        source image header.
        """
        header = self._header(ref)
        naxis1, naxis2 = int(header["NAXIS1"]), int(header["NAXIS2"])
        if position is None:
            xc, yc = naxis1 / 2 + 0.5, naxis2 / 2 + 0.5
        elif position[0] == "radec":
            _, ra, dec = position
            if abs(dec) > 90:
                raise InvalidParameterError(f"dec={dec} is not in -90..90")
            xc, yc = header_pixel(header, ra, dec)
        else:
            xc, yc = position[1] + 1.0, position[2] + 1.0  # 0-based pixel -> 1-based
        if not (math.isfinite(xc) and math.isfinite(yc)):
            raise InvalidParameterError(
                f"position {position[1:]} does not project onto {ref.shortname}"  # type: ignore[index]
            )
        width, height = size
        x0, y0 = cut_origin(xc, yc, width, height)
        sky = self.sky
        pixels = cut_out(
            lambda rows, cols: linear_flux(sky.render_disk(ref, rows, cols), header),
            naxis1,
            naxis2,
            x0,
            y0,
            width,
            height,
        )
        return pixels, (x0, y0), header

    def fitscut_body(self, params: Mapping[str, Any]) -> tuple[bytes, str, int]:
        """``(body, content type, pixels cut)`` of a fitscut request (thread pool)."""
        fmt = str(params.get("format") or "jpg").strip().lower()
        if fmt != "fits" and fmt not in PICTURE_FORMATS:
            raise InvalidParameterError(f"format={fmt!r}: use fits, jpg or png")
        size = parse_cutout_size(str(params.get("size") or DEFAULT_CUTOUT_SIZE))
        names = {c: str(params.get(c) or "").strip() for c in ("red", "green", "blue")}
        if not names["red"]:
            raise InvalidParameterError("red= is required: a file name listed by ps1filenames.py")
        colour = bool(names["green"] or names["blue"])
        if colour and fmt == "fits":
            raise InvalidParameterError(
                "colour FITS is not offered: request one FITS cutout per image"
            )
        position = self._position(params)
        refs = {c: self.lookup(n) for c, n in names.items() if n}
        if fmt == "fits":
            pixels, (x0, y0), header = self.cut_linear(refs["red"], position, size)
            return fitscut_fits(header, x0, y0, pixels), "image/fits", pixels.size

        display: dict[str, Any] = {
            "autoscale": float_param(params, "autoscale", DEFAULT_AUTOSCALE),
            "vmin": limits_param(params, "min", colour),
            "vmax": limits_param(params, "max", colour),
            "asinh": bool_param(params, "asinh", True),
            "inverted": bool_param(params, "invert", False),
        }
        bool_param(params, "compass", False)  # accepted; no compass is drawn
        output_size = float_param(params, "output_size")
        zoom = float_param(params, "zoom")
        if output_size is not None and not output_size.is_integer():
            raise InvalidParameterError(f"output_size={output_size} is not a whole number")
        planes = {c: self.cut_linear(r, position, size)[0] for c, r in refs.items()}
        if colour:
            channels = [planes.get("red"), planes.get("green"), planes.get("blue")]
            image = colour_picture(channels, **display)
        else:
            image = grey_picture(planes["red"], **display)
        height, width = image.shape[:2]
        out_w, out_h = picture_shape(width, height, int(output_size or 0) or None, zoom)
        body = encode_picture(image, fmt, out_w, out_h)
        return body, PICTURE_FORMATS[fmt][1], sum(p.size for p in planes.values())
