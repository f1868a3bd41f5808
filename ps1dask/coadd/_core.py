"""Warp stacking over in-memory arrays (pure: no I/O): time bins and the clipped mean.

The combination (:func:`combine_epochs`), per pixel over the epochs of one bin:

1. every warp is rescaled to the common zero point: ``flux * 10**(0.4 (zp_common - zp))``
   (variance by the square of that factor);
2. pixels that are NaN, have a non-positive or NaN variance or any of ``bad_bits`` in their
   mask are not used;
3. outliers are rejected across epochs, per pixel: a value is dropped when it lies more than
   ``clip_sigma`` times ``sqrt(variance + (clip_fraction * centre)**2)`` from the centre (the
   median of the epochs at first, then the weighted mean of the survivors; up to
   ``maxiters`` rounds, only where at least 3 epochs remain, never every input of a pixel).
   The cores of bright stars differ between epochs by far more than their noise when the
   seeing changes, so when the PSF widths of the warps are known the rejection is decided
   on copies convolved to the broadest PSF among them (Gaussian kernels; what PS1's own
   stacker does) with ``clip_fraction`` 0.1 for PSF mismatch, and the combination uses the
   original pixels. Without PSF widths it runs on the original pixels with
   ``clip_fraction`` 1.0 (SWarp's CLIP_AMPFRAC idea), which spares all but the brightest
   star cores. Cosmic rays, trails and artefacts go either way. Sources that really vary
   by more than ~``clip_sigma * clip_fraction`` of their flux lose their extreme epochs,
   so coadds of them tend to a clipped mean (transients drop out: good templates);
4. the survivors are averaged with inverse-variance weights. With ``weighting="image"``
   (default) each warp has one weight, the inverse of its median pixel variance (the sky
   noise), so the coadd keeps the flux of every star: per-pixel weights that include the
   sources' photon noise make the weights differ across a star's profile from one epoch to
   the next and bias bright stars. ``weighting="pixel"`` uses ``1 / variance`` per pixel.
   The coadd variance is propagated exactly, ``sum(w**2 var) / sum(w)**2``; without a
   variance image every warp gets its robust pixel scatter as variance.

Like any stack of unconvolved images, a pixel that some warps miss (a detector gap, a
masked pixel) averages the others, whose mean PSF differs a little: aperture fluxes of
bright stars crossed by gaps in some epochs can be off by a few tenths of a percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ps1dask.conventions import DEFAULT_BAD_BITS

FloatArray = npt.NDArray[np.float64]

#: Consecutive epochs more than this many days apart start a new season.
SEASON_GAP_DAYS = 60.0
#: Zero point of coadds of positions without a stack zero point (AB mag of 1 count).
DEFAULT_COADD_ZEROPOINT = 25.0


def parse_bins(bins: None | str | float) -> None | str | float:
    """Normalise a ``bins`` argument: None (one bin), "season", or a width in days.

    Parameters
    ----------
    bins : None, str or float
        None or ``"all"`` (one bin), ``"season"``, or a bin width in days (number or text).

    Returns
    -------
    None, str or float
        None, ``"season"``, or the width in days (a positive finite float).
    """
    if bins is None or (isinstance(bins, str) and bins.lower() in ("all", "none", "")):
        return None
    if isinstance(bins, str):
        if bins.lower() in ("season", "seasons"):
            return "season"
        try:
            bins = float(bins)
        except ValueError:
            raise ValueError(f"bins {bins!r}: use 'all', 'season' or a width in days") from None
    width = float(bins)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"bin width must be a positive number of days, got {bins!r}")
    return width


def epoch_bins(
    mjd: npt.ArrayLike, usable: npt.ArrayLike | None = None, bins: None | str | float = None
) -> npt.NDArray[np.int64]:
    """Bin index of each epoch (``-1`` for epochs not used), bins numbered in time order.

    ``mjd`` is one (position, filter)'s epoch times (NaN for padding), ``usable`` marks the
    epochs that may enter a coadd (e.g. status ok). ``bins``: None = one bin of every epoch;
    ``"season"`` = a new bin wherever consecutive usable epochs are more than 60 days apart;
    a number = bins of that many days, ``[k * width, (k + 1) * width)`` in UTC MJD (aligned
    on MJD 0, so bins line up across positions), empty bins skipped.
    """
    t = np.asarray(mjd, dtype=np.float64)
    use = np.isfinite(t)
    if usable is not None:
        use &= np.asarray(usable, dtype=bool)
    out = np.full(t.shape, -1, dtype=np.int64)
    idx = np.flatnonzero(use)
    if idx.size == 0:
        return out
    bins = parse_bins(bins)
    order = idx[np.argsort(t[idx], kind="stable")]
    ts = t[order]
    if bins is None:
        labels = np.zeros(ts.size, np.int64)
    elif bins == "season":
        labels = np.concatenate([[0], np.cumsum(np.diff(ts) > SEASON_GAP_DAYS)])
    else:
        k = np.floor(ts / float(bins)).astype(np.int64)
        labels = np.concatenate([[0], np.cumsum(np.diff(k) != 0)])
    out[order] = labels
    return out


def robust_variance(image: npt.ArrayLike, usable: npt.ArrayLike | None = None) -> float:
    """Pixel variance of an image from the MAD of its usable pixels (NaN if too few)."""
    v = np.asarray(image, dtype=np.float64)
    ok = np.isfinite(v) if usable is None else (np.asarray(usable, bool) & np.isfinite(v))
    vals = v[ok]
    if vals.size < 10:
        return float("nan")
    mad = np.median(np.abs(vals - np.median(vals)))
    return float((1.4826 * mad) ** 2)


@dataclass(frozen=True)
class Coadd:
    """One coadd: image, variance and number of inputs per pixel."""

    flux: npt.NDArray[np.float32]
    variance: npt.NDArray[np.float32]
    ninputs: npt.NDArray[np.uint16]
    n_epochs: int  #: epochs that contributed at least one pixel


def _matched(
    f: npt.NDArray[np.float32],
    v: npt.NDArray[np.float32],
    usable: npt.NDArray[np.bool_],
    sigma: FloatArray,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Copies of the warps convolved to the broadest Gaussian PSF among them (for rejection).

    Normalised convolution (masked pixels do not leak in); the variance is carried through
    with the kernel's sum of squares. Returns (flux, variance, valid).
    """
    from scipy.ndimage import gaussian_filter

    target = float(np.max(sigma))
    fc = np.empty_like(f)
    vc = np.empty_like(v)
    valid = np.empty_like(usable)
    for e in range(f.shape[0]):
        sk = math.sqrt(max(target**2 - float(sigma[e]) ** 2, 0.0))
        if sk < 0.3:  # a kernel narrower than this is a delta function on the pixel grid
            fc[e], vc[e], valid[e] = f[e], v[e], usable[e]
            continue
        good = usable[e].astype(np.float32)
        den = gaussian_filter(good, sk, mode="constant", truncate=4.0)
        num = gaussian_filter(
            np.where(usable[e], f[e], 0.0).astype(np.float32), sk, mode="constant", truncate=4.0
        )
        vnum = gaussian_filter(
            np.where(usable[e], v[e], 0.0).astype(np.float32), sk, mode="constant", truncate=4.0
        )
        radius = int(4.0 * sk + 0.5)
        k1 = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sk) ** 2)
        k1 /= k1.sum()
        sumsq = float(np.sum(k1**2)) ** 2
        ok = den > 0.5
        with np.errstate(invalid="ignore", divide="ignore"):
            fc[e] = np.where(ok, num / den, np.nan)
            vc[e] = np.where(ok, vnum / den * sumsq, np.nan)
        valid[e] = ok & usable[e]
    return fc, vc, valid


