"""Forced photometry on linear cutouts (pure: no I/O)."""

from ps1dask.photometry._core import ApertureMeasurement, aperture_flux, measure_aperture

__all__ = ["ApertureMeasurement", "aperture_flux", "measure_aperture"]
