"""The JPEG/PNG pictures of the emulated ``fitscut.cgi``, written for the emulator.

The emulator's own implementation of fitscut's display (not :mod:`ps1dask.imaging`, the
client's, which must agree with it):

1. display limits per channel: ``min``/``max`` if given, else the ``100 - autoscale`` and
   ``autoscale`` percentiles of the finite pixels (99.5 by default), with the top raised to
   at least ``median + 5 (median - low)`` so that pure sky shows dark; no finite pixel gives
   (0, 1), a flat image (v, v + 1);
2. asinh, colour-preserving (Lupton et al. 2004): ``t_k`` each channel on its limits,
   ``S = sum t_k``, each channel times ``asinh(3 S) / (3 S)``, divided by the largest
   channel where that exceeds 1, then by the display top (0.7 for one channel, 0.4 for two,
   0.33 for three) and clipped to 0..1; or linear ``t`` clipped to 0..1;
3. 8 bits (rounded; blank pixels black), a missing colour channel the mean of the others,
   optionally inverted, north up (FITS row 0 at the bottom);
4. ``output_size`` (longest side) or ``zoom`` rescales: box averaging to shrink, nearest
   pixel to enlarge.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ps1dask.exceptions import InvalidParameterError

#: ``format=`` names and their (Pillow format, MIME type).
PICTURE_FORMATS = {
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "png": ("PNG", "image/png"),
}
DEFAULT_AUTOSCALE = 99.5
_NONLINEARITY = 3.0
_DISPLAY_TOP = {1: 0.7, 2: 0.4, 3: 0.33}
_NOISE_FLOOR = 5.0
_MAX_SIDE = 6000

_Floats = npt.NDArray[np.float64]
_Bytes = npt.NDArray[np.uint8]
Limit = float | Sequence[float] | None


def _limits(
    plane: _Floats, lo: float | None, hi: float | None, autoscale: float
) -> tuple[float, float]:
    if lo is None or hi is None:
        if not 50.0 < autoscale <= 100.0:
            raise InvalidParameterError(
                f"autoscale {autoscale!r} must be a percentile in (50, 100]"
            )
        finite = plane[np.isfinite(plane)]
        if finite.size == 0:
            auto_lo, auto_hi = 0.0, 1.0
        else:
            p_lo, p_mid, p_hi = np.percentile(finite, [100.0 - autoscale, 50.0, autoscale])
            auto_lo = float(p_lo)
            auto_hi = max(float(p_hi), float(p_mid) + _NOISE_FLOOR * (float(p_mid) - auto_lo))
            if not auto_hi > auto_lo:
                auto_hi = auto_lo + 1.0
        lo = auto_lo if lo is None else float(lo)
        hi = auto_hi if hi is None else float(hi)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidParameterError(f"display limits ({lo}, {hi}) must be finite")
    if hi == lo:
        hi = lo + 1.0
    if hi < lo:
        raise InvalidParameterError(f"display limits: max {hi} is below min {lo}")
    return lo, hi


def _on_limits(plane: _Floats, lo: float, hi: float) -> _Floats:
    return (plane - lo) / (hi - lo)


def _asinh(planes: list[_Floats], limits: list[tuple[float, float]]) -> list[_Floats]:
    scaled = [_on_limits(p, lo, hi) for p, (lo, hi) in zip(planes, limits)]
    blank = np.logical_and.reduce([~np.isfinite(t) for t in scaled])
    scaled = [np.where(np.isfinite(t), t, 0.0) for t in scaled]
    total = np.sum(scaled, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(
            total != 0, np.arcsinh(_NONLINEARITY * total) / (_NONLINEARITY * total), 1.0
        )
    scaled = [t * gain for t in scaled]
    brightest = np.max(scaled, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = [np.where(brightest > 1.0, t / brightest, t) for t in scaled]
    top = _DISPLAY_TOP[len(planes)]
    shown = []
    for t in scaled:
        s = np.clip(t / top, 0.0, 1.0)
        s[blank] = np.nan
        shown.append(s)
    return shown


def _linear(plane: _Floats, lo: float, hi: float) -> _Floats:
    with np.errstate(invalid="ignore"):
        return np.clip(_on_limits(plane, lo, hi), 0.0, 1.0)


def _bytes(shown: _Floats) -> _Bytes:
    out = np.rint(np.clip(np.nan_to_num(shown, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    out[np.isnan(shown)] = 0
    return out


def _finish(img: _Bytes, inverted: bool) -> _Bytes:
    if inverted:
        img = 255 - img
    return np.ascontiguousarray(img[::-1])


def _plane(data: npt.ArrayLike) -> _Floats:
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidParameterError(f"expected a 2-d image, got shape {arr.shape}")
    return arr


def grey_picture(
    data: npt.ArrayLike,
    *,
    vmin: float | None,
    vmax: float | None,
    autoscale: float,
    asinh: bool,
    inverted: bool,
) -> _Bytes:
    """fitscut's grey picture ``(H, W)`` of one linear cutout (FITS row order in)."""
    plane = _plane(data)
    lo, hi = _limits(plane, vmin, vmax, autoscale)
    shown = _asinh([plane], [(lo, hi)])[0] if asinh else _linear(plane, lo, hi)
    return _finish(_bytes(shown), inverted)


