"""The ``/cgi-bin/ps1cutouts`` web page of the emulated service (self-contained HTML).

Like STScI's page: a form (position or skycell id, filters, colour, file types, auxiliary
images, cutout size, JPEG display size) and, for a position, one labelled JPEG per image
from ``fitscut.cgi`` with FITS (whole skycell file) and FITS-cutout links, preceded by a
colour image of the reddest, middle and bluest selected filters (y/i/g by default). The page
URL encodes every parameter, e.g.::

    /cgi-bin/ps1cutouts?pos=83.63321+22.01446&filter=color&filter=g&filter=r&size=240

Positions: ``ra dec`` in degrees, sexagesimal (``05 34 31.9 +22 00 52``, ``5:34:31.9
22:00:52``, ``5h34m31.9s +22d00m52s``) or a skycell id (``skycell.2069.026``, meaning its
centre). Object names need NED/SIMBAD, which an offline emulator cannot reach: the page
says so instead of failing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ps1dask.emulator.service_rules import FILTERS, IMAGE_TYPES, MAX_CUTOUT_SIDE
from ps1dask.exceptions import InvalidParameterError, InvalidSkycellError
from ps1dask.tessellation import SkycellId, locate, skycell_center
from ps1dask.wire import CUTOUTS_PAGE_PATH, FITSCUT_PATH

AUXILIARY = ("data", "mask", "wt", "exp", "expwt", "num")
DISPLAY_SIZES = (0, 120, 180, 240, 300, 360, 480, 600, 800, 1024)
#: JPEG display side when output_size is 0 ("default") and the cutout is larger.
MAX_DEFAULT_DISPLAY = 1024

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.35em;margin:0 0 .2em}
.note{color:#555;font-size:.9em}
form{background:#fff;border:1px solid #ccc;padding:.8em 1em;border-radius:6px;display:inline-block}
fieldset{border:none;margin:.3em 0;padding:0}
label{margin-right:.7em;white-space:nowrap}
input[type=text]{width:28em}
.msg{background:#fff3cd;border:1px solid #e0c36a;padding:.5em .8em;margin:.8em 0;border-radius:4px}
.err{background:#f8d7da;border-color:#d99}
.grid{display:flex;flex-wrap:wrap;gap:14px;margin-top:1em}
.tile{background:#fff;border:1px solid #ccc;padding:6px;border-radius:4px;font-size:.8em}
.tile .label{font-weight:600;margin-bottom:2px}
.tile .links a{margin-right:.8em}
.tile img{display:block;background:#000;image-rendering:pixelated}
h2{font-size:1.1em;margin:1.2em 0 .2em}
"""


