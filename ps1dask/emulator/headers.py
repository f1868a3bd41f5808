"""Headers of the emulator's whole-file images, as the service writes them.

Obsolete ``PC00i00j`` keywords with CDELT, no RADESYS, no TIMESYS; warps carry MJD-OBS (TAI,
start of exposure), EXPTIME and ``HIERARCH FPA.ZP``; stacks carry the asinh keywords
BSOFTEN/BOFFSET. HIERARCH cards are built explicitly, so astropy has nothing to warn about.
"""

from __future__ import annotations

import functools

from astropy.io import fits

from ps1dask.emulator.image_models import BLANK, stack_model, warp_model
from ps1dask.emulator.survey import ImageRef, check_image, exposure_of
from ps1dask.tessellation import HEADER_CDELT_DEG, skycell_geometry_of

# --------------------------------------------------------------------------------------
# headers
# --------------------------------------------------------------------------------------

_MASK_NAMES = (
    ("FLAT", 0x2),
    ("DARK", 0x4),
    ("BLANK", 0x8),
    ("CTE", 0x10),
    ("SAT", 0x20),
    ("LOW", 0x40),
    ("SUSPECT", 0x80),
    ("CR", 0x100),
    ("SPIKE", 0x200),
    ("GHOST", 0x400),
    ("STREAK", 0x800),
    ("STARCORE", 0x1000),
    ("CONV.BAD", 0x2000),
    ("CONV.POOR", 0x4000),
)


def _hierarch(header: fits.Header, key: str, value: object, comment: str = "") -> None:
    header.append(fits.Card(f"HIERARCH {key}", value, comment))


@functools.lru_cache(maxsize=512)
def _header_cached(seed: int, ref: ImageRef) -> fits.Header:
    check_image(seed, ref)
    geo = skycell_geometry_of(ref.skycell)
    kind = ref.image_type
    h = fits.Header()
    h["BITPIX"] = (16, "array data type")
    h["NAXIS"] = (2, "number of array dimensions")
    h["NAXIS1"] = geo.naxis1
    h["NAXIS2"] = geo.naxis2
    scaled = kind not in ("stack.mask", "stack.num", "warp.mask")
    scales: tuple[float, float] | None
    asinh: tuple[float, float] | None
    if ref.is_warp:
        w = warp_model(seed, exposure_of(seed, ref))
        scales = (w.wt_bzero, w.wt_bscale) if kind == "warp.wt" else (w.bzero, w.bscale)
        asinh = None
    else:
        s = stack_model(seed, ref.skycell.projcell, ref.band)
        scales = {
            "stack": (s.bzero, s.bscale),
            "stack.wt": (s.wt_bzero, s.wt_bscale),
            "stack.exp": (s.exp_bzero, s.exp_bscale),
            "stack.expwt": (s.expwt_bzero, s.expwt_bscale),
        }.get(kind)
        asinh = {"stack": (s.bsoften, s.boffset), "stack.wt": (s.wt_bsoften, s.wt_boffset)}.get(
            kind
        )
    if scaled:
        assert scales is not None
        h["BSCALE"] = (scales[1], "Scaling: TRUE = BZERO + BSCALE * DISK")
        h["BZERO"] = (scales[0], "Scaling: TRUE = BZERO + BSCALE * DISK")
        if kind not in ("stack.exp", "stack.expwt"):
            h["BLANK"] = (BLANK, "Value of undefined pixels")
    if asinh is not None:
        h["BSOFTEN"] = (asinh[0], "Scaling: LINEAR = 2 * BSOFTEN * sinh(TRUE/a)")
        h["BOFFSET"] = (asinh[1], "Scaling: UNCOMP = BOFFSET + LINEAR")
    h["CTYPE1"] = ("RA---TAN", "WCS projection")
    h["CTYPE2"] = ("DEC--TAN", "WCS projection")
    h["CRVAL1"] = (float(geo.crval1), "WCS reference value")
    h["CRVAL2"] = (float(geo.crval2), "WCS reference value")
    h["CRPIX1"] = (float(geo.crpix1), "WCS reference pixel")
    h["CRPIX2"] = (float(geo.crpix2), "WCS reference pixel")
    h["CDELT1"] = (HEADER_CDELT_DEG, "degrees per pixel")
    h["CDELT2"] = (HEADER_CDELT_DEG, "degrees per pixel")
    h["PC001001"] = (-1.0, "WCS transformation matrix")
    h["PC001002"] = (0.0, "WCS transformation matrix")
    h["PC002001"] = (0.0, "WCS transformation matrix")
    h["PC002002"] = (1.0, "WCS transformation matrix")
    h["PSCAMERA"] = ("GPC1", "Camera name")
    h["PSFORMAT"] = ("SKYCELL", "Camera format")
    h["SKYCELL"] = (str(ref.skycell), "Skycell of the tessellation")
    h["TESS_ID"] = ("RINGS.V3", "Tessellation")
    h["FILTER"] = (f"{ref.band}.00000", "Filter")
    _hierarch(h, "FPA.TELESCOPE", "PS1", "Telescope")
    _hierarch(h, "FPA.INSTRUMENT", "GPC1", "Instrument")
    _hierarch(h, "FPA.FILTER", f"{ref.band}.00000", "Filter used")
    if ref.is_warp:
        ep = exposure_of(seed, ref).epoch
        h["EXPTIME"] = (float(ep.exptime), "Exposure time (s)")
        h["MJD-OBS"] = (float(ep.mjd_obs_tai), "MJD at start of exposure")
        h["AIRMASS"] = (float(ep.airmass), "Airmass at start of exposure")
        _hierarch(h, "FPA.ZP", float(ep.fpa_zp), "Magnitude zero point")
        _hierarch(h, "FPA.OBJECT", "3PI", "Object of exposure")
        _hierarch(h, "FPA.EXPOSURE", ep.exposure_name, "Exposure name")
        h["PSF_FWHM"] = (float(ep.seeing_fwhm_arcsec), "PSF FWHM (arcsec)")
    else:
        s = stack_model(seed, ref.skycell.projcell, ref.band)
        h["EXPTIME"] = (float(s.exptime), "Total exposure time (s)")
        h["NINPUTS"] = (s.n_total, "Number of input warps")
        h["STK_TYPE"] = ("DEEP_STACK", "Type of stack")
        h["PSF_FWHM"] = (float(s.fwhm), "PSF FWHM (arcsec)")
    if kind.endswith(".mask"):
        for i, (name, bit) in enumerate(_MASK_NAMES):
            h[f"MSKNAM{i:02d}"] = (name, "Bit name")
            h[f"MSKVAL{i:02d}"] = (bit, "Bit value")
    h["COMMENT"] = f"Synthetic image of the ps1dask PS1 emulator (seed {seed}); not real data."
    return h


def image_header(seed: int, ref: ImageRef) -> fits.Header:
    """The image HDU's header as astropy shows a CompImageHDU's ``.header`` (a copy)."""
    return _header_cached(seed, ref).copy()