def _reject(
    f: npt.NDArray[np.float32],
    v: npt.NDArray[np.float32],
    usable: npt.NDArray[np.bool_],
    w: npt.NDArray[np.float32],
    clip_sigma: float,
    clip_fraction: float,
    maxiters: int,
) -> npt.NDArray[np.bool_]:
    """Pixels kept by the iterated clip around the median, then the weighted mean."""
    keep = usable.copy()
    clip = usable.sum(axis=0) >= 3
    if not clip.any():
        return keep
    fz = np.where(usable, f, 0.0).astype(np.float32)
    centre = np.full(f.shape[1:], np.nan, np.float32)
    # the median only where >= 3 epochs are usable (no all-NaN slices)
    centre[clip] = np.nanmedian(np.where(usable, f, np.nan)[:, clip], axis=0)
    for _ in range(max(int(maxiters), 1)):
        tol2 = v + (clip_fraction * centre) ** 2
        resid2 = (f - centre) ** 2
        with np.errstate(invalid="ignore"):
            out = clip[None] & (resid2 > (clip_sigma**2) * tol2)
        new_keep = usable & ~out
        new_keep |= usable & (new_keep.sum(axis=0) == 0)[None]  # never drop every input
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
        wk = np.where(keep, w, 0.0)
        sw = wk.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            centre = np.where(sw > 0, (wk * fz).sum(axis=0) / sw, np.nan)
    return keep


