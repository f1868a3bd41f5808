"""Display images from linear PS1 pixels: stretches (pure) and JPEG/PNG encoding.

:func:`fitscut_grey` / :func:`fitscut_rgb` make the pictures of the service's
``fitscut.cgi`` (the emulator has its own, :mod:`ps1dask.emulator.pictures`); :func:`grey_image` / :func:`rgb_image`
and :func:`stretch` are the generic stretches ps1dask's own rendering builds on. See
:mod:`ps1dask.imaging.stretch`.

>>> import numpy as np
>>> from ps1dask.imaging import grey_image, encode_image
>>> img = grey_image(np.random.default_rng(0).normal(size=(64, 64)))
>>> encode_image(img, "png")[:4]
b'\\x89PNG'
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt

from ps1dask.exceptions import InvalidParameterError
from ps1dask.imaging.stretch import (
    ASINH_DISPLAY_TOP,
    ASINH_NONLINEARITY,
    DEFAULT_AUTOSCALE,
    DEFAULT_SOFTENING,
    MAX_OUTPUT_SIZE,
    asinh_channels,
    asinh_scale,
    display_limits,
    fitscut_grey,
    fitscut_limits,
    fitscut_rgb,
    grey_image,
    invert,
    linear_scale,
    output_shape,
    percentile_limits,
    rgb_image,
    stretch,
    to_uint8,
)

__all__ = [
    "ASINH_DISPLAY_TOP",
    "ASINH_NONLINEARITY",
    "DEFAULT_AUTOSCALE",
    "DEFAULT_SOFTENING",
    "IMAGE_FORMATS",
    "MAX_OUTPUT_SIZE",
    "asinh_channels",
    "asinh_scale",
    "display_limits",
    "encode_image",
    "fitscut_grey",
    "fitscut_limits",
    "fitscut_rgb",
    "grey_image",
    "invert",
    "linear_scale",
    "output_shape",
    "percentile_limits",
    "resize_image",
    "rgb_image",
    "stretch",
    "to_uint8",
]

#: Accepted format names -> (Pillow format, MIME type).
IMAGE_FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}


def resize_image(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Resample an 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` image to ``width x height``.

    Shrinking averages (box filter, like fitscut's binning); enlarging repeats pixels
    (nearest), so single pixels stay visible as blocks.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.shape[1] == width and arr.shape[0] == height:
        return arr
    shrink = width <= arr.shape[1] and height <= arr.shape[0]
    method = Image.Resampling.BOX if shrink else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(arr).resize((int(width), int(height)), method))


def encode_image(image: npt.NDArray[np.uint8], fmt: str = "jpg", quality: int = 90) -> bytes:
    """Encode an 8-bit grey or RGB image (rows top to bottom) as JPEG or PNG bytes."""
    from PIL import Image

    try:
        pil_format, _ = IMAGE_FORMATS[fmt.lower()]
    except KeyError:
        raise InvalidParameterError(
            f"image format {fmt!r}: expected one of {sorted(IMAGE_FORMATS)}"
        ) from None
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise InvalidParameterError(
            f"expected a uint8 (H, W) or (H, W, 3) image, got {arr.dtype} {arr.shape}"
        )
    buf = io.BytesIO()
    options = {"quality": int(quality)} if pil_format == "JPEG" else {"optimize": False}
    Image.fromarray(arr).save(buf, format=pil_format, **options)
    return buf.getvalue()