class _Form:
    """The page's parameters, parsed leniently (unknown values are ignored)."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        getall = getattr(params, "getall", None)

        def values(name: str) -> list[str]:
            if getall is not None:
                return [str(v) for v in getall(name, [])]
            value = params.get(name)
            return [] if value is None else [str(value)]

        self.pos = (values("pos") or [""])[0].strip()
        raw_filters = values("filter") + values("filters")
        self.submitted = bool(raw_filters) or bool(self.pos)
        if raw_filters:
            chosen: set[str] = set()
            colour = False
            for value in raw_filters:
                for token in value.replace(",", " ").split():
                    if token.lower() in ("color", "colour"):
                        colour = True
                    else:
                        chosen.update(c for c in token if c in FILTERS)
            self.filters = "".join(f for f in FILTERS if f in chosen)
            self.colour = colour
        else:
            self.filters = FILTERS
            self.colour = True
        colour_flag = values("color") + values("colour")
        if colour_flag:
            self.colour = colour_flag[0].strip().lower() not in ("0", "false", "no", "off", "")
        filetypes = [t.strip().lower() for v in values("filetypes") for t in v.split(",")]
        self.filetypes = [t for t in ("stack", "warp") if t in filetypes] or ["stack"]
        aux = [a.strip().lower() for v in values("auxiliary") for a in v.split(",")]
        self.auxiliary = [a for a in AUXILIARY if a in aux] or ["data"]
        self.errors: list[str] = []
        self.size = self._int(values("size"), 240, 1, MAX_CUTOUT_SIDE, "cutout size")
        self.output_size = self._int(values("output_size"), 0, 0, 6000, "JPEG display size")
        try:
            self.autoscale = float((values("autoscale") or ["99.5"])[0])
            if not 50 < self.autoscale <= 100:
                raise ValueError
        except ValueError:
            self.errors.append("autoscale must be a percentile between 50 and 100; using 99.5")
            self.autoscale = 99.5

    def _int(self, raw: list[str], default: int, lo: int, hi: int, what: str) -> int:
        if not raw or not raw[0].strip():
            return default
        try:
            value = int(float(raw[0]))
        except ValueError:
            self.errors.append(f"{what} {raw[0]!r} is not a number; using {default}")
            return default
        if not lo <= value <= hi:
            self.errors.append(f"{what} must be {lo}..{hi} pixels; using {min(max(value, lo), hi)}")
            value = min(max(value, lo), hi)
        return value

    @property
    def display_size(self) -> int:
        if self.output_size:
            return self.output_size
        return min(self.size, MAX_DEFAULT_DISPLAY)

    def image_types(self) -> list[str]:
        out = []
        for filetype in self.filetypes:
            for aux in self.auxiliary:
                name = filetype if aux == "data" else f"{filetype}.{aux}"
                if name in IMAGE_TYPES:
                    out.append(name)
        return out


def parse_position(text: str) -> tuple[float, float, str | None]:
    """``(ra, dec, skycell or None)`` in degrees from the page's ``pos`` box.

    Raises ``InvalidParameterError`` with a message fit for the page.
    """
    stripped = text.strip()
    if stripped.lower().startswith("skycell") or _looks_like_skycell(stripped):
        try:
            sid = SkycellId.parse(stripped)
        except InvalidSkycellError as err:
            raise InvalidParameterError(str(err)) from None
        ra, dec = skycell_center(sid)
        return ra, dec, str(sid)
    parts = stripped.replace(",", " ").split()
    if len(parts) == 2:
        try:
            ra, dec = float(parts[0]), float(parts[1])
        except ValueError:
            pass
        else:
            if not (math.isfinite(ra) and math.isfinite(dec)) or abs(dec) > 90:
                raise InvalidParameterError(f"{text!r}: need finite degrees with |dec| <= 90")
            return ra % 360.0, dec, None
    if any(ch.isdigit() for ch in stripped):
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        try:
            coord = SkyCoord(stripped, unit=(u.hourangle, u.deg), frame="icrs")
        except (ValueError, TypeError):
            pass
        else:
            return float(coord.ra.deg), float(coord.dec.deg), None
    raise InvalidParameterError(
        f"{text!r} is not a position this offline emulator understands. Object names need "
        "the NED/SIMBAD name resolvers, which are not reachable offline: enter 'ra dec' in "
        "degrees, 'hh mm ss +dd mm ss', 'h:m:s d:m:s' or a skycell id like skycell.2069.026."
    )


def _looks_like_skycell(text: str) -> bool:
    parts = text.split(".")
    return (
        len(parts) == 2
        and all(p.isdigit() for p in parts)
        and len(parts[0]) == 4
        and len(parts[1]) == 3
    )


def _url(path: str, **params: Any) -> str:
    return f"{path}?{urlencode({k: v for k, v in params.items() if v is not None})}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _form_html(form: _Form) -> str:
    def check(name: str, value: str, on: bool, label: str) -> str:
        flag = " checked" if on else ""
        return (
            f'<label><input type="checkbox" name="{name}" value="{_esc(value)}"{flag}>'
            f"{_esc(label)}</label>"
        )

    filters = "".join(check("filter", f, f in form.filters, f) for f in FILTERS)
    filters += check("filter", "color", form.colour, "color")
    filetypes = "".join(check("filetypes", t, t in form.filetypes, t) for t in ("stack", "warp"))
    aux = "".join(check("auxiliary", a, a in form.auxiliary, a) for a in AUXILIARY)
    sizes = "".join(
        f'<option value="{n}"{" selected" if n == form.output_size else ""}>'
        f"{'default' if n == 0 else n}</option>"
        for n in sorted(set(DISPLAY_SIZES) | {form.output_size})
    )
    return f"""
