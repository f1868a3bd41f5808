"""Display settings and pure array renderers: linear flux in, 8-bit grey or RGB out.

Built on :mod:`ps1dask.imaging.stretch`, the stretches of the service's ``fitscut.cgi``
(tested against the emulator's own implementation of them), so a grey picture
made here from a stored cutout is, pixel for pixel, the picture the service gives for the
same pixels and settings: limits at the ``(100 - autoscale, autoscale)`` percentiles (with
fitscut's guard for noise-only cutouts) or ``vmin``/``vmax``, fitscut's asinh or linear,
invert. This module adds:

* :class:`Display`: the user's settings in one validated object that the viewer parses
  from a query string;
* ``contrast``: the display range shrinks around its lower limit (``vmax' = vmin +
  (vmax - vmin) / contrast``): 2 is twice as bright, 0.5 half;
* two colour composites of three bands:

  - ``"fitscut"``: the service's colour picture (``red``/``green``/``blue`` of
    ``fitscut.cgi``): each band on its own display limits, then the colour-preserving
    asinh. As every band's limits come from its own pixels, a star that dominates its
    cutout reaches the top in every band and looks white whatever its colour.
  - ``"lupton"`` (default): Lupton et al. (2004, PASP 116, 133). The bands are put on one
    flux scale (AB microjansky from their zero points), sky subtracted, and stretched on
    *common* limits with the same colour-preserving asinh, so that every pixel keeps the
    flux ratios of its bands: a red star is red, also where it saturates.

Arrays are in FITS row order (row 0 = south) and come out north up unless
``north_up=False``. NaN pixels (off the skycell, warp gaps) are black, white when inverted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.exceptions import InvalidParameterError
from ps1dask.imaging import (
    ASINH_DISPLAY_TOP,
    ASINH_NONLINEARITY,
    DEFAULT_AUTOSCALE,
    display_limits,
    encode_image,
    fitscut_grey,
    output_shape,
    resize_image,
    to_uint8,
)
from ps1dask.imaging import fitscut_rgb as _fitscut_rgb

ByteArray = npt.NDArray[np.uint8]
FloatArray = npt.NDArray[np.float64]

#: Display curves.
STRETCHES = ("asinh", "linear")
#: Colour composite methods.
COLOUR_METHODS = ("lupton", "fitscut")
#: PS1 filters from blue to red.
FILTER_ORDER = "grizy"
#: Colour channels, as in ``fitscut.cgi``'s parameter names.
CHANNELS = ("red", "green", "blue")
#: AB zero point of microjansky (mag = -2.5 log10(f / uJy) + 23.9).
_UJY_ZEROPOINT = 23.9


@dataclass(frozen=True)
class Display:
    """How to turn linear pixels into display values (validated on creation).

    ``stretch`` is ``"asinh"`` (fitscut's) or ``"linear"``; the limits are ``vmin``/``vmax``
    when given, else the ``(100 - autoscale, autoscale)`` percentiles of the finite pixels
    with fitscut's guard for noise-only cutouts; then the range is divided by
    ``contrast``; ``invert`` makes a negative.
    """

    stretch: str = "asinh"
    autoscale: float = DEFAULT_AUTOSCALE
    vmin: float | None = None
    vmax: float | None = None
    contrast: float = 1.0
    invert: bool = False

    def __post_init__(self) -> None:
        if self.stretch not in STRETCHES:
            raise InvalidParameterError(f"stretch {self.stretch!r}: expected one of {STRETCHES}")
        if not 50.0 < float(self.autoscale) <= 100.0:
            raise InvalidParameterError(
                f"autoscale {self.autoscale!r} must be a percentile in (50, 100]"
            )
        c = float(self.contrast)
        if not (math.isfinite(c) and 0.01 <= c <= 1000.0):
            raise InvalidParameterError(f"contrast {self.contrast!r} must be in 0.01..1000")
        for name in ("vmin", "vmax"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(float(v)):
                raise InvalidParameterError(f"{name} {v!r} must be a finite number")

    @property
    def asinh(self) -> bool:
        return self.stretch == "asinh"

    def limits(self, data: npt.ArrayLike) -> tuple[float, float]:
        """Display limits of ``data``: explicit, else fitscut's automatic ones
        (:func:`ps1dask.imaging.fitscut_limits`), then divided by the contrast."""
        lo, hi = display_limits(data, self.vmin, self.vmax, self.autoscale, noise_guard=True)
        return lo, lo + (hi - lo) / float(self.contrast)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base: Display | None = None) -> Display:
        """Settings from string parameters (a query string): ``stretch``, ``autoscale``,
        ``min``/``vmin``, ``max``/``vmax``, ``contrast``, ``invert`` (and fitscut's
        ``asinh=true|false``)."""
        d = base or cls()
        changes: dict[str, Any] = {}

        def number(*names: str) -> float | None:
            for n in names:
                raw = params.get(n)
                if raw is not None and str(raw).strip() != "":
                    try:
                        return float(raw)
                    except ValueError:
                        raise InvalidParameterError(f"{n}={raw!r} is not a number") from None
            return None

        if params.get("stretch"):
            changes["stretch"] = str(params["stretch"]).lower()
        elif "asinh" in params:
            changes["stretch"] = "asinh" if _truthy(params["asinh"]) else "linear"
        for key, names in (
            ("autoscale", ("autoscale",)),
            ("vmin", ("vmin", "min")),
            ("vmax", ("vmax", "max")),
            ("contrast", ("contrast",)),
        ):
            v = number(*names)
            if v is not None:
                changes[key] = v
        if "invert" in params:
            changes["invert"] = _truthy(params["invert"])
        return replace(d, **changes)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "t", "y"):
        return True
    if text in ("0", "false", "no", "off", "f", "n", ""):
        return False
    raise InvalidParameterError(f"{value!r} is not a yes/no value")


def display_of(display: Display | None = None, **overrides: Any) -> Display:
    """A :class:`Display` from an optional base and keyword overrides (``None`` ignored)."""
    base = display or Display()
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - set(Display.__dataclass_fields__)
    if unknown:
        raise InvalidParameterError(f"unknown display settings {sorted(unknown)}")
    return replace(base, **changes) if changes else base


def _resize(img: ByteArray, size: int | None) -> ByteArray:
    if size:
        w, h = output_shape(img.shape[1], img.shape[0], int(size))
        img = resize_image(img, w, h)
    return img


def grey(
    data: npt.ArrayLike,
    display: Display | None = None,
    *,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """A 2-d linear image (FITS row order) to an 8-bit grey picture ``(H, W)``, as fitscut.

    ``settings`` override fields of ``display`` (``stretch``, ``autoscale``, ``vmin``,
    ``vmax``, ``contrast``, ``invert``); ``size`` resamples the picture to that longest
    side. NaN pixels are black (white when inverted).
    """
    d = display_of(display, **settings)
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 2:
        raise InvalidParameterError(f"expected a 2-d image, got shape {arr.shape}")
    lo, hi = d.limits(arr)
    img = fitscut_grey(arr, vmin=lo, vmax=hi, asinh=d.asinh, inverted=d.invert, north_up=north_up)
    return _resize(img, size)


def _check_channels(channels: Sequence[npt.ArrayLike | None]) -> list[FloatArray | None]:
    out = [None if c is None else np.asarray(c, dtype=np.float64) for c in channels]
    given = [c for c in out if c is not None]
    if len(given) < 2:
        raise InvalidParameterError("a colour image needs at least two of red, green, blue")
    shapes = {c.shape for c in given}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise InvalidParameterError(
            f"colour channels must be 2-d images of one shape, got {shapes}"
        )
    return out


def fitscut_rgb(
    red: npt.ArrayLike | None,
    green: npt.ArrayLike | None,
    blue: npt.ArrayLike | None,
    display: Display | None = None,
    *,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """The service's colour composite: each band on its own display limits (then divided
    by the contrast), fitscut's colour-preserving asinh or linear. With default settings
    this is pixel for pixel :func:`ps1dask.imaging.fitscut_rgb`, the service's colour
    JPEG/PNG before encoding. A missing band (``None``) is the mean of the others."""
    d = display_of(display, **settings)
    chans = _check_channels([red, green, blue])
    limits = [d.limits(c) for c in chans if c is not None]
    img = _fitscut_rgb(
        *chans,
        vmin=[lo for lo, _ in limits],
        vmax=[hi for _, hi in limits],
        autoscale=d.autoscale,
        asinh=d.asinh,
        inverted=d.invert,
        north_up=north_up,
    )
    return _resize(img, size)


def sky_level(data: npt.ArrayLike) -> tuple[float, float]:
    """Robust sky level and noise of an image: median and 1.4826 x MAD of finite pixels."""
    arr = np.asarray(data, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return 0.0, 0.0
    med = float(np.median(finite))
    return med, float(1.4826 * np.median(np.abs(finite - med)))


#: Automatic top of the Lupton composite: at least this many times the intensity's noise.
LUPTON_NOISE_GUARD = 8.0


def lupton_rgb(
    red: npt.ArrayLike | None,
    green: npt.ArrayLike | None,
    blue: npt.ArrayLike | None,
    display: Display | None = None,
    *,
    zeropoints: Sequence[float | None] | None = None,
    subtract_sky: bool = True,
    black: float = 1.0,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """Colour-preserving composite (Lupton et al. 2004) of three linear images.

    1. each band to one flux scale: microjansky from its AB ``zeropoints`` (counts as
       they are where none is given or it is NaN);
    2. ``subtract_sky``: minus its median and a black point of ``black`` times its noise,
       so that the sky is dark in every band rather than coloured speckle;
    3. one pair of limits for all bands: ``vmin``/``vmax`` if given, else 0 and the
       ``autoscale`` percentile of the mean intensity (at least 8 times its noise, so that
       an empty field stays dark), divided by ``contrast``;
    4. fitscut's colour-preserving asinh of the summed intensity, or linear, with
       saturation to colour: bands keep their flux ratios, also in saturated cores.

    A missing band (``None``) is the mean of the two others. Pixels blank (NaN) in every
    band are black (white when inverted); a band blank where others are not counts as 0.
    """
    d = display_of(display, **settings)
    chans = _check_channels([red, green, blue])
    zps = list(zeropoints) if zeropoints is not None else [None, None, None]
    if len(zps) != 3:
        raise InvalidParameterError("zeropoints: give one per channel (red, green, blue)")
    work: list[FloatArray | None] = []
    for chan, zp in zip(chans, zps):
        if chan is None:
            work.append(None)
            continue
        c = chan.copy()
        if zp is not None and math.isfinite(float(zp)):
            c *= 10.0 ** (-0.4 * (float(zp) - _UJY_ZEROPOINT))
        if subtract_sky:
            level, noise = sky_level(c)
            c -= level + float(black) * noise
        work.append(c)
    present = [w for w in work if w is not None]
    if len(present) == 2:
        fill = 0.5 * (present[0] + present[1])
        work = [fill if w is None else w for w in work]
    planes = [np.asarray(w) for w in work]
    stack = np.stack(planes)
    n_finite = np.isfinite(stack).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # pixels blank in every band: NaN
        intensity = np.where(n_finite > 0, np.nansum(stack, axis=0) / n_finite, np.nan)
    finite = intensity[np.isfinite(intensity)]
    if d.vmin is not None or d.vmax is not None:
        lo, hi = display_limits(intensity, d.vmin, d.vmax, d.autoscale)
    elif finite.size:
        lo = 0.0
        level, noise = sky_level(finite)
        hi = max(float(np.percentile(finite, d.autoscale)), level + LUPTON_NOISE_GUARD * noise)
        if not hi > lo:
            hi = lo + 1.0
    else:
        lo, hi = 0.0, 1.0
    hi = lo + (hi - lo) / float(d.contrast)
    img = np.stack([to_uint8(s) for s in _true_colour(planes, lo, hi, d.asinh)], axis=-1)
    if d.invert:
        img = 255 - img
    if north_up:
        img = img[::-1]
    return _resize(np.ascontiguousarray(img), size)


def _true_colour(planes: list[FloatArray], lo: float, hi: float, asinh: bool) -> list[FloatArray]:
    """Three bands on common limits to display values 0..1 that keep their ratios.

    fitscut's asinh of the summed intensity (:func:`ps1dask.imaging.asinh_channels`:
    ``t_k * asinh(3 S) / (3 S) / 0.33``) or linear, but where a band would pass white, all
    three are divided by the brightest instead of clipped (Lupton et al. 2004), so that a
    saturated red star stays red rather than turning yellow or white.
    """
    blank = np.logical_and.reduce([~np.isfinite(p) for p in planes])
    t = [np.clip(np.where(np.isfinite(p), (p - lo) / (hi - lo), 0.0), 0.0, None) for p in planes]
    if asinh:
        total = np.sum(t, axis=0)
        nl = ASINH_NONLINEARITY
        with np.errstate(divide="ignore", invalid="ignore"):
            weight = np.where(total > 0, np.arcsinh(nl * total) / (nl * total), 1.0)
        t = [x * weight / ASINH_DISPLAY_TOP[3] for x in t]
    peak = np.max(t, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = [np.where(peak > 1.0, x / peak, x) for x in t]
    for x in out:
        x[blank] = np.nan
    return out


def composite(
    red: npt.ArrayLike | None,
    green: npt.ArrayLike | None,
    blue: npt.ArrayLike | None,
    display: Display | None = None,
    *,
    method: str = "lupton",
    zeropoints: Sequence[float | None] | None = None,
    north_up: bool = True,
    size: int | None = None,
    **settings: Any,
) -> ByteArray:
    """A colour composite by ``method`` (``"lupton"``, default, or ``"fitscut"``)."""
    if method == "lupton":
        return lupton_rgb(
            red,
            green,
            blue,
            display,
            zeropoints=zeropoints,
            north_up=north_up,
            size=size,
            **settings,
        )
    if method == "fitscut":
        return fitscut_rgb(red, green, blue, display, north_up=north_up, size=size, **settings)
    raise InvalidParameterError(f"colour method {method!r}: expected one of {COLOUR_METHODS}")


def default_colour_filters(filters: str | Sequence[str]) -> tuple[str, str | None, str]:
    """The service's choice of colour bands among ``filters``: (red, green, blue) = (the
    reddest, the middle one, the bluest); y/i/g from grizy, i/r/g from gri; with two
    filters green is ``None`` (the mean of the others)."""
    present = sorted({f for f in filters if f in FILTER_ORDER}, key=FILTER_ORDER.index)
    if len(present) < 2:
        raise InvalidParameterError(
            f"a colour image needs at least two of grizy, the store has {''.join(present) or 'none'}"
        )
    middle = present[len(present) // 2] if len(present) > 2 else None
    return present[-1], middle, present[0]


def parse_colour_filters(
    spec: str | Sequence[str] | None, available: str | Sequence[str]
) -> tuple[str | None, ...]:
    """``(red, green, blue)`` filter names from a spec like ``"yig"`` or ``"y,i,g"`` (red
    first; ``None`` or ``""`` = :func:`default_colour_filters`); each must be available."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return default_colour_filters(available)
    names = [s for s in (spec.replace(",", "") if isinstance(spec, str) else spec)]
    if len(names) not in (2, 3):
        raise InvalidParameterError(
            f"colour filters {spec!r}: give three filters red, green, blue (e.g. 'yig') or two"
        )
    missing = [n for n in names if n not in available]
    if missing:
        raise InvalidParameterError(
            f"colour filters {spec!r}: {''.join(missing)} not in the store's filters {''.join(available)}"
        )
    if len(names) == 2:
        return names[0], None, names[1]
    return tuple(names)


def to_pil(image: ByteArray) -> Any:
    """An 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` array as a :class:`PIL.Image.Image`."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise InvalidParameterError(f"expected a uint8 image, got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr)


def encode(image: ByteArray, fmt: str = "png", quality: int = 90) -> bytes:
    """JPEG or PNG bytes of an 8-bit image (``fmt`` jpg, jpeg or png)."""
    return encode_image(np.asarray(image), fmt, quality)
