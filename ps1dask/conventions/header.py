"""Repairs of PS1 FITS headers, and what the service's cutout headers look like.

Whole skycell files use the obsolete ``PC00i00j`` keywords with CDELT, have no RADESYS (it is
FK5 J2000) and give warp times in TAI without TIMESYS. :func:`repair_header` fixes all three.
"""

from __future__ import annotations

from astropy.io import fits

#: Compression and scaling keywords that ``fitscut`` drops when it writes a linear cutout.
CUTOUT_DROPPED_KEYWORDS = (
    "BZERO",
    "BSCALE",
    "BLANK",
    "BSOFTEN",
    "BOFFSET",
    "XTENSION",
    "EXTNAME",
    "PCOUNT",
    "GCOUNT",
)

_OBSOLETE_PC = {(i, j): f"PC00{i}00{j}" for i in (1, 2) for j in (1, 2)}


def has_obsolete_pc(header: fits.Header) -> bool:
    return any(key in header for key in _OBSOLETE_PC.values())


def repair_header(header: fits.Header) -> fits.Header:
    """Return a copy of a PS1 header that every FITS/WCS reader interprets correctly.

    - ``PC00i00j`` x ``CDELTi`` -> standard ``CDi_j`` (the PC00i00j and CDELTi removed);
    - ``RADESYS = 'FK5'`` (and ``EQUINOX = 2000``) when absent;
    - ``LONPOLE = 180`` for the polar projection cell (tangent point at dec +90);
    - ``TIMESYS = 'TAI'`` when ``MJD-OBS`` is present without TIMESYS (PS1 warp times are TAI).
    """
    out = header.copy()
    if has_obsolete_pc(out):
        cdelt = (float(out.get("CDELT1", 1.0)), float(out.get("CDELT2", 1.0)))
        for (i, j), key in _OBSOLETE_PC.items():
            pc = float(out.get(key, 1.0 if i == j else 0.0))
            out[f"CD{i}_{j}"] = (cdelt[i - 1] * pc, "repaired from obsolete PC00i00j")
        for key in _OBSOLETE_PC.values():
            out.remove(key, ignore_missing=True)
        for key in ("CDELT1", "CDELT2"):
            out.remove(key, ignore_missing=True)
    if "RADESYS" not in out:
        out["RADESYS"] = ("FK5", "PS1 skycells are FK5 J2000")
        if "EQUINOX" not in out:
            out["EQUINOX"] = 2000.0
    if float(out.get("CRVAL2", 0.0)) == 90.0 and "LONPOLE" not in out:
        # The polar cell's pixel grid follows the gnomonic equations with y towards the
        # tangent meridian (LONPOLE 180); FITS readers would assume LONPOLE 0 and flip it.
        out["LONPOLE"] = (180.0, "PS1 tessellation convention at the pole")
    if "MJD-OBS" in out and "TIMESYS" not in out:
        out["TIMESYS"] = ("TAI", "PS1 MJD-OBS is TAI")
    return out


def cutout_header(source: fits.Header, x0: int, y0: int, width: int, height: int) -> fits.Header:
    """Header of a ``fitscut`` FITS cutout cut at 0-based offset (x0, y0) from ``source``.

    Mirrors the real service: scaling and compression keywords removed, ``CRPIXn`` reduced by
    the offset, RADESYS and TIMESYS added, the obsolete PC keywords kept.
    """
    out = fits.Header()
    out["SIMPLE"] = True
    out["BITPIX"] = -32
    out["NAXIS"] = 2
    out["NAXIS1"] = width
    out["NAXIS2"] = height
    skip = set(CUTOUT_DROPPED_KEYWORDS) | {
        "SIMPLE",
        "BITPIX",
        "NAXIS",
        "NAXIS1",
        "NAXIS2",
        "EXTEND",
    }
    for card in source.cards:
        key = card.keyword
        if key in skip or key.startswith("Z") or key in ("", "COMMENT", "HISTORY"):
            continue
        out.append(fits.Card.fromstring(card.image))  # a copy: never alias source cards
    if "CRPIX1" in out:
        out["CRPIX1"] = float(out["CRPIX1"]) - x0
    if "CRPIX2" in out:
        out["CRPIX2"] = float(out["CRPIX2"]) - y0
    out["RADESYS"] = "FK5"
    out["TIMESYS"] = "TAI"
    return out
