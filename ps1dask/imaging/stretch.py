"""Display stretches: linear flux to 8-bit grey or RGB images (pure numpy, no I/O).

Two families, sharing limits, inversion and 8-bit conversion:

**Generic** (:func:`stretch`, :func:`grey_image`, :func:`rgb_image`), used by ps1dask's own
rendering of stored cutouts:

1. limits: ``vmin``/``vmax`` if given, else the ``(100 - p, p)`` percentiles of the finite
   pixels (``p`` = ``autoscale``, 99.5 by default, as on the PS1 cutout page);
2. scale to 0..1, linearly or with an asinh curve ``asinh(x / s) / asinh(1 / s)`` (the
   softening ``s`` = 0.1 as in astropy's ``AsinhStretch``); colour images scale each
   channel on its own.

**fitscut** (:func:`fitscut_grey`, :func:`fitscut_rgb`), what the service's ``fitscut.cgi``
does for ``format=jpg|png`` (the emulator's own implementation must agree):

1. limits: the same percentiles, with fitscut's guard for noise-dominated cutouts: the top
   is raised to at least ``median + 5 * (median - low)`` (:func:`fitscut_limits`), so that
   pure sky is dark rather than grey snow;
2. asinh, colour-preserving as in Lupton et al. (2004): with ``t_k`` each channel on its
   limits and ``S = sum_k t_k``, every channel is multiplied by ``asinh(3 S) / (3 S)``,
   limited so that no channel exceeds 1, then divided by fitscut's display top (0.7 for
   one channel, 0.4 for two, 0.33 for three) (:func:`asinh_channels`); or linear.

Then, in both: optionally invert, then 8-bit. Blank (NaN) pixels, e.g. off the skycell or
in warp gaps, are black (white when inverted). Input arrays are in FITS order (row 0 =
south); the image builders flip them north up by default (``north_up=True``): with PS1's x
growing to the west that puts east on the left, the usual astronomical orientation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ps1dask.exceptions import InvalidParameterError

#: Default percentile of the automatic display limits (the PS1 cutout page's 99.5).
DEFAULT_AUTOSCALE = 99.5
#: Default softening of the generic asinh curve (fraction of the display range).
DEFAULT_SOFTENING = 0.1
#: Non-linearity of the asinh stretch (fitscut's value).
ASINH_NONLINEARITY = 3.0
#: Value shown as full white after the asinh stretch, by number of channels (fitscut's
#: empirical values, giving similar contrast for grey and colour images).
ASINH_DISPLAY_TOP = {1: 0.7, 2: 0.4, 3: 0.33}
#: How far above the median the top limit must at least be, in units of median - low.
NOISE_GUARD = 5.0
#: Largest side of an image the service renders (pixels).
MAX_OUTPUT_SIZE = 6000

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]
Limit = float | Sequence[float] | None


def percentile_limits(
    data: npt.ArrayLike, autoscale: float = DEFAULT_AUTOSCALE
) -> tuple[float, float]:
    """Display limits ``(lo, hi)``: the ``100 - autoscale`` and ``autoscale`` percentiles.

    NaN and infinite pixels are ignored; an image with no finite pixel gives ``(0, 1)``, a
    flat one ``(v, v + 1)`` so that the scale is never degenerate.
    """
    return _percentiles(data, autoscale, guard=False)


def fitscut_limits(
    data: npt.ArrayLike, autoscale: float = DEFAULT_AUTOSCALE
) -> tuple[float, float]:
    """fitscut's automatic limits: :func:`percentile_limits`, with the top raised to at
    least ``median + 5 * (median - lo)`` for images of almost pure noise."""
    return _percentiles(data, autoscale, guard=True)


def _percentiles(data: npt.ArrayLike, autoscale: float, guard: bool) -> tuple[float, float]:
    p = float(autoscale)
    if not 50.0 < p <= 100.0:
        raise InvalidParameterError(f"autoscale {autoscale!r} must be a percentile in (50, 100]")
    arr = np.asarray(data, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, median, hi = (float(v) for v in np.percentile(finite, [100.0 - p, 50.0, p]))
    if guard:
        hi = max(hi, median + NOISE_GUARD * (median - lo))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def display_limits(
    data: npt.ArrayLike,
    vmin: float | None = None,
    vmax: float | None = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    noise_guard: bool = False,
) -> tuple[float, float]:
    """``(vmin, vmax)`` of one channel, any limit not given from :func:`percentile_limits`
    (:func:`fitscut_limits` with ``noise_guard``)."""
    if vmin is None or vmax is None:
        lo, hi = _percentiles(data, autoscale, guard=noise_guard)
        vmin = lo if vmin is None else float(vmin)
        vmax = hi if vmax is None else float(vmax)
    vmin, vmax = float(vmin), float(vmax)
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        raise InvalidParameterError(f"display limits ({vmin}, {vmax}) must be finite")
    if vmax == vmin:
        vmax = vmin + 1.0
    if vmax < vmin:
        raise InvalidParameterError(f"display limits: max {vmax} is below min {vmin}")
    return vmin, vmax


def _normalise(data: npt.ArrayLike, vmin: float, vmax: float) -> FloatArray:
    span = float(vmax) - float(vmin)
    if not span > 0:
        raise InvalidParameterError(f"display limits ({vmin}, {vmax}) are empty")
    return (np.asarray(data, dtype=np.float64) - float(vmin)) / span


def linear_scale(data: npt.ArrayLike, vmin: float, vmax: float) -> FloatArray:
    """``vmin..vmax`` linearly to 0..1 (clipped); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.clip(_normalise(data, vmin, vmax), 0.0, 1.0)


