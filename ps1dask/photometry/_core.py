"""Forced aperture photometry on linear cutouts (pure numerics, photutils geometry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.stats import sigma_clipped_stats
from photutils.aperture import CircularAnnulus, CircularAperture, aperture_photometry


@dataclass(frozen=True)
class ApertureMeasurement:
    """Background-subtracted flux in a circular aperture (image units, e.g. counts)."""

    flux: float
    flux_err: float
    background: float  #: per pixel, from the annulus (sigma-clipped median)
    n_masked: int  #: pixels inside the aperture that were NaN or flagged
    area: float  #: unmasked aperture area (pixels)


def measure_aperture(
    image: npt.ArrayLike,
    variance: npt.ArrayLike | None = None,
    *,
    position: tuple[float, float] | None = None,
    radius: float = 8.0,
    annulus: tuple[float, float] = (14.0, 22.0),
    bad: npt.ArrayLike | None = None,
) -> ApertureMeasurement:
    """Forced photometry at ``position`` (0-based x, y; default the cutout's centre pixel).

    The local background is the sigma-clipped median in the annulus (pixels). The error
    adds the aperture's summed variance (from ``variance`` when given, else from the
    annulus scatter) and the background's uncertainty. NaN pixels and ``bad`` pixels are
    excluded; their count inside the aperture is reported.
    """
    data = np.asarray(image, dtype=np.float64)
    ny, nx = data.shape
    if position is None:
        position = (nx // 2, ny // 2)  # fitscut puts the target on pixel W//2 (0-based)
    mask = ~np.isfinite(data)
    if bad is not None:
        mask |= np.asarray(bad, dtype=bool)
    aperture = CircularAperture(position, r=radius)
    ring = CircularAnnulus(position, r_in=annulus[0], r_out=annulus[1])
    ring_mask = ring.to_mask(method="center")
    ring_values = ring_mask.get_values(np.where(mask, np.nan, data))
    ring_values = ring_values[np.isfinite(ring_values)]
    if ring_values.size >= 5:
        _, background, sky_sigma = sigma_clipped_stats(ring_values, sigma=3.0)
    else:
        background, sky_sigma = 0.0, np.nan
    clean = np.where(mask, 0.0, data - background)
    table = aperture_photometry(clean, aperture, mask=mask, method="exact")
    flux = float(table["aperture_sum"][0])
    weights = aperture.to_mask(method="exact").to_image((ny, nx))
    weights = np.zeros((ny, nx)) if weights is None else weights
    area = float(np.sum(weights * ~mask))
    n_masked = int(np.sum((weights > 0) & mask))
    if variance is not None:
        var = np.asarray(variance, dtype=np.float64)
        var_sum = float(np.nansum(np.where(mask, 0.0, var) * weights**2))
    else:
        var_sum = area * float(sky_sigma) ** 2
    n_ring = max(ring_values.size, 1)
    bg_var = (area**2) * (float(sky_sigma) ** 2) * np.pi / 2.0 / n_ring
    return ApertureMeasurement(
        flux=flux,
        flux_err=float(np.sqrt(var_sum + (bg_var if np.isfinite(bg_var) else 0.0))),
        background=float(background),
        n_masked=n_masked,
        area=area,
    )


def aperture_flux(
    image: npt.ArrayLike,
    variance: npt.ArrayLike | None = None,
    *,
    radius: float = 8.0,
    annulus: tuple[float, float] = (14.0, 22.0),
) -> tuple[float, float]:
    """``(flux, flux_err)`` at the cutout centre: :func:`measure_aperture` in short."""
    m = measure_aperture(image, variance, radius=radius, annulus=annulus)
    return m.flux, m.flux_err
