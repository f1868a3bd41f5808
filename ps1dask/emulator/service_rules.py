"""The rules of the PS1 image service, written for the emulator from its documentation.

Everything a client must get right, implemented here a second time and on purpose NOT by
importing :mod:`ps1dask.conventions`: the emulator is the client's independent witness, so a
mistake in the client's version makes an end-to-end test (the client's store against the
emulator's answers) fail instead of passing on both sides. The source is the service's
documented behaviour (``docs``/``PS1-SERVICE.md`` sections 2-5 and STScI's cutout service
page); only the tessellation (:mod:`ps1dask.tessellation`) and its data are shared.

- file names and parameters (filters, image types, ``size``);
- the fitscut cut rule: for the 1-based FITS pixel ``(xc, yc)`` of the position and a
  ``W x H`` cutout, ``x0 = floor(xc - 1 - W//2 + 0.5)`` (``y0`` likewise), FITS pixels
  ``x0+1 .. x0+W``; off-image pixels NaN;
- stack scaling: ``v = BZERO + BSCALE * j`` is asinh-scaled,
  ``flux = BOFFSET + BSOFTEN * (exp(v/a) - exp(-v/a))`` with ``a = 2.5 / ln 10``, and its
  inverse for writing files;
- what a FITS cutout's header carries (scaling and compression keywords removed, CRPIX
  shifted, RADESYS and TIMESYS added, the obsolete PC keywords kept);
- zero points, mask bits, and warp times: MJD-OBS is the TAI start of the exposure, the
  mid-exposure UTC time is ``MJD-OBS + EXPTIME/2`` converted with the leap-second table.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import SkycellId, project

_FloatArray = npt.NDArray[np.float64]

# --------------------------------------------------------------------------------------
# names, filters, image types
# --------------------------------------------------------------------------------------

#: The five filters in the service's default order.
FILTERS = "grizy"
#: Image types and the suffix each adds before ``.fits`` (service docs, section 2).
STACK_SUFFIXES = {
    "stack": "",
    "stack.wt": ".wt",
    "stack.mask": ".mask",
    "stack.exp": ".exp",
    "stack.num": ".num",
    "stack.expwt": ".expwt",
}
WARP_SUFFIXES = {"warp": "", "warp.wt": ".wt", "warp.mask": ".mask"}
IMAGE_TYPES = (*STACK_SUFFIXES, *WARP_SUFFIXES)
#: Largest cutout side ``fitscut.cgi`` accepts (pixels).
MAX_CUTOUT_SIDE = 6000

_SHORTNAME = re.compile(
    r"rings\.v3\.skycell\.(\d{4})\.(\d{3})\."
    r"(?:stk\.([grizy])\.unconv|wrp\.([grizy])\.(\d+)_(\d+))"
    r"(\.wt|\.mask|\.exp|\.num|\.expwt)?\.fits"
)


def is_warp_type(image_type: str) -> bool:
    return image_type in WARP_SUFFIXES


def parse_filters(filters: str | Sequence[str]) -> str:
    """A filter selection as a string in grizy order (``"i,g"`` -> ``"gi"``)."""
    text = filters if isinstance(filters, str) else "".join(filters)
    chars = set(text.replace(",", "").replace(" ", ""))
    unknown = sorted(chars - set(FILTERS))
    if unknown or not chars:
        raise InvalidParameterError(
            f"filters {filters!r}: expected a non-empty subset of {FILTERS!r}"
            + (f", unknown {unknown}" if unknown else "")
        )
    return "".join(f for f in FILTERS if f in chars)


def parse_types(types: str | Sequence[str]) -> tuple[str, ...]:
    """Image types from ``"stack,stack.wt"`` or a sequence, in the order given, once each."""
    items = types.split(",") if isinstance(types, str) else list(types)
    items = [t.strip() for t in items if t.strip()]
    unknown = [t for t in items if t not in IMAGE_TYPES]
    if unknown or not items:
        raise InvalidParameterError(
            f"image types {types!r}: unknown {unknown}; known types are {sorted(IMAGE_TYPES)}"
        )
    return tuple(dict.fromkeys(items))


def file_name(skycell: SkycellId, band: str, image_type: str, mjd: float | None = None) -> str:
    """Service path of an image: ``/rings.v3.skycell/PPPP/SSS/<shortname>``.

    Stacks: ``rings.v3.skycell.PPPP.SSS.stk.<f>.unconv[.suffix].fits``; warps:
    ``rings.v3.skycell.PPPP.SSS.wrp.<f>.<MJD with 5 decimals, '_' for '.'>[.suffix].fits``.
    """
    cell = f"{skycell.projcell:04d}.{skycell.subcell:03d}"
    if image_type in STACK_SUFFIXES:
        short = f"rings.v3.skycell.{cell}.stk.{band}.unconv{STACK_SUFFIXES[image_type]}.fits"
    elif image_type in WARP_SUFFIXES:
        if mjd is None:
            raise InvalidParameterError("a warp file name needs its MJD")
        stamp = f"{mjd:.5f}".replace(".", "_")
        short = f"rings.v3.skycell.{cell}.wrp.{band}.{stamp}{WARP_SUFFIXES[image_type]}.fits"
    else:
        raise InvalidParameterError(f"unknown image type {image_type!r}")
    return f"/rings.v3.skycell/{skycell.projcell:04d}/{skycell.subcell:03d}/{short}"


@dataclass(frozen=True)
class FileName:
    """What a service file name says."""

    skycell: SkycellId
    band: str
    image_type: str
    mjd: float | None


def parse_file_name(name: str) -> FileName:
    """Read a path or short name as ``ps1filenames.py`` lists it; InvalidParameterError if not."""
    short = name.rsplit("/", 1)[-1]
    match = _SHORTNAME.fullmatch(short)
    if match is None:
        raise InvalidParameterError(f"{name!r} is not a PS1 rings.v3 skycell file name")
    projcell, subcell, stack_band, warp_band, mjd_int, mjd_frac, suffix = match.groups()
    skycell = SkycellId(int(projcell), int(subcell))
    suffix = suffix or ""
    if stack_band:
        kind = {s: t for t, s in STACK_SUFFIXES.items()}[suffix]
        return FileName(skycell, stack_band, kind, None)
    kinds = {s: t for t, s in WARP_SUFFIXES.items()}
    if suffix not in kinds:
        raise InvalidParameterError(f"{name!r}: warps have no {suffix} images")
    return FileName(skycell, warp_band, kinds[suffix], float(f"{mjd_int}.{mjd_frac}"))


def parse_cutout_size(size: str) -> tuple[int, int]:
    """``size=N`` or ``size=W,H`` (pixels, each 1..6000) as ``(width, height)``."""
    try:
        sides = [int(part) for part in str(size).split(",")]
    except ValueError:
        raise InvalidParameterError(f"size {size!r} is not N or 'W,H' in pixels") from None
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or not all(1 <= side <= MAX_CUTOUT_SIDE for side in sides):
        raise InvalidParameterError(
            f"size {size!r}: each side must be 1..{MAX_CUTOUT_SIDE} pixels (0.25 arcsec each)"
        )
    return sides[0], sides[1]


# --------------------------------------------------------------------------------------
# the cut rule
# --------------------------------------------------------------------------------------


def header_pixel(header: Mapping[str, Any], ra: float, dec: float) -> tuple[float, float]:
    """1-based FITS pixel of (ra, dec) (degrees) by the image header's own TAN WCS.

    PS1 whole-file headers: CRVAL, CRPIX, CDELT and the obsolete PC00i00j matrix (x west,
    y north, one scale ``CDELT2 * PC002002``), as fitscut reads them.
    """
    scale = float(header["CDELT2"]) * float(header.get("PC002002", 1.0))
    x, y = project(
        np.asarray(ra, dtype=np.float64),
        np.asarray(dec, dtype=np.float64),
        float(header["CRVAL1"]),  # type: ignore[arg-type]
        float(header["CRVAL2"]),  # type: ignore[arg-type]
        scale,
    )
    return float(x) + float(header["CRPIX1"]), float(y) + float(header["CRPIX2"])


def cut_origin(xc: float, yc: float, width: int, height: int) -> tuple[int, int]:
    """0-based index ``(x0, y0)`` of the first pixel of a ``width x height`` cutout around
    the 1-based FITS pixel ``(xc, yc)``: ``x0 = floor(xc - 1 - width//2 + 0.5)``."""
    return (
        math.floor(xc - 1.0 - (width // 2) + 0.5),
        math.floor(yc - 1.0 - (height // 2) + 0.5),
    )


def cut_out(
    read: Any, naxis1: int, naxis2: int, x0: int, y0: int, width: int, height: int
) -> npt.NDArray[np.float32]:
    """The ``height x width`` float32 cutout at (x0, y0), NaN off the image.

    ``read(rows, cols)`` returns the linear pixels of 0-based row and column slices inside
    the image.
    """
    out = np.full((height, width), np.nan, dtype=np.float32)
    cols = (max(x0, 0), min(x0 + width, naxis1))
    rows = (max(y0, 0), min(y0 + height, naxis2))
    if cols[0] < cols[1] and rows[0] < rows[1]:
        out[rows[0] - y0 : rows[1] - y0, cols[0] - x0 : cols[1] - x0] = read(
            slice(*rows), slice(*cols)
        )
    return out


# --------------------------------------------------------------------------------------
# pixel scaling
# --------------------------------------------------------------------------------------

#: ``a`` of the stack asinh scaling: 2.5 / ln(10).
ASINH_SCALE = 2.5 / math.log(10.0)
#: BLANK of the int16 files.
BLANK_INT16 = -32768


def asinh_value(flux: npt.ArrayLike, bsoften: float, boffset: float) -> _FloatArray:
    """The asinh-scaled value ``v`` of linear flux: the inverse of the documented
    ``flux = BOFFSET + BSOFTEN * (exp(v/a) - exp(-v/a))``, i.e. ``a asinh((flux-BOFFSET)/(2 BSOFTEN))``."""
    shifted = np.asarray(flux, dtype=np.float64) - boffset
    return ASINH_SCALE * np.arcsinh(shifted / (2.0 * bsoften))


def to_disk(values: npt.ArrayLike, bzero: float, bscale: float) -> npt.NDArray[np.int16]:
    """Stored int16 ``j`` with ``values = BZERO + BSCALE * j`` (rounded, clipped), NaN -> BLANK."""
    v = np.asarray(values, dtype=np.float64)
    stored = np.clip(np.rint((v - bzero) / bscale), -32767.0, 32767.0)
    stored[~np.isfinite(v)] = BLANK_INT16
    return stored.astype(np.int16)


def linear_flux(stored: npt.ArrayLike, header: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    """What fitscut puts in a FITS cutout: stored integers to linear flux (float32).

    ``BLANK`` -> NaN, ``v = BZERO + BSCALE * j``, then where the header has BSOFTEN and
    BOFFSET ``flux = BOFFSET + BSOFTEN * (exp(v/a) - exp(-v/a))``.
    """
    raw = np.asarray(stored)
    value = raw.astype(np.float64)
    value = float(header.get("BZERO", 0.0)) + float(header.get("BSCALE", 1.0)) * value
    if "BLANK" in header:
        value[raw == int(header["BLANK"])] = np.nan
    if "BSOFTEN" in header and "BOFFSET" in header:
        scaled = value / ASINH_SCALE
        value = float(header["BOFFSET"]) + float(header["BSOFTEN"]) * (
            np.exp(scaled) - np.exp(-scaled)
        )
    return value.astype(np.float32)


# --------------------------------------------------------------------------------------
# FITS cutout headers
# --------------------------------------------------------------------------------------

#: What fitscut removes from the source header of a linear FITS cutout (besides Z*).
_REMOVED_FROM_CUTOUTS = frozenset(
    {"BZERO", "BSCALE", "BLANK", "BSOFTEN", "BOFFSET", "XTENSION", "EXTNAME", "PCOUNT", "GCOUNT"}
)
_REBUILT = frozenset({"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"})


def fitscut_header(source: fits.Header, x0: int, y0: int, width: int, height: int) -> fits.Header:
    """The header of a FITS cutout at 0-based (x0, y0) of an image with header ``source``.

    An uncompressed float32 primary HDU; the source's cards copied except the scaling,
    compression (``Z*``) and extension keywords; ``CRPIXn`` reduced by x0 (y0); RADESYS
    (FK5) and TIMESYS (TAI) added, as the service has done since 2019 and 2022; the obsolete
    PC00i00j keywords left as they are.
    """
    out = fits.Header(
        [
            fits.Card("SIMPLE", True),
            fits.Card("BITPIX", -32),
            fits.Card("NAXIS", 2),
            fits.Card("NAXIS1", int(width)),
            fits.Card("NAXIS2", int(height)),
        ]
    )
    for card in _kept_cards(source):
        out.append(fits.Card.fromstring(card.image))
    for axis, offset in (("1", x0), ("2", y0)):
        if f"CRPIX{axis}" in out:
            out[f"CRPIX{axis}"] = float(out[f"CRPIX{axis}"]) - offset
    out["RADESYS"] = "FK5"
    out["TIMESYS"] = "TAI"
    return out


def _kept_cards(source: fits.Header) -> Iterator[fits.Card]:
    """The cards of a skycell header a cutout keeps (structure, scaling, compression,
    comments and history dropped; the rebuilt ones follow separately)."""
    for card in source.cards:
        key = card.keyword
        if key in _REMOVED_FROM_CUTOUTS or key in _REBUILT or key.startswith("Z"):
            continue
        if key in ("", "COMMENT", "HISTORY"):
            continue
        yield card


#: The comments astropy's PrimaryHDU gives its structural cards (a cutout's bytes match it).
_PRIMARY_CARDS = (
    ("SIMPLE", True, "conforms to FITS standard"),
    ("BITPIX", -32, "array data type"),
    ("NAXIS", 2, "number of array dimensions"),
)


@functools.lru_cache(maxsize=64)
def _primary_cards(width: int, height: int) -> tuple[str, ...]:
    return (
        *(fits.Card(*card).image for card in _PRIMARY_CARDS),
        fits.Card("NAXIS1", width).image,
        fits.Card("NAXIS2", height).image,
    )


def fitscut_fits(source: fits.Header, x0: int, y0: int, pixels: npt.NDArray[np.float32]) -> bytes:
    """The FITS file of a cutout: :func:`fitscut_header` and ``pixels`` (float32, (height,
    width)) as an uncompressed primary HDU, byte for byte what astropy writes for
    ``PrimaryHDU(pixels, fitscut_header(...))``.

    Written from the cards' text: astropy's HDU and writer cost about 2.5 ms of CPU per
    cutout, which on a small machine the emulator takes from the clients it serves.
    """
    height, width = pixels.shape
    images = list(_primary_cards(int(width), int(height)))
    where: dict[str, int] = {}
    for card in _kept_cards(source):
        key = card.keyword
        where.setdefault(key, len(images))
        images.append(card.image)
    for key, value in (
        ("CRPIX1", float(source["CRPIX1"]) - x0 if "CRPIX1" in where else None),
        ("CRPIX2", float(source["CRPIX2"]) - y0 if "CRPIX2" in where else None),
        ("RADESYS", "FK5"),
        ("TIMESYS", "TAI"),
    ):
        if value is None:
            continue
        if key in where:  # the card's value replaced, its comment kept
            old = fits.Card.fromstring(images[where[key]])
            images[where[key]] = fits.Card(key, value, old.comment).image
        else:
            images.append(fits.Card(key, value).image)
    images.append("END")
    header = "".join(image.ljust(80) for image in images)
    header += " " * (-len(header) % 2880)
    data = np.ascontiguousarray(pixels, dtype=">f4").tobytes()
    return header.encode("ascii") + data + b"\0" * (-len(data) % 2880)


# --------------------------------------------------------------------------------------
# zero points and mask bits
# --------------------------------------------------------------------------------------


def stack_zero_point(exptime: float) -> float:
    """Stack AB zero point: ``25 + 2.5 log10(EXPTIME)``."""
    return 25.0 + 2.5 * math.log10(exptime)


def warp_zero_point(fpa_zp: float, exptime: float) -> float:
    """Warp AB zero point: ``FPA.ZP + 2.5 log10(EXPTIME)``."""
    return fpa_zp + 2.5 * math.log10(exptime)


def counts_of_magnitude(mag: npt.ArrayLike, zero_point: float) -> _FloatArray:
    """Counts of an AB magnitude in an image of the given zero point."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zero_point))


#: 16-bit mask bits of ``.mask`` images (service docs, section 5).
MASK_BITS = {
    "FLAT": 0x2,
    "DARK": 0x4,
    "BLANK": 0x8,
    "CTE": 0x10,
    "SAT": 0x20,
    "LOW": 0x40,
    "SUSPECT": 0x80,
    "CR": 0x100,
    "SPIKE": 0x200,
    "GHOST": 0x400,
    "STREAK": 0x800,
    "STARCORE": 0x1000,
    "CONV.BAD": 0x2000,
    "CONV.POOR": 0x4000,
}

# --------------------------------------------------------------------------------------
# time: TAI, UTC, mid-exposure
# --------------------------------------------------------------------------------------

#: TAI - UTC (s) from each UTC MJD on (IERS Bulletin C; PS1 observed 2009-2014).
_LEAP_SECONDS = (
    (51179, 32.0),  # 1999-01-01
    (53736, 33.0),  # 2006-01-01
    (54832, 34.0),  # 2009-01-01
    (56109, 35.0),  # 2012-07-01
    (57204, 36.0),  # 2015-07-01
    (57754, 37.0),  # 2017-01-01
)
_LEAP_DAYS = [day for day, _ in _LEAP_SECONDS]


def _tai_minus_utc(utc_day: int) -> float:
    i = bisect.bisect_right(_LEAP_DAYS, utc_day) - 1
    if i < 0:
        raise InvalidParameterError(f"UTC MJD {utc_day} is before the emulator's leap table")
    return _LEAP_SECONDS[i][1]


def utc_to_tai(mjd_utc: float) -> float:
    """TAI MJD of a UTC MJD.

    The fraction of a UTC day that ends with a leap second is a fraction of its 86401 s
    (the IAU SOFA convention for UTC as a day count), so times stay continuous across it.
    """
    day = math.floor(mjd_utc)
    start = _tai_minus_utc(day)
    length = 86400.0 + _tai_minus_utc(day + 1) - start
    return day + ((mjd_utc - day) * length + start) / 86400.0


def tai_to_utc(mjd_tai: float) -> float:
    """UTC MJD of a TAI MJD (the inverse of :func:`utc_to_tai`)."""
    utc = mjd_tai - _tai_minus_utc(math.floor(mjd_tai)) / 86400.0
    for _ in range(3):  # converges in one step off leap days, two on them
        utc += mjd_tai - utc_to_tai(utc)
    return utc


def mid_exposure_utc(mjd_obs_tai: float, exptime: float) -> float:
    """UTC MJD at mid-exposure of a warp: ``MJD-OBS`` (TAI, start) plus ``EXPTIME/2``."""
    return tai_to_utc(mjd_obs_tai + exptime / 2.0 / 86400.0)