def combine_epochs(
    flux: npt.ArrayLike,
    variance: npt.ArrayLike | None = None,
    mask: npt.ArrayLike | None = None,
    *,
    scale: npt.ArrayLike | None = None,
    psf_sigma: npt.ArrayLike | None = None,
    bad_bits: int = DEFAULT_BAD_BITS,
    clip_sigma: float | None = 3.0,
    clip_fraction: float | None = None,
    maxiters: int = 3,
    weighting: str = "image",
) -> Coadd:
    """Clipped inverse-variance weighted mean of ``(E, h, w)`` warps (see the module doc).

    ``scale`` multiplies each warp's flux (its zero-point rescaling, default 1).
    ``psf_sigma`` (pixels, one per warp) turns on PSF-matched rejection; ``clip_fraction``
    defaults to 0.1 with it and 1.0 without. ``clip_sigma=None`` turns rejection off.
    """
    if weighting not in ("image", "pixel"):
        raise ValueError(f"weighting {weighting!r}: use 'image' or 'pixel'")
    f = np.asarray(flux, dtype=np.float32)
    if f.ndim == 2:
        f = f[None]
    n_e = f.shape[0]
    s = np.ones(n_e, np.float32) if scale is None else np.asarray(scale, np.float32).reshape(n_e)
    f = f * s[:, None, None]
    usable = np.isfinite(f) & np.isfinite(s)[:, None, None]
    if mask is not None:
        usable &= (np.asarray(mask).astype(np.int64) & int(bad_bits)) == 0
    if variance is not None:
        v = np.asarray(variance, dtype=np.float32) * (s**2)[:, None, None]
        usable &= np.isfinite(v) & (v > 0)
    else:
        per = np.array([robust_variance(f[e], usable[e]) for e in range(n_e)], np.float32)
        v = np.ascontiguousarray(np.broadcast_to(per[:, None, None], f.shape))
        usable &= np.isfinite(per)[:, None, None]
    if weighting == "image":
        iv = np.array(
            [np.median(v[e][usable[e]]) if usable[e].any() else np.nan for e in range(n_e)]
        )
        good_w = np.isfinite(iv) & (iv > 0)
        w_img = np.where(good_w, 1.0 / np.where(good_w, iv, 1.0), 0.0).astype(np.float32)
        usable &= good_w[:, None, None]
        w = np.broadcast_to(w_img[:, None, None], f.shape)
    else:
        w = np.where(usable, 1.0 / np.where(usable, v, 1.0), 0.0).astype(np.float32)
    keep = usable
    if clip_sigma is not None and n_e >= 3:
        sig = None
        if psf_sigma is not None:
            sig = np.asarray(psf_sigma, dtype=np.float64).reshape(n_e)
            active = usable.any(axis=(1, 2))
            if not np.all(np.isfinite(sig[active]) & (sig[active] > 0)):
                sig = None
        if sig is not None:
            frac = 0.1 if clip_fraction is None else float(clip_fraction)
            fc, vc, valid = _matched(f, v, usable, np.where(usable.any(axis=(1, 2)), sig, 0.0))
            kept = _reject(fc, vc, valid, w, float(clip_sigma), frac, maxiters)
            keep = usable & (kept | ~valid)
        else:
            frac = 1.0 if clip_fraction is None else float(clip_fraction)
            keep = _reject(f, v, usable, w, float(clip_sigma), frac, maxiters)
    fz = np.where(keep, f, 0.0).astype(np.float64)
    wk = np.where(keep, w, 0.0).astype(np.float64)
    sw = wk.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sw > 0, (wk * fz).sum(axis=0) / sw, np.nan)
        out_var = np.where(sw > 0, (wk**2 * np.where(keep, v, 0.0)).sum(axis=0) / sw**2, np.nan)
    ninputs = keep.sum(axis=0)
    return Coadd(
        flux=out.astype(np.float32),
        variance=out_var.astype(np.float32),
        ninputs=np.minimum(ninputs, np.iinfo(np.uint16).max).astype(np.uint16),
        n_epochs=int(np.any(keep, axis=(1, 2)).sum()),
    )
