"""Forced photometry on linear cutouts (pure: no I/O).

:func:`measure_aperture` measures one image; :func:`measure_apertures` a stack of images at
one position at once (the light-curve engine), optionally PSF-corrected to total flux.
"""

from ps1dask.photometry._core import (
    FWHM_PER_SIGMA,
    ApertureGeometry,
    ApertureMeasurement,
    ApertureResults,
    aperture_flux,
    aperture_geometry,
    clipped_stats,
    default_aperture,
    gaussian_pixel_psf,
    measure_aperture,
    measure_apertures,
    resolve_aperture,
)

__all__ = [
    "FWHM_PER_SIGMA",
    "ApertureGeometry",
    "ApertureMeasurement",
    "ApertureResults",
    "aperture_flux",
    "aperture_geometry",
    "clipped_stats",
    "default_aperture",
    "gaussian_pixel_psf",
    "measure_aperture",
    "measure_apertures",
    "resolve_aperture",
]
