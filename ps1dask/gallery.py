"""A self-contained HTML gallery of a store: ``ps1dask gallery STORE -o gallery.html``.

Each position gets a card: its colour composite (red/green/blue = the reddest, middle and
bluest filter, y/i/g for grizy, as on the service's page), a thumbnail per filter, and a
label (id, RA/Dec, skycell, the status of every filter); for stores with warps, a light
curve (forced aperture photometry of the warp pixels at the cutout centre, flux with
errors against MJD per filter). Images are inlined as base64 ``data:`` URIs, so a page is
one file that can be mailed or archived. Positions come in input order, ``page_size`` to a
page: page 1 is the output file, page ``k`` is ``<stem>-p<k>.html`` beside it, and every
page links to the others. A search box on each page filters its cards by id or skycell.

The pictures are rendered in parallel with Dask (threads by default, or a cluster).
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ps1dask.exceptions import InvalidParameterError
from ps1dask.render import (
    Display,
    aperture_lightcurve,
    colour_image,
    cutout_image,
    encode,
    has_warps,
    position_table,
    store_filters,
)
from ps1dask.render.parallel import PLOT_LOCK, map_positions
from ps1dask.render.store import has_stacks, picture_filters, picture_format, status_codes
from ps1dask.storage import open_store
from ps1dask.storage.layout import STATUS
from ps1dask.storage.location import StoreLike, StoreLocation

_MIME = {"jpg": "image/jpeg", "png": "image/png"}


@dataclass(frozen=True)
class GalleryOptions:
    """What each card shows (picklable: sent to the Dask tasks)."""

    filters: str  #: thumbnails, in this order
    colour: tuple[str | None, ...] | None  #: red, green, blue filters, or no composite
    method: str = "lupton"
    display: Display = field(default_factory=Display)
    thumb_size: int = 128
    fmt: str = "jpg"
    lightcurves: bool = True


def _data_uri(data: bytes, fmt: str) -> str:
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def _thumb(image: np.ndarray, opts: GalleryOptions) -> str:
    from ps1dask.imaging import output_shape, resize_image

    h, w = image.shape[:2]
    if max(h, w) > opts.thumb_size:
        tw, th = output_shape(w, h, opts.thumb_size)
        image = resize_image(image, tw, th)
    return _data_uri(encode(image, opts.fmt), opts.fmt)


def lightcurve_png(
    ds: xr.Dataset, i: int, *, width: float = 3.4, height: float = 1.9, dpi: int = 90
) -> tuple[bytes | None, int]:
    """PNG of the aperture light curve of position ``i`` (``None`` if it has no good
    warp) and the number of points."""
    from ps1dask.plots import figure_png, lightcurve_figure

    df = aperture_lightcurve(ds, i)
    if df.empty:
        return None, 0
    with PLOT_LOCK:
        fig = lightcurve_figure(df, title="", figsize=(width, height), legend="above")
        for ax in fig.axes:
            ax.tick_params(labelsize=6)
            ax.xaxis.label.set_size(7)
            ax.yaxis.label.set_size(7)
            legend = ax.get_legend()
            if legend is not None:
                for text in legend.get_texts():
                    text.set_fontsize(6)
        data = figure_png(fig, dpi=dpi)
    return data, len(df)


#: Variables a task reads for its whole chunk of positions at once.
CARD_VARIABLES = (
    "id",
    "ra",
    "dec",
    "skycell",
    "stack_status",
    "stack_zeropoint",
    "stack_flux",
    "warp_status",
    "n_epochs",
)


def render_card(
    ds: xr.Dataset, i: int, opts: GalleryOptions, label: int | None = None
) -> dict[str, Any]:
    """The pictures and labels of position ``i`` of ``ds`` (a plain dict, made in a Dask
    task); ``label`` is the position number shown (default ``i``)."""
    info = position_table(ds, [i])[0]
    card: dict[str, Any] = {
        "info": info.to_dict(),
        "thumbs": {},
        "colour": None,
        "lightcurve": None,
    }
    card["info"]["index"] = int(i if label is None else label)
    card["source"] = "stack" if has_stacks(ds) else "median of the good warps"
    ok = {f for f, s in info.status.items() if s == "ok"}
    for band in opts.filters:
        if band not in ok:
            card["thumbs"][band] = None
            continue
        card["thumbs"][band] = _thumb(cutout_image(ds, i, band, opts.display), opts)
    if opts.colour is not None:
        bands = [b for b in opts.colour if b is not None]
        if all(b in ok for b in bands):
            img = colour_image(ds, i, bands, opts.display, method=opts.method)
            card["colour"] = _thumb(img, opts)
    if opts.lightcurves and has_warps(ds):
        png, n = lightcurve_png(ds, i)
        card["lightcurve"] = _data_uri(png, "png") if png is not None else None
        card["lightcurve_points"] = n
    return card


def _render_card_task(sub: xr.Dataset, k: int, i: int, opts: GalleryOptions) -> dict[str, Any]:
    return render_card(sub, k, opts, label=i)


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------

_CSS = """
:root { --bg:#111418; --card:#1b2027; --fg:#e6e6e6; --dim:#9aa4b1; --bad:#e0604f; --ok:#62c462; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
header { padding:12px 18px; background:#0b0d10; border-bottom:1px solid #2a313b; position:sticky; top:0; z-index:2; }
header h1 { font-size:18px; margin:0 0 4px 0; font-weight:600; }
header .meta { color:var(--dim); font-size:12px; }
nav.pages { margin-top:6px; display:flex; flex-wrap:wrap; gap:4px; align-items:center; }
nav.pages a, nav.pages span { padding:2px 7px; border-radius:4px; color:var(--fg); text-decoration:none; background:#222932; font-size:12px; }
nav.pages span.current { background:#3b6ea5; }
.tools { margin-top:6px; display:flex; gap:12px; align-items:center; font-size:12px; color:var(--dim); }
.tools input[type=search] { background:#222932; color:var(--fg); border:1px solid #394250; border-radius:4px; padding:3px 6px; width:220px; }
main { display:grid; grid-template-columns:repeat(auto-fill, minmax(var(--cardw, 300px), 1fr)); gap:12px; padding:14px 18px; }
.card { background:var(--card); border-radius:8px; padding:10px; border:1px solid #262d36; }
.card.hidden { display:none; }
.card .top { display:flex; gap:10px; }
.colour img, .colour .blank { width:var(--big, 128px); height:var(--big, 128px); }
img { image-rendering:pixelated; background:#000; border-radius:3px; display:block; }
.label { font-size:12px; min-width:0; }
.label .id { font-weight:600; font-size:14px; word-break:break-all; }
.label .coord, .label .cell { color:var(--dim); font-family:ui-monospace, Menlo, monospace; font-size:11px; }
.status { margin-top:4px; display:flex; flex-wrap:wrap; gap:3px; }
.badge { font-size:10px; padding:1px 5px; border-radius:8px; background:#243a24; color:var(--ok); }
.badge.bad { background:#3d2220; color:var(--bad); }
.thumbs { display:flex; gap:4px; margin-top:8px; flex-wrap:wrap; }
body.nothumbs .thumbs { display:none; }
.thumb { text-align:center; font-size:11px; color:var(--dim); }
.thumb img, .thumb .blank { width:var(--small, 64px); height:var(--small, 64px); }
.blank { display:flex; align-items:center; justify-content:center; background:#2a2f36; color:var(--dim); font-size:10px; border-radius:3px; text-align:center; padding:2px; }
.lc { margin-top:8px; }
.lc img { max-width:100%; height:auto; image-rendering:auto; background:#fff; }
footer { color:var(--dim); font-size:11px; padding:8px 18px 18px; }
"""

_JS = """
(function () {
  var box = document.getElementById('search');
  var cards = Array.prototype.slice.call(document.querySelectorAll('.card'));
  var count = document.getElementById('shown');
  function apply() {
    var q = (box.value || '').trim().toLowerCase();
    var n = 0;
    cards.forEach(function (c) {
      var hit = !q || c.getAttribute('data-search').indexOf(q) >= 0;
      c.classList.toggle('hidden', !hit);
      if (hit) n++;
    });
    count.textContent = n;
  }
  box.addEventListener('input', apply);
  document.getElementById('thumbs').addEventListener('change', function (e) {
    document.body.classList.toggle('nothumbs', !e.target.checked);
  });
  apply();
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _sexagesimal(ra: float, dec: float) -> str:
    if not (math.isfinite(ra) and math.isfinite(dec)):
        return ""
    h = (ra % 360.0) / 15.0
    hh = int(h)
    mm = int((h - hh) * 60)
    ss = ((h - hh) * 60 - mm) * 60
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd = int(d)
    dm = int((d - dd) * 60)
    ds = ((d - dd) * 60 - dm) * 60
    return f"{hh:02d}:{mm:02d}:{ss:05.2f} {sign}{dd:02d}:{dm:02d}:{ds:04.1f}"


def _card_html(card: dict[str, Any], opts: GalleryOptions) -> str:
    info = card["info"]
    status = info["status"]
    bad = {f: s for f, s in status.items() if s != "ok"}
    search = f"{info['id']} {info['skycell']} {info['index']}".lower()
    parts = [f'<div class="card" data-index="{info["index"]}" data-search="{_esc(search)}">']
    parts.append('<div class="top">')
    if opts.colour is not None:
        rgb = "".join(b or "·" for b in opts.colour)
        if card["colour"]:
            parts.append(
                f'<div class="colour"><img alt="{_esc(info["id"])} colour {rgb}" title="{rgb} colour" '
                f'src="{card["colour"]}"></div>'
            )
        else:
            reasons = sorted({s.replace("_", " ") for s in bad.values()})
            why = ", ".join(reasons) or "no image"
            parts.append(f'<div class="colour"><div class="blank">{_esc(why)}</div></div>')
    ra, dec = info["ra"], info["dec"]
    badges = "".join(
        f'<span class="badge{" bad" if s != "ok" else ""}" title="{_esc(f)} {_esc(card["source"])}: {_esc(s)}">'
        f"{_esc(f)} {_esc(s)}</span>"
        for f, s in status.items()
    )
    epochs = info.get("n_epochs") or {}
    epoch_text = (
        '<div class="cell">warps '
        + " ".join(f"{_esc(f)}:{n}" for f, n in epochs.items())
        + "</div>"
        if epochs
        else ""
    )
    parts.append(
        '<div class="label">'
        f'<div class="id">{_esc(info["id"])}</div>'
        f'<div class="coord">RA {ra:.6f} Dec {dec:+.6f}</div>'
        f'<div class="coord">{_esc(_sexagesimal(ra, dec))}</div>'
        f'<div class="cell">{_esc(info["skycell"] or "no skycell")} · #{info["index"]}</div>'
        f"{epoch_text}"
        f'<div class="status">{badges}</div>'
        "</div></div>"
    )
    parts.append('<div class="thumbs">')
    for band, uri in card["thumbs"].items():
        if uri:
            parts.append(
                f'<div class="thumb"><img alt="{_esc(info["id"])} {band}" title="{band} {_esc(card["source"])}" '
                f'src="{uri}"><div>{band}</div></div>'
            )
        else:
            parts.append(
                f'<div class="thumb"><div class="blank">{_esc(status.get(band, "?").replace("_", " "))}</div>'
                f"<div>{band}</div></div>"
            )
    parts.append("</div>")
    if card.get("lightcurve"):
        parts.append(
            f'<div class="lc"><img alt="{_esc(info["id"])} light curve" '
            f'title="aperture photometry of {card.get("lightcurve_points", 0)} warps" '
            f'src="{card["lightcurve"]}"></div>'
        )
    elif "lightcurve" in card and opts.lightcurves and card.get("lightcurve_points", None) == 0:
        parts.append(
            '<div class="lc"><div class="blank" style="height:40px">no good warp</div></div>'
        )
    parts.append("</div>")
    return "".join(parts)


def html_output(output: str | Path) -> Path:
    """``output`` with ``.html`` appended unless it ends in ``.html`` or ``.htm``."""
    path = Path(output)
    if path.suffix.lower() in (".html", ".htm"):
        return path
    return path.with_name(path.name + ".html")


def page_name(output: Path, page: int) -> Path:
    """File of page ``page`` (1-based): the output itself for page 1."""
    if page == 1:
        return output
    return output.with_name(f"{output.stem}-p{page:03d}{output.suffix or '.html'}")


def _nav(output: Path, page: int, n_pages: int) -> str:
    if n_pages <= 1:
        return ""
    links = []

    def link(k: int, text: str | None = None) -> str:
        label = text or str(k)
        if k == page and text is None:
            return f'<span class="current">{label}</span>'
        return f'<a href="{_esc(page_name(output, k).name)}" data-page="{k}">{label}</a>'

    if page > 1:
        links.append(link(page - 1, "‹ prev"))
    shown = sorted({1, n_pages, *range(max(1, page - 4), min(n_pages, page + 4) + 1)})
    last = 0
    for k in shown:
        if k - last > 1:
            links.append("<span>…</span>")
        links.append(link(k))
        last = k
    if page < n_pages:
        links.append(link(page + 1, "next ›"))
    return f'<nav class="pages">{"".join(links)}</nav>'


def _page_html(
    cards: list[dict[str, Any]],
    opts: GalleryOptions,
    *,
    title: str,
    store: str,
    output: Path,
    page: int,
    n_pages: int,
    n_positions: int,
    first: int,
    summary: str,
) -> str:
    big = max(64, min(opts.thumb_size, 256))
    small = max(48, min(opts.thumb_size // 2, 128))
    cardw = max(260, big + 190)
    body = "\n".join(_card_html(c, opts) for c in cards)
    last = first + len(cards)
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)} — page {page} of {n_pages}</title>
<style>:root {{ --big:{big}px; --small:{small}px; --cardw:{cardw}px; }}{_CSS}</style>
</head><body>
<header>
<h1>{_esc(title)}</h1>
<div class="meta">{_esc(store)} · positions {first + 1}–{last} of {n_positions} · page {page} of {n_pages} · {_esc(summary)}</div>
{_nav(output, page, n_pages)}
<div class="tools"><label>search <input type="search" id="search" placeholder="id or skycell"></label>
<span><span id="shown">{len(cards)}</span> shown</span>
<label><input type="checkbox" id="thumbs" checked> per-filter thumbnails</label></div>
</header>
<main id="grid">
{body}
</main>
<footer>Made by ps1dask gallery on {now}. Stretch {opts.display.stretch}, autoscale {opts.display.autoscale:g}%,
contrast {opts.display.contrast:g}{", inverted" if opts.display.invert else ""}; colour {opts.method}.
Images north up, east left.</footer>
<script>{_JS}</script>
</body></html>
"""


def write_gallery(
    store: StoreLike,
    output: str | Path = "gallery.html",
    *,
    page_size: int = 100,
    filters: str | None = None,
    colour: str | None = None,
    no_colour: bool = False,
    method: str = "lupton",
    thumb_size: int = 128,
    fmt: str = "jpg",
    lightcurves: bool = True,
    display: Display | None = None,
    positions: Any = None,
    title: str | None = None,
    client: Any = None,
    num_workers: int | None = None,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the gallery of ``store`` to ``output`` (and ``<stem>-pNNN.html`` pages).

    An ``output`` without ``.html``/``.htm`` gets ``.html`` added (a browser shows the
    source of a page without it).

    Parameters
    ----------
    store : str or Path
        The ps1dask store: a directory or a URL (``s3://bucket/field.zarr``, ...).
    output : str or Path
        The first page's file.
    page_size : int
        Positions per page.
    filters : str, optional
        Filters of the thumbnails shown (default all the store's).
    colour : str, optional
        Red, green and blue filters of the composite (default reddest/middle/bluest).
    no_colour : bool
        No colour composite.
    method : str
        Colour method, ``"lupton"`` or ``"fitscut"``.
    thumb_size : int
        Thumbnail side, pixels.
    fmt : str
        Thumbnail format, ``"jpg"`` or ``"png"``.
    lightcurves : bool
        Whether to draw each position's light curve (stores with warps).
    display : Display, optional
        Stretch settings.
    positions : sequence of int, optional
        Indices (input order) to show (default all).
    title : str, optional
        Page title (default "PS1 cutouts: <the store's name>").
    client : distributed.Client or str, optional
        A Dask client or scheduler address (default: threads).
    num_workers : int, optional
        Threads of the local scheduler when there is no client.
    progress : bool
        Whether to show a progress bar.
    storage_options : dict, optional
        For a store URL: fsspec's options, as :func:`ps1dask.open_store` takes them.

    Returns
    -------
    list of Path
        The page files written.
    """
    store = StoreLocation.of(store, storage_options)
    output = html_output(output)
    fmt = picture_format(fmt)
    if int(page_size) < 1:
        raise InvalidParameterError(f"page size {page_size!r} must be at least 1")
    if not 16 <= int(thumb_size) <= 1024:
        raise InvalidParameterError(f"thumbnail size {thumb_size!r} must be 16..1024 pixels")
    ds = open_store(store)
    thumbs, rgb = picture_filters(ds, filters, colour, no_colour, method)
    opts = GalleryOptions(
        filters=thumbs,
        colour=rgb,
        method=method,
        display=display or Display(),
        thumb_size=int(thumb_size),
        fmt=fmt,
        lightcurves=bool(lightcurves),
    )
    n = int(ds.sizes["position"])
    if positions is None:
        indices = list(range(n))
    else:
        indices = [int(p) for p in positions]
        outside = [p for p in indices if not 0 <= p < n]
        if outside:
            raise InvalidParameterError(f"positions {outside[:5]} are not in 0..{n - 1}")
    status = status_codes(ds)
    counts = {
        name: int((status == code).sum()) for name, code in STATUS.items() if (status == code).any()
    }
    summary = (
        "filters " + store_filters(ds) + " · " + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    if has_warps(ds):
        summary += f" · warps up to {int(ds.sizes['epoch'])} epochs"
    title = title or f"PS1 cutouts: {store.url.rstrip('/').rsplit('/', 1)[-1]}"
    n_pages = max(1, math.ceil(len(indices) / int(page_size)))
    output.parent.mkdir(parents=True, exist_ok=True)
    task = functools.partial(_render_card_task, opts=opts)
    written = []
    for page in range(1, n_pages + 1):
        first = (page - 1) * int(page_size)
        chunk = indices[first : first + int(page_size)]
        cards = map_positions(
            task, store, chunk, preload=CARD_VARIABLES, client=client, num_workers=num_workers
        )
        path = page_name(output, page)
        path.write_text(
            _page_html(
                cards,
                opts,
                title=title,
                store=str(store),
                output=output,
                page=page,
                n_pages=n_pages,
                n_positions=len(indices),
                first=first,
                summary=summary,
            ),
            encoding="utf-8",
        )
        written.append(path)
        if progress:
            print(f"page {page}/{n_pages}: {path}", flush=True)
    return written