def asinh_channels(
    channels: Sequence[npt.ArrayLike],
    limits: Sequence[tuple[float, float]],
    nonlinearity: float = ASINH_NONLINEARITY,
) -> list[FloatArray]:
    """The colour-preserving asinh stretch of 1-3 channels to display values 0..1.

    A pixel blank (NaN) in every channel stays NaN; a channel blank where others are not
    counts as 0 there.
    """
    if not 1 <= len(channels) <= 3 or len(limits) != len(channels):
        raise InvalidParameterError("asinh_channels takes 1 to 3 channels and their limits")
    if not nonlinearity > 0:
        raise InvalidParameterError(f"asinh non-linearity {nonlinearity!r} must be > 0")
    norm = [_normalise(c, lo, hi) for c, (lo, hi) in zip(channels, limits)]
    blank = np.logical_and.reduce([~np.isfinite(t) for t in norm])
    norm = [np.where(np.isfinite(t), t, 0.0) for t in norm]
    total = np.sum(norm, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(
            total != 0, np.arcsinh(nonlinearity * total) / (nonlinearity * total), 1.0
        )
    scaled = [t * weight for t in norm]
    peak = np.max(scaled, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = [np.where(peak > 1.0, s / peak, s) for s in scaled]
    top = ASINH_DISPLAY_TOP[len(channels)]
    out = []
    for s in scaled:
        shown = np.clip(s / top, 0.0, 1.0)
        shown[blank] = np.nan
        out.append(shown)
    return out


def asinh_scale(
    data: npt.ArrayLike, vmin: float, vmax: float, softening: float = DEFAULT_SOFTENING
) -> FloatArray:
    """Linear 0..1 scale followed by ``asinh(x / s) / asinh(1 / s)``; NaN stays NaN."""
    if not softening > 0:
        raise InvalidParameterError(f"asinh softening {softening!r} must be > 0")
    x = linear_scale(data, vmin, vmax)
    return np.arcsinh(x / softening) / np.arcsinh(1.0 / softening)


def stretch(
    data: npt.ArrayLike,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    asinh: bool = True,
    softening: float = DEFAULT_SOFTENING,
) -> FloatArray:
    """Linear flux to display values 0..1 (NaN kept): limits, then asinh or linear."""
    lo, hi = display_limits(data, vmin, vmax, autoscale)
    if asinh:
        return asinh_scale(data, lo, hi, softening)
    return linear_scale(data, lo, hi)


def invert(values: npt.ArrayLike) -> FloatArray:
    """``1 - values`` for display values in 0..1 (NaN kept)."""
    return 1.0 - np.asarray(values, dtype=np.float64)


def to_uint8(values: npt.ArrayLike, nan_value: int = 0) -> ByteArray:
    """Display values 0..1 to bytes 0..255 (rounded, clipped; NaN -> ``nan_value``)."""
    arr = np.asarray(values, dtype=np.float64)
    out = np.rint(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    out[np.isnan(arr)] = np.uint8(nan_value)
    return out


def _check_2d(arr: npt.ArrayLike) -> FloatArray:
    out = np.asarray(arr, dtype=np.float64)
    if out.ndim != 2:
        raise InvalidParameterError(f"expected a 2-d image, got shape {out.shape}")
    return out


def grey_image(
    data: npt.ArrayLike,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    asinh: bool = True,
    softening: float = DEFAULT_SOFTENING,
    inverted: bool = False,
    north_up: bool = True,
) -> ByteArray:
    """A 2-D linear image (FITS row order) to an 8-bit grey image ``(H, W)`` (generic)."""
    arr = _check_2d(data)
    img = to_uint8(
        stretch(arr, vmin=vmin, vmax=vmax, autoscale=autoscale, asinh=asinh, softening=softening)
    )
    return _finish(img, inverted, north_up)


def rgb_image(
    red: npt.ArrayLike | None,
    green: npt.ArrayLike | None,
    blue: npt.ArrayLike | None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    asinh: bool = True,
    softening: float = DEFAULT_SOFTENING,
    inverted: bool = False,
    north_up: bool = True,
) -> ByteArray:
    """Colour composite ``(H, W, 3)`` of up to three linear images (FITS row order; generic).

    Each channel is stretched on its own display limits unless ``vmin``/``vmax`` are given.
    A missing channel (``None``) is the mean of the two others' display values, so two
    bands still make a colour image.
    """
    _channels(red, green, blue)  # validates
    scaled: list[FloatArray | None] = [
        None
        if chan is None
        else stretch(
            chan, vmin=vmin, vmax=vmax, autoscale=autoscale, asinh=asinh, softening=softening
        )
        for chan in (red, green, blue)
    ]
    return _compose(scaled, inverted, north_up)


def fitscut_grey(
    data: npt.ArrayLike,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    asinh: bool = True,
    inverted: bool = False,
    north_up: bool = True,
) -> ByteArray:
    """A grey picture as ``fitscut.cgi`` makes it: :func:`fitscut_limits` and fitscut's
    asinh (or linear)."""
    arr = _check_2d(data)
    lo, hi = display_limits(arr, vmin, vmax, autoscale, noise_guard=True)
    shown = asinh_channels([arr], [(lo, hi)])[0] if asinh else linear_scale(arr, lo, hi)
    return _finish(to_uint8(shown), inverted, north_up)


def fitscut_rgb(
    red: npt.ArrayLike | None,
    green: npt.ArrayLike | None,
    blue: npt.ArrayLike | None,
    *,
    vmin: Limit = None,
    vmax: Limit = None,
    autoscale: float = DEFAULT_AUTOSCALE,
    asinh: bool = True,
    inverted: bool = False,
    north_up: bool = True,
) -> ByteArray:
    """A colour picture as ``fitscut.cgi`` makes it from ``red``/``green``/``blue``.

    Limits per channel (:func:`fitscut_limits`, or ``vmin``/``vmax``: one value, or one per
    given channel in red, green, blue order), then the colour-preserving
    :func:`asinh_channels` (or linear). A missing channel (``None``) is shown as the mean of
    the two others.
    """
    given = [(k, arr) for k, arr in enumerate(_channels(red, green, blue)) if arr is not None]
    mins = _per_channel(vmin, len(given), "min")
    maxs = _per_channel(vmax, len(given), "max")
    limits = [
        display_limits(arr, lo, hi, autoscale, noise_guard=True)
        for (_, arr), lo, hi in zip(given, mins, maxs)
    ]
    if asinh:
        shown = asinh_channels([arr for _, arr in given], limits)
    else:
        shown = [linear_scale(arr, lo, hi) for (_, arr), (lo, hi) in zip(given, limits)]
    planes: list[FloatArray | None] = [None, None, None]
    for (k, _), values in zip(given, shown):
        planes[k] = values
    return _compose(planes, inverted, north_up)


def _channels(*chans: npt.ArrayLike | None) -> list[FloatArray | None]:
    out = [None if c is None else _check_2d(c) for c in chans]
    present = [c for c in out if c is not None]
    if len(present) < 2:
        raise InvalidParameterError("a colour image needs at least two of red, green, blue")
    if len({c.shape for c in present}) != 1:
        raise InvalidParameterError(
            f"colour channels must be 2-d images of one shape, got {[c.shape for c in present]}"
        )
    return out


def _compose(planes: list[FloatArray | None], inverted: bool, north_up: bool) -> ByteArray:
    """Display values of 2-3 channels to RGB bytes; a missing channel is the others' mean."""
    present = [p for p in planes if p is not None]
    if len(present) == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            fill = np.nanmean(np.stack(present), axis=0)
        planes = [fill if p is None else p for p in planes]
    img = np.stack([to_uint8(p) for p in planes], axis=-1)  # type: ignore[arg-type]
    return _finish(img, inverted, north_up)


def _finish(img: ByteArray, inverted: bool, north_up: bool) -> ByteArray:
    if inverted:
        img = 255 - img
    return np.ascontiguousarray(img[::-1] if north_up else img)


def _per_channel(value: Limit, n: int, name: str) -> list[float | None]:
    if value is None or isinstance(value, (int, float)):
        return [value] * n  # type: ignore[list-item]
    values = [float(v) for v in value]
    if len(values) == 1:
        return values * n  # type: ignore[return-value]
    if len(values) != n:
        raise InvalidParameterError(f"{name}: give one value or one per channel ({n})")
    return values  # type: ignore[return-value]


def output_shape(
    width: int, height: int, output_size: int | None = None, zoom: float | None = None
) -> tuple[int, int]:
    """Size ``(w, h)`` of a rendered image: longest side ``output_size``, else ``zoom`` times.

    The aspect ratio is kept (each side at least 1 pixel); neither may exceed 6000 pixels.
    """
    if output_size:
        n = int(output_size)
        if not 1 <= n <= MAX_OUTPUT_SIZE:
            raise InvalidParameterError(f"output_size {output_size!r} must be 1..{MAX_OUTPUT_SIZE}")
        scale = n / max(width, height)
    elif zoom:
        scale = float(zoom)
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidParameterError(f"zoom {zoom!r} must be a positive number")
    else:
        return int(width), int(height)
    w = max(1, round(width * scale))
    h = max(1, round(height * scale))
    if max(w, h) > MAX_OUTPUT_SIZE:
        raise InvalidParameterError(
            f"the rendered image would be {w}x{h} pixels (at most {MAX_OUTPUT_SIZE} per side)"
        )
    return w, h
