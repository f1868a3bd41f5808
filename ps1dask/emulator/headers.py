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


@functools.lru_cache(maxsize=512)
def _header_cached(seed: int, ref: ImageRef) -> fits.Header:
    check_image(seed, ref)
    geo = skycell_geometry_of(ref.skycell)
    kind = ref.image_type
    # Cards first, then one Header of them: astropy's per-keyword assignment costs about
    # three times as much, and every sparse cutout asks for a new file's header.
    cards: list[fits.Card] = []

    def add(key: str, value: object, comment: str = "") -> None:
        cards.append(fits.Card(key, value, comment))

    add("BITPIX", 16, "array data type")
    add("NAXIS", 2, "number of array dimensions")
    add("NAXIS1", geo.naxis1)
    add("NAXIS2", geo.naxis2)
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
        add("BSCALE", scales[1], "Scaling: TRUE = BZERO + BSCALE * DISK")
        add("BZERO", scales[0], "Scaling: TRUE = BZERO + BSCALE * DISK")
        if kind not in ("stack.exp", "stack.expwt"):
            add("BLANK", BLANK, "Value of undefined pixels")
    if asinh is not None:
        add("BSOFTEN", asinh[0], "Scaling: LINEAR = 2 * BSOFTEN * sinh(TRUE/a)")
        add("BOFFSET", asinh[1], "Scaling: UNCOMP = BOFFSET + LINEAR")
    add("CTYPE1", "RA---TAN", "WCS projection")
    add("CTYPE2", "DEC--TAN", "WCS projection")
    add("CRVAL1", float(geo.crval1), "WCS reference value")
    add("CRVAL2", float(geo.crval2), "WCS reference value")
    add("CRPIX1", float(geo.crpix1), "WCS reference pixel")
    add("CRPIX2", float(geo.crpix2), "WCS reference pixel")
    add("CDELT1", HEADER_CDELT_DEG, "degrees per pixel")
    add("CDELT2", HEADER_CDELT_DEG, "degrees per pixel")
    add("PC001001", -1.0, "WCS transformation matrix")
    add("PC001002", 0.0, "WCS transformation matrix")
    add("PC002001", 0.0, "WCS transformation matrix")
    add("PC002002", 1.0, "WCS transformation matrix")
    add("PSCAMERA", "GPC1", "Camera name")
    add("PSFORMAT", "SKYCELL", "Camera format")
    add("SKYCELL", str(ref.skycell), "Skycell of the tessellation")
    add("TESS_ID", "RINGS.V3", "Tessellation")
    add("FILTER", f"{ref.band}.00000", "Filter")
    add("HIERARCH FPA.TELESCOPE", "PS1", "Telescope")
    add("HIERARCH FPA.INSTRUMENT", "GPC1", "Instrument")
    add("HIERARCH FPA.FILTER", f"{ref.band}.00000", "Filter used")
    if ref.is_warp:
        ep = exposure_of(seed, ref).epoch
        add("EXPTIME", float(ep.exptime), "Exposure time (s)")
        add("MJD-OBS", float(ep.mjd_obs_tai), "MJD at start of exposure")
        add("AIRMASS", float(ep.airmass), "Airmass at start of exposure")
        add("HIERARCH FPA.ZP", float(ep.fpa_zp), "Magnitude zero point")
        add("HIERARCH FPA.OBJECT", "3PI", "Object of exposure")
        add("HIERARCH FPA.EXPOSURE", ep.exposure_name, "Exposure name")
        add("PSF_FWHM", float(ep.seeing_fwhm_arcsec), "PSF FWHM (arcsec)")
    else:
        s = stack_model(seed, ref.skycell.projcell, ref.band)
        add("EXPTIME", float(s.exptime), "Total exposure time (s)")
        add("NINPUTS", s.n_total, "Number of input warps")
        add("STK_TYPE", "DEEP_STACK", "Type of stack")
        add("PSF_FWHM", float(s.fwhm), "PSF FWHM (arcsec)")
    if kind.endswith(".mask"):
        for i, (name, bit) in enumerate(_MASK_NAMES):
            add(f"MSKNAM{i:02d}", name, "Bit name")
            add(f"MSKVAL{i:02d}", bit, "Bit value")
    add("COMMENT", f"Synthetic image of the ps1dask PS1 emulator (seed {seed}); not real data.")
    return fits.Header(cards)


def image_header(seed: int, ref: ImageRef) -> fits.Header:
    """The image HDU's header as astropy shows a CompImageHDU's ``.header`` (a copy)."""
    return _header_cached(seed, ref).copy()
