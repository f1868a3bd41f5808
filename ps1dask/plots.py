"""Matplotlib figures of cutouts and light curves.

Every helper returns a :class:`matplotlib.figure.Figure` made without ``pyplot`` (no GUI
backend, safe in worker threads; Jupyter shows it, ``fig.savefig(...)`` writes it), or
draws into the ``ax`` given.

* :func:`cutout_figure`: a cutout (one filter or a colour composite) on WCS axes (RA/Dec
  grid, :class:`astropy.visualization.wcsaxes.WCSAxes`), optionally with a catalogue
  overlaid (circles at the catalogue's ra/dec);
* :func:`lightcurve_figure`: flux with error bars against MJD, one colour per filter,
  from a DataFrame with columns ``filter, mjd, flux, flux_err`` (and optionally ``id``):
  the output of :func:`ps1dask.lightcurves` or :func:`ps1dask.render.aperture_lightcurve`;
  rows with any of the documented bad flags (:data:`ps1dask.lightcurves.BAD_FLAGS` in
  ``lc_flags``, or ``flags`` in older tables) are left out, as everywhere else;
* :func:`periodogram` / :func:`periodogram_figure`: Lomb-Scargle power per filter
  (:class:`astropy.timeseries.LombScargle`), the multi-band power
  (:class:`astropy.timeseries.LombScargleMultiband`) and the light curve folded at the best
  period.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ps1dask.exceptions import InvalidParameterError
from ps1dask.lightcurves import BAD_FLAGS, flag_column

#: Plot colour of each PS1 filter (blue to dark red).
FILTER_COLOURS = {
    "g": "#2f6fd0",
    "r": "#2ca02c",
    "i": "#e8a000",
    "z": "#d62728",
    "y": "#7f1d1d",
}
_FILTER_ORDER = "grizy"
_MARKERS = {"g": "o", "r": "s", "i": "D", "z": "^", "y": "v"}


def _figure(figsize: tuple[float, float], dpi: float = 100) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: float | None = None) -> bytes:
    """PNG bytes of a figure (tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# cutouts
# --------------------------------------------------------------------------------------


def _catalogue_columns(catalogue: Any) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if isinstance(catalogue, pd.DataFrame):
        table = catalogue
    elif isinstance(catalogue, Mapping):
        table = pd.DataFrame(dict(catalogue))
    else:  # a list of dicts (e.g. Emulator.sky.sources), an astropy Table, ...
        try:
            table = catalogue.to_pandas()
        except AttributeError:
            table = pd.DataFrame(list(catalogue))
    cols = {str(c).lower(): c for c in table.columns}
    if "ra" not in cols or "dec" not in cols:
        raise InvalidParameterError(
            f"catalogue needs ra and dec columns (degrees); it has {list(table.columns)}"
        )
    labels = None
    for name in ("label", "name", "id"):
        if name in cols:
            labels = [str(v) for v in table[cols[name]]]
            break
    return (
        table[cols["ra"]].to_numpy(dtype=np.float64),
        table[cols["dec"]].to_numpy(dtype=np.float64),
        labels,
    )


def cutout_figure(
    source: Any,
    position: int | None = None,
    band: str | None = None,
    *,
    wcs: Any = None,
    catalogue: Any = None,
    colour: bool | str = False,
    method: str = "lupton",
    epoch: int | None = None,
    label_catalogue: bool = False,
    marker_radius_arcsec: float = 2.0,
    title: str | None = None,
    ax: Any = None,
    figsize: tuple[float, float] = (5.5, 5.0),
    **display: Any,
) -> Any:
    """A cutout on WCS axes (RA/Dec ticks and grid), with an optional catalogue overlay.

    ``source`` is a store Dataset (with ``position`` and ``band`` or ``colour``), a 2-d
    array of linear pixels in FITS row order or an 8-bit RGB picture ``(H, W, 3)`` (give its ``wcs`` for sky axes; without one
    the axes are pixels). ``colour=True`` draws the store's default colour composite
    (reddest/middle/bluest filter), ``colour="yig"`` those filters (red first) by
    ``method`` (``"lupton"`` or ``"fitscut"``). ``catalogue``: a DataFrame, a mapping of
    columns or a list of dicts with ``ra``, ``dec`` (degrees) and optionally ``label``/
    ``name``/``id``; each is drawn as a circle of ``marker_radius_arcsec``. ``display``:
    ``stretch``, ``autoscale``, ``vmin``, ``vmax``, ``contrast``, ``invert``.
    """
    from ps1dask import render

    pixel_title = ""
    if hasattr(source, "data_vars"):
        ds = source
        if position is None:
            raise InvalidParameterError(
                "cutout_figure(ds, position, band): give the position index"
            )
        info = render.position_table(ds, [position])[0]
        wcs = wcs if wcs is not None else ds.ps1.wcs(position)
        if colour:
            filters = None if colour is True else colour
            image = render.colour_image(
                ds, position, filters, method=method, epoch=epoch, north_up=False, **display
            )
            rgb = render.parse_colour_filters(filters, render.store_filters(ds))
            what = "".join(b or "-" for b in rgb) + " colour"
        else:
            if band is None:
                band = render.store_filters(ds)[0]
            image = render.cutout_image(ds, position, band, epoch=epoch, north_up=False, **display)
            what = f"{band} {'warp ' + str(epoch) if epoch is not None else 'stack'}"
            status = info.status.get(band)
            if status and status != "ok":
                what += f" ({status})"
        pixel_title = f"{info.id}  {what}\nRA {info.ra:.5f}  Dec {info.dec:+.5f}  {info.skycell}"
    else:
        arr = np.asarray(source)  # not cast yet: an 8-bit RGB picture is shown as it is
        if arr.ndim == 2:
            image = render.grey(arr.astype(np.float64), north_up=False, **display)
        elif arr.ndim == 3 and arr.shape[-1] == 3 and arr.dtype == np.uint8:
            image = arr
        else:
            raise InvalidParameterError(
                f"cutout_figure: expected a store Dataset or a 2-d image, got shape {arr.shape}"
            )
    if ax is None:
        fig = _figure(figsize)
        ax = (
            fig.add_subplot(1, 1, 1, projection=wcs)
            if wcs is not None
            else fig.add_subplot(1, 1, 1)
        )
    else:
        fig = ax.figure
    if image.ndim == 2:
        ax.imshow(image, origin="lower", cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, origin="lower", interpolation="nearest")
    celestial = wcs is not None and hasattr(ax, "coords")
    if celestial:
        ra_ax, dec_ax = ax.coords[0], ax.coords[1]
        ra_ax.set_axislabel("RA (J2000)")
        dec_ax.set_axislabel("Dec (J2000)")
        ra_ax.set_major_formatter("hh:mm:ss.s")
        dec_ax.set_major_formatter("dd:mm:ss")
        ax.coords.grid(color="white", alpha=0.25, linestyle="dotted")
    else:
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
    if catalogue is not None:
        if wcs is None:
            raise InvalidParameterError("a catalogue overlay needs a WCS (give wcs=)")
        ra, dec, labels = _catalogue_columns(catalogue)
        x, y = wcs.all_world2pix(ra, dec, 0)
        h, w = image.shape[:2]
        inside = (
            np.isfinite(x)
            & np.isfinite(y)
            & (x > -0.5)
            & (x < w - 0.5)
            & (y > -0.5)
            & (y < h - 0.5)
        )
        scale_arcsec = float(np.mean(np.abs(wcs.pixel_scale_matrix.diagonal()))) * 3600.0
        r_pix = marker_radius_arcsec / scale_arcsec if scale_arcsec > 0 else 8.0
        from matplotlib.patches import Circle

        for k in np.flatnonzero(inside):
            ax.add_patch(
                Circle((x[k], y[k]), r_pix, fill=False, edgecolor="#00e5ff", linewidth=1.2)
            )
            if label_catalogue and labels is not None:
                ax.annotate(labels[k], (x[k] + r_pix, y[k] + r_pix), color="#00e5ff", fontsize=7)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(-0.5, h - 0.5)
    ax.set_title(title if title is not None else pixel_title, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------
# light curves
# --------------------------------------------------------------------------------------


def _check_lightcurve(df: Any, exclude_flags: int = 0) -> pd.DataFrame:
    """``df`` as pandas, checked, without the rows flagged with any of ``exclude_flags``."""
    if hasattr(df, "compute") and not isinstance(df, pd.DataFrame):  # a dask DataFrame
        df = df.compute()
    if not isinstance(df, pd.DataFrame):
        raise InvalidParameterError(f"expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in ("filter", "mjd", "flux", "flux_err") if c not in df.columns]
    if missing:
        raise InvalidParameterError(
            f"light curve table has no {', '.join(missing)} column(s); it has {list(df.columns)}"
        )
    column = flag_column(df)
    if column is not None and int(exclude_flags):
        keep = (df[column].to_numpy().astype(np.int64) & int(exclude_flags)) == 0
        if not keep.all():
            attrs = dict(df.attrs)
            df = df[keep]
            df.attrs.update(attrs)
    return df


def _filters_of(df: pd.DataFrame, filters: str | Sequence[str] | None) -> list[str]:
    present = [str(f) for f in pd.unique(df["filter"].astype(str))]
    order = sorted(present, key=lambda f: (_FILTER_ORDER.find(f) % 99, f))
    if filters is None:
        return order
    wanted = list(filters)
    return [f for f in wanted if f in present]


def _flux_label(df: pd.DataFrame, unit: str | None) -> str:
    unit = unit or df.attrs.get("flux_unit") or "uJy"
    return {"uJy": "flux (µJy)", "count": "flux (counts)"}.get(unit, f"flux ({unit})")


def plot_lightcurve(
    ax: Any,
    df: pd.DataFrame,
    *,
    filters: str | Sequence[str] | None = None,
    unit: str | None = None,
    legend: bool | str = True,
    markersize: float = 4.0,
    exclude_flags: int = BAD_FLAGS,
) -> Any:
    """Draw flux against MJD with error bars, one colour per filter, into ``ax``.

    ``legend``: ``True`` (inside, best place), ``"above"`` (a row above the axes) or
    ``False``. Rows whose ``lc_flags`` have any of ``exclude_flags`` (default the
    documented :data:`~ps1dask.lightcurves.BAD_FLAGS`; 0 keeps every row) are not drawn."""
    df = _check_lightcurve(df, exclude_flags)
    for band in _filters_of(df, filters):
        sel = df[df["filter"].astype(str) == band]
        sel = sel[
            np.isfinite(sel["mjd"].to_numpy(dtype=float))
            & np.isfinite(sel["flux"].to_numpy(dtype=float))
        ]
        if sel.empty:
            continue
        err = sel["flux_err"].to_numpy(dtype=float)
        ax.errorbar(
            sel["mjd"].to_numpy(dtype=float),
            sel["flux"].to_numpy(dtype=float),
            yerr=np.where(np.isfinite(err), err, 0.0),
            fmt=_MARKERS.get(band, "o"),
            color=FILTER_COLOURS.get(band, "k"),
            ms=markersize,
            elinewidth=0.8,
            capsize=1.5,
            linestyle="none",
            label=f"{band} ({len(sel)})",
        )
    ax.axhline(0.0, color="0.6", linewidth=0.6, zorder=0)
    ax.set_xlabel("MJD (UTC)")
    ax.set_ylabel(_flux_label(df, unit))
    if legend and ax.get_legend_handles_labels()[0]:
        if legend == "above":
            ax.legend(
                fontsize=7,
                frameon=False,
                ncol=5,
                loc="lower center",
                bbox_to_anchor=(0.5, 1.0),
                borderaxespad=0.1,
                handletextpad=0.2,
                columnspacing=0.8,
            )
        else:
            ax.legend(fontsize=7, frameon=False, ncol=5, loc="best")
    return ax


def lightcurve_figure(
    df: Any,
    *,
    id: Any = None,
    filters: str | Sequence[str] | None = None,
    unit: str | None = None,
    title: str | None = None,
    max_panels: int = 12,
    figsize: tuple[float, float] | None = None,
    legend: bool | str = True,
    ax: Any = None,
    exclude_flags: int = BAD_FLAGS,
) -> Any:
    """Light curve(s): flux with error bars against MJD, one colour per filter.

    ``df`` needs columns ``filter, mjd, flux, flux_err``; with an ``id`` column holding
    several ids, each gets its own panel (the first ``max_panels``) unless ``id=`` picks
    one. ``unit`` labels the flux axis (default ``df.attrs["flux_unit"]`` or µJy). Rows
    whose ``lc_flags`` (``flags`` in older tables) have any of ``exclude_flags`` (default
    :data:`~ps1dask.lightcurves.BAD_FLAGS`; 0 keeps every row) are left out.
    """
    df = _check_lightcurve(df, exclude_flags)
    if id is not None:
        if "id" not in df.columns:
            raise InvalidParameterError("id= given but the table has no id column")
        df = df[df["id"].astype(str) == str(id)]
        if df.empty:
            raise InvalidParameterError(f"no rows with id {id!r}")
    ids = list(pd.unique(df["id"].astype(str))) if "id" in df.columns else [None]
    if not ids:
        ids = [None]
    if ax is not None:
        plot_lightcurve(
            ax, df, filters=filters, unit=unit, legend=legend, exclude_flags=exclude_flags
        )
        if title is not None:
            ax.set_title(title, fontsize=9)
        return ax.figure
    ids = ids[: max(1, int(max_panels))]
    fig = _figure(figsize or (7.0, 2.6 * len(ids) + 0.6))
    axes = fig.subplots(len(ids), 1, sharex=True, squeeze=False)[:, 0]
    for panel, pid in zip(axes, ids):
        part = df if pid is None else df[df["id"].astype(str) == pid]
        part.attrs.update(df.attrs)
        plot_lightcurve(
            panel, part, filters=filters, unit=unit, legend=legend, exclude_flags=exclude_flags
        )
        if pid is not None and len(ids) > 1:
            panel.set_title(str(pid), fontsize=9, loc="left")
        if panel is not axes[-1]:
            panel.set_xlabel("")
    if title is None and len(ids) == 1 and ids[0] is not None:
        title = str(ids[0])
    if title:
        axes[0].set_title(title, fontsize=10)
    if len(df) == 0:
        axes[0].text(
            0.5,
            0.5,
            "no measurements",
            transform=axes[0].transAxes,
            ha="center",
            va="center",
            color="0.4",
        )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------
# periodograms
# --------------------------------------------------------------------------------------


@dataclass
class Periodogram:
    """Lomb-Scargle power on a frequency grid (1/day), per filter and for all filters."""

    frequency: npt.NDArray[np.float64]
    power: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)  #: per filter
    combined: npt.NDArray[np.float64] | None = None  #: multi-band power (>1 filter)

    @property
    def best_power(self) -> npt.NDArray[np.float64]:
        if self.combined is not None:
            return self.combined
        return next(iter(self.power.values()))

    @property
    def best_frequency(self) -> float:
        return float(self.frequency[int(np.nanargmax(self.best_power))])

    @property
    def best_period(self) -> float:
        """Period (days) of the highest peak of the combined (or only) power."""
        return 1.0 / self.best_frequency


def periodogram(
    df: Any,
    *,
    filters: str | Sequence[str] | None = None,
    minimum_period: float = 0.1,
    maximum_period: float | None = None,
    samples_per_peak: int = 5,
    max_frequencies: int = 200_000,
) -> Periodogram:
    """Lomb-Scargle periodogram of a light curve (columns ``filter, mjd, flux, flux_err``).

    One power per filter with at least 5 points (:class:`astropy.timeseries.LombScargle`,
    floating mean, the fast approximate method) and, with several filters, the multi-band power
    (:class:`astropy.timeseries.LombScargleMultiband`), on one frequency grid from
    ``1 / maximum_period`` (default: the time span) to ``1 / minimum_period`` (days).
    """
    from astropy.timeseries import LombScargle

    df = _check_lightcurve(df)
    good = df[
        np.isfinite(df["mjd"].to_numpy(dtype=float)) & np.isfinite(df["flux"].to_numpy(dtype=float))
    ]
    bands = [
        b for b in _filters_of(good, filters) if int((good["filter"].astype(str) == b).sum()) >= 5
    ]
    if not bands:
        raise InvalidParameterError("a periodogram needs at least 5 measurements in one filter")
    good = good[good["filter"].astype(str).isin(bands)]
    t = good["mjd"].to_numpy(dtype=float)
    span = float(t.max() - t.min())
    if not span > 0:
        raise InvalidParameterError("all measurements are at one time: no periodogram")
    if not minimum_period > 0:
        raise InvalidParameterError(f"minimum_period {minimum_period!r} must be > 0 days")
    f_min = 1.0 / float(maximum_period or span)
    f_max = 1.0 / float(minimum_period)
    if not f_max > f_min:
        raise InvalidParameterError("minimum_period must be below maximum_period")
    df_step = 1.0 / (samples_per_peak * span)
    n = int(min(max_frequencies, max(100, np.ceil((f_max - f_min) / df_step))))
    freq = np.linspace(f_min, f_max, n)
    out = Periodogram(frequency=freq)

    def errors(part: pd.DataFrame) -> npt.NDArray[np.float64] | None:
        e = part["flux_err"].to_numpy(dtype=float)
        return e if np.all(np.isfinite(e) & (e > 0)) else None

    for band in bands:
        part = good[good["filter"].astype(str) == band]
        ls = LombScargle(
            part["mjd"].to_numpy(dtype=float), part["flux"].to_numpy(dtype=float), errors(part)
        )
        power = ls.power(freq, method="fast", assume_regular_frequency=True)
        out.power[band] = np.asarray(power, dtype=np.float64)
    if len(bands) > 1:
        try:
            from astropy.timeseries import LombScargleMultiband

            ls_mb = LombScargleMultiband(
                t,
                good["flux"].to_numpy(dtype=float),
                good["filter"].astype(str).to_numpy(),
                errors(good),
            )
            out.combined = np.asarray(ls_mb.power(freq, method="fast"), dtype=np.float64)
        except ImportError:  # pragma: no cover - astropy < 5.3
            out.combined = np.nanmean(np.stack(list(out.power.values())), axis=0)
    return out


def periodogram_figure(
    df: Any,
    *,
    filters: str | Sequence[str] | None = None,
    minimum_period: float = 0.1,
    maximum_period: float | None = None,
    fold: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (7.0, 5.2),
) -> Any:
    """Lomb-Scargle power against period (log axis) per filter and combined, the best
    period marked; with ``fold`` a second panel of the light curve folded at that period.
    ``fig.periodogram`` holds the :class:`Periodogram`."""
    df = _check_lightcurve(df)
    pg = periodogram(
        df, filters=filters, minimum_period=minimum_period, maximum_period=maximum_period
    )
    fig = _figure(figsize)
    axes = fig.subplots(2 if fold else 1, 1, squeeze=False)[:, 0]
    ax = axes[0]
    period = 1.0 / pg.frequency
    for band, power in pg.power.items():
        ax.plot(
            period, power, color=FILTER_COLOURS.get(band, "k"), linewidth=0.8, alpha=0.8, label=band
        )
    if pg.combined is not None:
        ax.plot(period, pg.combined, color="k", linewidth=1.0, label="all filters")
    best = pg.best_period
    ax.axvline(best, color="0.3", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("period (days)")
    ax.set_ylabel("Lomb-Scargle power")
    ax.set_title(title or f"best period {best:.5g} d", fontsize=10)
    ax.legend(fontsize=7, frameon=False, ncol=6)
    if fold:
        fax = axes[1]
        t0 = float(df["mjd"].min())
        for band in pg.power:
            sel = df[df["filter"].astype(str) == band]
            phase = ((sel["mjd"].to_numpy(dtype=float) - t0) / best) % 1.0
            err = sel["flux_err"].to_numpy(dtype=float)
            for shift in (0.0, 1.0):
                fax.errorbar(
                    phase + shift,
                    sel["flux"].to_numpy(dtype=float),
                    yerr=np.where(np.isfinite(err), err, 0.0),
                    fmt=_MARKERS.get(band, "o"),
                    color=FILTER_COLOURS.get(band, "k"),
                    ms=3,
                    elinewidth=0.6,
                    linestyle="none",
                    alpha=1.0 if shift == 0 else 0.35,
                )
        fax.set_xlabel(f"phase (period {best:.5g} d)")
        fax.set_ylabel(_flux_label(df, None))
        fax.set_xlim(0, 2)
    fig.tight_layout()
    fig.periodogram = pg
    return fig