def _per_channel(value: Limit, n: int, name: str) -> list[float | None]:
    if value is None or isinstance(value, (int, float)):
        return [value] * n
    values = [float(v) for v in value]
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise InvalidParameterError(f"{name}: give one value or one per channel ({n})")
    return list(values)


def colour_picture(
    channels: Sequence[npt.ArrayLike | None],
    *,
    vmin: Limit,
    vmax: Limit,
    autoscale: float,
    asinh: bool,
    inverted: bool,
) -> _Bytes:
    """fitscut's colour picture ``(H, W, 3)`` of red, green, blue cutouts (any one None)."""
    given = [(k, _plane(c)) for k, c in enumerate(channels) if c is not None]
    if len(given) < 2:
        raise InvalidParameterError("a colour image needs at least two of red, green, blue")
    if len({p.shape for _, p in given}) != 1:
        raise InvalidParameterError("colour channels must be 2-d images of one shape")
    lows = _per_channel(vmin, len(given), "min")
    highs = _per_channel(vmax, len(given), "max")
    limits = [_limits(p, lo, hi, autoscale) for (_, p), lo, hi in zip(given, lows, highs)]
    if asinh:
        shown = _asinh([p for _, p in given], limits)
    else:
        shown = [_linear(p, lo, hi) for (_, p), (lo, hi) in zip(given, limits)]
    planes: list[_Floats | None] = [None, None, None]
    for (k, _), s in zip(given, shown):
        planes[k] = s
    if len(given) == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # blank in both: stays blank
            mean = np.nanmean(np.stack(shown), axis=0)
        planes = [mean if p is None else p for p in planes]
    img = np.stack([_bytes(p) for p in planes if p is not None], axis=-1)
    return _finish(img, inverted)


def picture_shape(
    width: int, height: int, output_size: int | None, zoom: float | None
) -> tuple[int, int]:
    """``(w, h)`` of the picture: longest side ``output_size``, else ``zoom`` times the cutout."""
    if output_size:
        if not 1 <= int(output_size) <= _MAX_SIDE:
            raise InvalidParameterError(f"output_size {output_size!r} must be 1..{_MAX_SIDE}")
        factor = int(output_size) / max(width, height)
    elif zoom:
        factor = float(zoom)
        if not (math.isfinite(factor) and factor > 0):
            raise InvalidParameterError(f"zoom {zoom!r} must be a positive number")
    else:
        return int(width), int(height)
    w, h = max(1, round(width * factor)), max(1, round(height * factor))
    if max(w, h) > _MAX_SIDE:
        raise InvalidParameterError(
            f"the rendered image would be {w}x{h} pixels (at most {_MAX_SIDE} per side)"
        )
    return w, h


def encode_picture(image: _Bytes, fmt: str, width: int, height: int) -> bytes:
    """The picture rescaled to ``width x height`` and encoded (JPEG quality 90, or PNG)."""
    from PIL import Image

    pil = Image.fromarray(np.asarray(image))
    if pil.size != (width, height):
        shrink = width <= pil.size[0] and height <= pil.size[1]
        method = Image.Resampling.BOX if shrink else Image.Resampling.NEAREST
        pil = pil.resize((int(width), int(height)), method)
    pil_format = PICTURE_FORMATS[fmt][0]
    options = {"quality": 90} if pil_format == "JPEG" else {"optimize": False}
    buf = io.BytesIO()
    pil.save(buf, format=pil_format, **options)
    return buf.getvalue()
