"""PS1 image types, filters and the service's file names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ps1dask.exceptions import InvalidParameterError
from ps1dask.tessellation import SkycellId
from ps1dask.wire import FILES_PREFIX

#: The five PS1 filters, bluest first (the service's default order).
FILTERS = "grizy"
#: Image types ps1filenames.py understands, and the suffix each adds to a file name.
STACK_TYPES = {
    "stack": "",
    "stack.wt": ".wt",
    "stack.mask": ".mask",
    "stack.exp": ".exp",
    "stack.num": ".num",
    "stack.expwt": ".expwt",
}
WARP_TYPES = {"warp": "", "warp.wt": ".wt", "warp.mask": ".mask"}
IMAGE_TYPES = {**STACK_TYPES, **WARP_TYPES}

_NAME_RE = re.compile(
    r"^rings\.v3\.skycell\.(?P<projcell>\d{4})\.(?P<subcell>\d{3})\."
    r"(?:stk\.(?P<sband>[grizy])\.unconv|wrp\.(?P<wband>[grizy])\.(?P<mjd>\d+_\d+))"
    r"(?P<suffix>\.wt|\.mask|\.exp|\.num|\.expwt)?\.fits$"
)


def parse_filters(filters: str | list[str] | tuple[str, ...]) -> str:
    """Normalise a filter selection to a string in grizy order, e.g. ``"ig"`` -> ``"gi"``."""
    chars = "".join(filters) if not isinstance(filters, str) else filters
    chars = chars.replace(",", "").replace(" ", "")
    unknown = sorted(set(chars) - set(FILTERS))
    if unknown or not chars:
        raise InvalidParameterError(
            f"filters {filters!r}: expected a non-empty subset of {FILTERS!r}"
            + (f", unknown {unknown}" if unknown else "")
        )
    return "".join(f for f in FILTERS if f in chars)


def parse_types(types: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalise image types (``"stack,stack.wt"`` or a sequence); unknown ones raise."""
    items = types.split(",") if isinstance(types, str) else list(types)
    items = [t.strip() for t in items if t.strip()]
    unknown = [t for t in items if t not in IMAGE_TYPES]
    if unknown or not items:
        raise InvalidParameterError(
            f"image types {types!r}: unknown {unknown}; known types are {sorted(IMAGE_TYPES)}"
        )
    return tuple(dict.fromkeys(items))


def part_types(
    types: str | list[str] | tuple[str, ...], part: Literal["stack", "warp"]
) -> tuple[str, ...]:
    """The image types of one part of a store: the part's own kinds only (the other part's
    raise, naming the job that takes them), with the part's flux image (``part``) first."""
    kinds = parse_types(types)
    allowed = STACK_TYPES if part == "stack" else WARP_TYPES
    wrong = [t for t in kinds if t not in allowed]
    if wrong:
        why = (
            "are warp images: use ps1dask.warps() for those; cutouts() takes"
            if part == "stack"
            else "are not warp images; warps() takes"
        )
        raise InvalidParameterError(f"types {wrong} {why} {sorted(allowed)}")
    return kinds if part in kinds else (part, *kinds)


def mjd_token(mjd: float) -> str:
    """MJD as warp file names write it: five decimals with ``_`` for the point."""
    return f"{mjd:.5f}".replace(".", "_")


def image_filename(
    skycell: SkycellId, band: str, image_type: str = "stack", mjd: float | None = None
) -> str:
    """Service path of an image, e.g. ``/rings.v3.skycell/1405/053/rings.v3....stk.g.unconv.fits``."""
    if image_type in STACK_TYPES:
        short = f"rings.v3.skycell.{skycell.short}.stk.{band}.unconv{STACK_TYPES[image_type]}.fits"
    elif image_type in WARP_TYPES:
        if mjd is None:
            raise InvalidParameterError("a warp file name needs its MJD")
        short = f"rings.v3.skycell.{skycell.short}.wrp.{band}.{mjd_token(mjd)}{WARP_TYPES[image_type]}.fits"
    else:
        raise InvalidParameterError(f"unknown image type {image_type!r}")
    return f"{FILES_PREFIX}{skycell.projcell:04d}/{skycell.subcell:03d}/{short}"


@dataclass(frozen=True)
class ImageName:
    """What a PS1 file name says: skycell, filter, type and (warps) the MJD token."""

    skycell: SkycellId
    band: str
    image_type: str
    mjd: float | None

    @property
    def is_warp(self) -> bool:
        return self.image_type in WARP_TYPES


def parse_filename(name: str) -> ImageName:
    """Parse a file name or path as listed by ``ps1filenames.py``; ``ValueError`` if foreign."""
    short = name.rsplit("/", 1)[-1]
    match = _NAME_RE.fullmatch(short)  # not .match: "$" also matches before a final "\n"
    if not match:
        raise InvalidParameterError(f"{name!r} is not a PS1 rings.v3 skycell file name")
    sid = SkycellId(int(match["projcell"]), int(match["subcell"]))
    suffix = match["suffix"] or ""
    if match["sband"]:
        kind = next(t for t, s in STACK_TYPES.items() if s == suffix)
        return ImageName(sid, match["sband"], kind, None)
    kinds = [t for t, s in WARP_TYPES.items() if s == suffix]
    if not kinds:
        raise InvalidParameterError(f"{name!r}: warps have no {suffix} images")
    return ImageName(sid, match["wband"], kinds[0], float(match["mjd"].replace("_", ".")))