<form method="get" action="{CUTOUTS_PAGE_PATH}">
 <fieldset><label for="pos">Position or skycell</label>
  <input type="text" id="pos" name="pos" value="{_esc(form.pos)}"
   placeholder="83.63321 22.01446 | 05 34 31.97 +22 00 52.1 | skycell.1784.059"></fieldset>
 <fieldset>Filters: {filters}</fieldset>
 <fieldset>File types: {filetypes} &nbsp; Auxiliary data: {aux}</fieldset>
 <fieldset><label>Cutout image size <input type="number" name="size" min="1"
   max="{MAX_CUTOUT_SIDE}" value="{form.size}" style="width:6em"> pixels
   ({form.size * 0.25:g} arcsec)</label>
  <label>JPEG display size <select name="output_size">{sizes}</select></label>
  <input type="hidden" name="autoscale" value="{form.autoscale:g}"></fieldset>
 <fieldset><input type="submit" value="Submit"> <input type="reset" value="Reset">
  <a href="{CUTOUTS_PAGE_PATH}">Clear</a></fieldset>
</form>"""


def _tile(label: str, img_src: str, width: int, height: int, links: list[tuple[str, str]]) -> str:
    link_html = "".join(f'<a href="{_esc(href)}">{_esc(text)}</a>' for text, href in links)
    return (
        f'<div class="tile"><div class="label">{_esc(label)}</div>'
        f'<div class="links">{link_html}</div>'
        f'<img src="{_esc(img_src)}" width="{width}" height="{height}" loading="lazy" '
        f'alt="{_esc(label)}" title="{_esc(label)}"></div>'
    )


def cutouts_page(service: Any, params: Mapping[str, Any]) -> tuple[str, int]:
    """``(html, status)`` of the ps1cutouts page (runs in the emulator's thread pool)."""
    form = _Form(params)
    body: list[str] = []
    status = 200
    for message in form.errors:
        body.append(f'<div class="msg">{_esc(message)}</div>')
    if form.pos:
        try:
            body.append(_results(service, form))
        except InvalidParameterError as err:
            body.append(f'<div class="msg err">{_esc(err)}</div>')
            status = 400
    title = "PS1 Image Cutouts (ps1dask emulator)"
    return (
        f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<p class="note">An offline stand-in for ps1images.stsci.edu with a synthetic sky
(ps1dask.emulator). Stacks are 0.25 arcsec/pixel; FITS cutouts are linear flux.</p>
{_form_html(form)}
{"".join(body)}
</body></html>
""",
        status,
    )


def _results(service: Any, form: _Form) -> str:
    ra, dec, cell = parse_position(form.pos)
    if cell is None:
        located = locate(ra, dec).iloc[0]
        if not located["in_footprint"]:
            return (
                f'<div class="msg">RA, Dec = {ra:.6f} {dec:.6f} is outside the PS1 3pi '
                "survey (dec &lt; -30): there are no images here.</div>"
            )
        sid = SkycellId(int(located["projcell"]), int(located["subcell"]))
    else:
        sid = SkycellId.parse(cell)
    sky = service.sky
    head = (
        f"<h2>RA, Dec = {ra:.6f} {dec:+.6f} &nbsp; {_esc(sid)} &nbsp; "
        f"{form.size}x{form.size} pixels ({form.size * 0.25:g} arcsec)</h2>"
    )
    if not sky.has_data(sid):
        return head + '<div class="msg">No PS1 images cover this position.</div>'
    if not form.filters:
        return head + '<div class="msg">Select at least one filter.</div>'
    types = tuple(form.image_types())
    refs = list(service.listed_images(sid, form.filters, types)) if types else []
    display = form.display_size
    common = {"ra": repr(ra), "dec": repr(dec), "size": form.size}
    jpeg = {
        **common,
        "format": "jpg",
        "output_size": display,
        "asinh": "True",
        "autoscale": f"{form.autoscale:g}",
    }
    tiles: list[str] = []

    stacks = {r.band: r for r in refs if r.image_type == "stack"}
    if form.colour and len(stacks) >= 2:
        bands = [b for b in FILTERS if b in stacks]
        red, blue = stacks[bands[-1]], stacks[bands[0]]
        green = stacks[bands[len(bands) // 2]] if len(bands) >= 3 else None
        names = "/".join(
            b for b in (bands[-1], bands[len(bands) // 2] if green else None, bands[0]) if b
        )
        src = _url(
            FITSCUT_PATH,
            red=red.filename,
            green=green.filename if green else None,
            blue=blue.filename,
            **jpeg,
        )
        tiles.append(_tile(f"color {sid} {names}", src, display, display, []))

    def order(ref: Any) -> tuple:
        return (
            types.index(ref.image_type) if ref.image_type in types else 99,
            FILTERS.index(ref.band),
            ref.mjd or 0.0,
        )

    for ref in sorted(refs, key=order):
        label = f"{ref.image_type} {sid} {ref.band}"
        if ref.mjd is not None:
            label += f" MJD {float(ref.mjd):.5f}"
        src = _url(FITSCUT_PATH, red=ref.filename, **jpeg)
        links = [
            ("FITS", ref.filename),
            ("FITS-cutout", _url(FITSCUT_PATH, red=ref.filename, format="fits", **common)),
        ]
        tiles.append(_tile(label, src, display, display, links))
    if not tiles:
        return head + '<div class="msg">No images of the selected types and filters.</div>'
    return head + f'<div class="grid">{"".join(tiles)}</div>'


def index_page(knobs: Mapping[str, Any]) -> str:
    """The emulator's landing page: what is served where."""
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in knobs.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ps1dask emulator</title>
<style>{_STYLE} td{{padding:0 .8em}}</style></head><body>
<h1>ps1dask emulator of ps1images.stsci.edu</h1>
<ul>
<li><a href="{CUTOUTS_PAGE_PATH}">/cgi-bin/ps1cutouts</a>: the cutout web page</li>
<li><a href="/cgi-bin/ps1filenames.py?skycell=1405.053">/cgi-bin/ps1filenames.py</a>:
 image lists (ra/dec, skycell, or POST a file of 'ra dec' lines)</li>
<li>/cgi-bin/fitscut.cgi: cutouts (FITS, JPEG, PNG, colour)</li>
<li>/rings.v3.skycell/PPPP/SSS/&lt;shortname&gt;: whole skycell files (HTTP Range)</li>
<li>/stpubdata/panstarrs/ps1/public/rings.v3.skycell/PPPP/SSS/&lt;shortname&gt;: the same
 files S3-style (bucket <code>stpubdata</code>, path-style, anonymous or signed; GET/HEAD with
 Range, <a href="/stpubdata?list-type=2&amp;prefix=panstarrs/ps1/public/rings.v3.skycell/&amp;delimiter=/&amp;max-keys=20">ListObjectsV2</a>);
 with s3fs/obstore/boto: <code>s3://stpubdata/panstarrs/ps1/public/...</code>, endpoint this
 server</li>
<li><a href="/_emulator/metrics">/_emulator/metrics</a>,
 <a href="/_emulator/config">/_emulator/config</a>,
 <a href="/_emulator/truth?ra=332.6&amp;dec=2.2&amp;radius=60">/_emulator/truth</a></li>
</ul>
<h2>Settings</h2><table>{rows}</table>
</body></html>
"""
