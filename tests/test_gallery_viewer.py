"""The gallery and the viewer in a real browser (headless Chromium over the DevTools
protocol), plus their HTML/HTTP contracts without one.

The browser tests check what a person would see: pages load with no console error or
exception, every picture decodes (``naturalWidth > 0``), the controls change the picture
(filter, stretch, contrast, invert, warp epoch, blinking), and screenshots (saved under the
test's tmp dir) are not blank. They are skipped only when no Chromium binary is installed
(``apt-get install chromium``; .ci/run installs it), and under ``CI=true`` that skip is a
failure (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from render_helpers import STARS, stack_store, warp_only_store, warp_store

import ps1dask
from ps1dask import render
from ps1dask.gallery import write_gallery
from ps1dask.storage import STATUS, STATUS_NAMES

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _chromium() -> str | None:
    override = os.environ.get("PS1DASK_CHROMIUM")
    if override:
        return override
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


needs_chromium = pytest.mark.skipif(
    _chromium() is None, reason="no chromium binary found (apt-get install chromium)"
)


# --------------------------------------------------------------------------------------
# a small DevTools-protocol driver (aiohttp websockets: no extra dependency)
# --------------------------------------------------------------------------------------


class Browser:
    """Headless Chromium driven over the DevTools protocol from a private event loop."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 900) -> None:
        self.profile = profile
        self.loop = asyncio.new_event_loop()
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--mute-audio",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        self.errors: list[str] = []
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._events: list[dict] = []
        self.loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    async def _connect(self, url: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.reader = self.loop.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method = data.get("method", "")
            params = data.get("params", {})
            self._events.append(data)
            if method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.errors.append(
                    f"exception: {d.get('exception', {}).get('description') or d.get('text')}"
                )
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
                )
                self.errors.append(f"console.{params['type']}: {text}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                e = params["entry"]
                self.errors.append(f"log: {e.get('text')} {e.get('url', '')}")

    async def _send(self, method: str, params: dict | None, timeout: float) -> dict:
        self._id += 1
        fut = self.loop.create_future()
        self._pending[self._id] = fut
        await self.ws.send_str(
            json.dumps({"id": self._id, "method": method, "params": params or {}})
        )
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        return self.loop.run_until_complete(self._send(method, params, timeout))

    def eval(self, expression: str, timeout: float = 60):
        """The value of a JS expression (promises awaited)."""
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            timeout,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(expression):
                return
            self.loop.run_until_complete(asyncio.sleep(0.1))
        raise AssertionError(f"timed out waiting for {what or expression}")

    def goto(self, url: str, timeout: float = 60) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for(
            f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url[:20])})",
            timeout,
            f"{url} to load",
        )

    def screenshot(self, path: Path) -> Image.Image:
        data = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(data)
        return Image.open(io.BytesIO(data))

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.loop.run_until_complete(self.ws.close())
                self.loop.run_until_complete(self.session.close())
                self.reader.cancel()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.loop.close()


@pytest.fixture()
def browser(tmp_path):
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    b = Browser(_chromium(), profile)
    try:
        yield b
    finally:
        b.close()


def _not_blank(img: Image.Image) -> float:
    """Standard deviation of a screenshot's pixels (a blank page gives about 0)."""
    arr = np.asarray(img.convert("RGB"), dtype=float)
    return float(arr.std())


ALL_IMAGES_DECODED = """(() => {
  const imgs = Array.from(document.images);
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
})()"""


# --------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stars_store(job_emulator, dask_client, tmp_path_factory):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    return stack_store(tmp_path_factory.mktemp("gallery-stores"), job_emulator, dask_client)


@pytest.fixture(scope="module")
def stars_warp_store(stars_store, job_emulator, dask_client):
    return warp_store(stars_store.parent, job_emulator, dask_client)


@pytest.fixture(scope="module")
def real_warp_store(job_emulator, dask_client, tmp_path_factory):
    """A warp store exactly as `ps1dask warps` writes it: three emulator stars of skycell
    1405.053 and one position outside the footprint, every warp epoch in g and i."""
    from ps1dask.cli import main

    job_emulator.configure(latency=0.0, fault_rate=0.0)
    base = tmp_path_factory.mktemp("real-warps")
    csv = base / "positions.csv"
    rows = [(n, ra, dec) for n, ra, dec, *_ in STARS[:3]] + [("south", 10.0, -60.0)]
    pd.DataFrame(rows, columns=["name", "ra", "dec"]).to_csv(csv, index=False)
    store = base / "warps.zarr"
    args = ["warps", str(csv), "-o", str(store), "--filters", "gi", "--size", "32"]
    args += ["--strategy", "cutout", "--service", job_emulator.url]
    assert main([*args, "--scheduler", dask_client.scheduler.address]) == 0
    return store


def _warp_truth(emulator, band: str) -> list:
    return emulator.sky.warp_epochs("1405.053", band)


# --------------------------------------------------------------------------------------
# the gallery
# --------------------------------------------------------------------------------------


def test_gallery_of_a_store_made_by_ps1dask_warps(real_warp_store, job_emulator, tmp_path):
    ds = ps1dask.open_store(real_warp_store)
    assert "stack_flux" not in ds.variables and list(ds["id"].values)[-1] == "south"
    for k, band in enumerate("gi"):  # the job stored every true epoch of the skycell
        assert (ds.n_epochs.values[:3, k] == len(_warp_truth(job_emulator, band))).all()
    pages = write_gallery(real_warp_store, tmp_path / "warps.html", page_size=10)
    assert [p.name for p in pages] == ["warps.html"]
    page = pages[0].read_text()
    # three stars: a colour composite and two thumbnails each, from the median of the good
    # warps, and a light curve each; the position outside the footprint shows its status
    assert page.count('class="card"') == 4
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) == 3 * 3
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 3
    assert "median of the good warps" in page
    n_g, n_i = (len(_warp_truth(job_emulator, band)) for band in "gi")
    good = (ds.warp_status.values == STATUS["ok"]).sum(axis=(1, 2))
    for i, (name, ra, _dec, *_) in enumerate(STARS[:3]):
        assert f">{name}<" in page and f"RA {ra:.6f}" in page
        assert f"aperture photometry of {good[i]} warps" in page
    assert page.count(f"warps g:{n_g} i:{n_i}") == 3
    # no skycell, no warps: said so (a warp-only store has no per-position footprint status)
    assert "no skycell" in page and "warps g:0 i:0" in page and "g no_data" in page
    # every inlined picture decodes to the thumbnail size
    for blob in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        assert Image.open(io.BytesIO(base64.b64decode(blob))).size[0] > 0


# --------------------------------------------------------------------------------------
# the gallery (hand-built warps on a real stack store)
# --------------------------------------------------------------------------------------


def test_gallery_html_pages_labels_and_inlined_images(stars_store, stars_warp_store, tmp_path):
    pages = write_gallery(stars_warp_store, tmp_path / "g" / "gallery.html", page_size=4)
    assert [p.name for p in pages] == ["gallery.html", "gallery-p002.html"]
    first, second = (p.read_text() for p in pages)
    assert 'src="http' not in first and '<link rel="stylesheet"' not in first  # self-contained
    # page 1: 4 cards, each a colour composite + 3 thumbnails + a light curve, all inlined
    assert first.count('class="card"') == 4
    assert len(re.findall(r'src="data:image/jpeg;base64,', first)) == 4 * 4
    assert len(re.findall(r'src="data:image/png;base64,', first)) == 4  # light curves
    for name, ra, dec, *_ in STARS[:4]:
        assert f">{name}<" in first and f"RA {ra:.6f}" in first
    assert "skycell.1405.053" in first and "g ok" in first and 'href="gallery-p002.html"' in first
    # page 2: the faint star and the position outside the footprint (no images, its status)
    assert second.count('class="card"') == 2 and "south" in second
    assert "outside footprint" in second and 'href="gallery.html"' in second
    # a stack-only store: no light curves; two-band colour choice and png thumbnails
    single = write_gallery(stars_store, tmp_path / "s.html", colour="yg", fmt="png", thumb_size=32)[
        0
    ].read_text()
    assert "data:image/png" in single and 'class="lc"' not in single and "y·g colour" in single
    # the CLI
    from ps1dask.cli import main

    assert (
        main(
            [
                "gallery",
                str(stars_store),
                "-o",
                str(tmp_path / "cli.html"),
                "--page-size",
                "2",
                "--stretch",
                "linear",
                "--method",
                "fitscut",
                "--threads",
                "2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in tmp_path.glob("cli*.html")) == [
        "cli-p002.html",
        "cli-p003.html",
        "cli.html",
    ]
    assert (
        main(["gallery", str(stars_store), "-o", str(tmp_path / "x.html"), "--page-size", "0"]) == 1
    )


@needs_chromium
def test_gallery_in_chromium(stars_warp_store, browser, tmp_path):
    pages = write_gallery(stars_warp_store, tmp_path / "gallery.html", page_size=4)
    browser.goto(pages[0].as_uri())
    browser.wait_for(ALL_IMAGES_DECODED, what="gallery images to decode")
    n_images = browser.eval("document.images.length")
    assert n_images == 4 * 5  # colour + 3 filters + light curve per card
    # the colour composite of the red star is red where the star is
    centre = browser.eval("""(() => {
      const img = document.querySelector('.card[data-index="0"] .colour img');
      const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      return Array.from(ctx.getImageData(c.width / 2 - 1, c.height / 2 - 1, 1, 1).data);
    })()""")
    assert centre[0] > centre[1] > centre[2], centre
    shot = browser.screenshot(tmp_path / "gallery-page1.png")
    assert shot.size[0] >= 1000 and _not_blank(shot) > 20
    # client-side search
    browser.eval(
        "(() => { const q = document.getElementById('search'); q.value = 'orange';"
        " q.dispatchEvent(new Event('input')); })()"
    )
    assert browser.eval("document.querySelectorAll('.card:not(.hidden)').length") == 1
    assert browser.eval("document.getElementById('shown').textContent") == "1"
    # page links
    browser.eval("document.querySelector('a[data-page=\"2\"]').click()")
    browser.wait_for(
        "location.href.endsWith('gallery-p002.html') && document.readyState === 'complete'",
        what="page 2",
    )
    browser.wait_for(ALL_IMAGES_DECODED, what="page 2 images")
    assert browser.eval("document.querySelectorAll('.card').length") == 2
    assert "outside footprint" in browser.eval(
        "document.querySelector('.card[data-index=\"5\"]').innerText"
    )
    browser.screenshot(tmp_path / "gallery-page2.png")
    assert browser.errors == []


def test_stores_without_stacks_show_the_median_of_the_warps(
    stars_warp_store, job_emulator, dask_client, tmp_path
):
    from ps1dask.render.bulk import write_images
    from ps1dask.viewer import Viewer

    store = warp_only_store(stars_warp_store.parent, job_emulator, dask_client)
    ds = ps1dask.open_store(store)
    assert "stack_flux" not in ds.variables
    info = render.position_table(ds)
    assert info[0].status == {"g": "ok", "i": "ok", "y": "ok"}
    assert set(info[5].status.values()) == {"no_data"}
    median = render.cutout_pixels(ds, 0, "g")
    assert np.isfinite(median).mean() > 0.9  # the gaps of single warps are filled
    red = render.colour_image(ds, 0)[32, 32].astype(int)
    assert red[0] > red[1] > red[2], red
    page = write_gallery(store, tmp_path / "w.html")[0].read_text()
    assert page.count("data:image/jpeg") == 5 * 4 and "median of the good warps" in page
    index = write_images(store, tmp_path / "imgs", filters="g", no_colour=True)
    assert list(index["file"][index["file"] != ""]) == [f"{s[0]}_g.jpg" for s in STARS]
    with Viewer(store) as viewer:
        reply = requests.get(viewer.url + "/image/0.png", params={"band": "colour"}, timeout=60)
        assert reply.status_code == 200 and reply.content[:4] == b"\x89PNG"
        assert (
            requests.get(viewer.url + "/api/positions", timeout=60).json()["items"][5]["status"][
                "g"
            ]
            == "no_data"
        )


# --------------------------------------------------------------------------------------
# the viewer
# --------------------------------------------------------------------------------------


def test_viewer_http_api(stars_warp_store):
    from ps1dask.viewer import Viewer

    ds = ps1dask.open_store(stars_warp_store)
    with Viewer(stars_warp_store) as viewer:
        assert viewer.url.startswith("http://127.0.0.1:")
        get = lambda path, **kw: requests.get(viewer.url + path, timeout=60, **kw)
        info = get("/api/info").json()
        assert (
            info["n_positions"] == 6
            and info["filters"] == "giy"
            and info["warps"]
            and info["colour"] == "yig"
        )
        listing = get("/api/positions", params={"q": "ORAN"}).json()
        assert listing["total"] == 1 and listing["items"][0]["id"] == "orange"
        assert (
            get("/api/positions", params={"offset": 4, "limit": 10}).json()["items"][1]["id"]
            == "south"
        )
        pos = get("/api/position/3").json()
        assert pos["id"] == "bright" and len(pos["epochs"]["g"]) == 12
        assert pos["epochs"]["g"][2]["status"] == "blank" and pos["epochs"]["g"][0]["mjd"] > 56000
        # the PNG the page shows is the one the Python API renders
        reply = get(
            "/image/0.png",
            params={"band": "i", "stretch": "linear", "contrast": "2", "invert": "1"},
        )
        assert reply.headers["Content-Type"] == "image/png"
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(reply.content))),
            render.cutout_image(ds, 0, "i", stretch="linear", contrast=2.0, invert=True),
        )
        colour = Image.open(io.BytesIO(get("/image/0.png", params={"band": "colour"}).content))
        assert colour.mode == "RGB" and colour.size == (64, 64)
        warp = Image.open(
            io.BytesIO(
                get("/image/3.png", params={"band": "g", "epoch": "4", "size": "128"}).content
            )
        )
        assert warp.size == (128, 128)
        lc = get("/api/lightcurve/3").json()
        assert lc["flux_unit"] == "uJy" and len(lc["rows"]) == 11 + 8 + 9
        assert get("/lightcurve/3.png").content[:4] == b"\x89PNG"
        # bad requests: clear 400s, not tracebacks
        for path, params in (
            ("/image/99.png", {}),
            ("/image/0.png", {"band": "r"}),
            ("/image/0.png", {"stretch": "log"}),
            ("/image/0.png", {"band": "g", "epoch": "40"}),
            ("/api/position/x", {}),
        ):
            bad = get(path, params=params)
            assert bad.status_code == 400 and "error" in bad.json(), (path, params)


def test_viewer_http_api_on_a_store_made_by_ps1dask_warps(real_warp_store, job_emulator):
    """The viewer over a real warp store: the epochs it lists are the emulator's true
    epochs, its warp pictures are those of the stored pixels, its light curve has a row per
    good epoch."""
    from ps1dask.viewer import Viewer

    ds = ps1dask.open_store(real_warp_store)
    status = ds.warp_status.values
    with Viewer(real_warp_store) as viewer:
        get = lambda path, **kw: requests.get(viewer.url + path, timeout=60, **kw)
        info = get("/api/info").json()
        assert info["n_positions"] == 4 and info["filters"] == "gi" and info["warps"]
        for i in range(3):
            epochs = get(f"/api/position/{i}").json()["epochs"]
            for k, band in enumerate("gi"):
                truth = _warp_truth(job_emulator, band)
                assert [e["epoch"] for e in epochs[band]] == list(range(len(truth)))
                np.testing.assert_allclose(
                    [e["mjd"] for e in epochs[band]], [t.mjd_mid_utc for t in truth], atol=1e-8
                )
                assert [e["status"] for e in epochs[band]] == [
                    STATUS_NAMES[int(s)] for s in status[i, k, : len(truth)]
                ]
        # a good warp of the first star, as the page shows it: the stored pixels, rendered
        e = int(np.flatnonzero(status[0, 0] == STATUS["ok"])[0])
        reply = get("/image/0.png", params={"band": "g", "epoch": str(e)})
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/png"
        np.testing.assert_array_equal(
            np.asarray(Image.open(io.BytesIO(reply.content))),
            render.cutout_image(ds, 0, "g", epoch=e),
        )
        lc = get("/api/lightcurve/0").json()
        good = int((status[0] == STATUS["ok"]).sum())
        assert good > 0 and len(lc["rows"]) == good
        assert get("/lightcurve/0.png").content[:4] == b"\x89PNG"
        south = get("/api/position/3").json()
        assert south["id"] == "south" and set(south["status"].values()) == {"no_data"}
        assert south["epochs"] == {"g": [], "i": []}


def test_viewer_renders_off_the_event_loop(stars_store):
    """A slow picture does not hold up the other requests (rendering runs in threads)."""
    import threading

    from ps1dask.viewer import Viewer, ViewerApp

    original = ViewerApp._render
    rendering, release = threading.Event(), threading.Event()

    def held(self, i, params):
        rendering.set()
        release.wait(60)  # a render that lasts until the test lets it go
        return original(self, i, params)

    ViewerApp._render = held
    try:
        with Viewer(stars_store) as viewer:
            done = {}

            def fetch():
                done["image"] = requests.get(
                    viewer.url + "/image/0.png?band=g", timeout=60
                ).status_code

            t = threading.Thread(target=fetch)
            t.start()
            assert rendering.wait(30), "the picture request never reached the renderer"
            # answered while the render is still held (on the event loop it would block)
            assert requests.get(viewer.url + "/api/info", timeout=30).status_code == 200
            assert "image" not in done
            release.set()
            t.join(60)
            assert done["image"] == 200
    finally:
        release.set()
        ViewerApp._render = original


def test_view_cli_serves_on_loopback(stars_store):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ps1dask", "view", str(stars_store), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert requests.get(match.group(1) + "/api/info", timeout=30).json()["n_positions"] == 6
        assert (
            "<title>ps1dask viewer</title>" in requests.get(match.group(1) + "/", timeout=30).text
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@needs_chromium
def test_viewer_in_chromium(stars_warp_store, browser, tmp_path):
    from ps1dask.viewer import Viewer

    loaded = (
        "(() => { const v = document.getElementById('view'); return v.complete && v.naturalWidth > 0"
        " && v.getAttribute('data-loaded') === v.getAttribute('src'); })()"
    )
    src = "document.getElementById('view').getAttribute('src')"

    def control(js: str) -> str:
        before = browser.eval(src)
        browser.eval(js)
        browser.wait_for(
            f"{src} !== {json.dumps(before)}", what=f"the picture to change after {js}"
        )
        browser.wait_for(loaded, what=f"the picture to load after {js}")
        return browser.eval(src)

    with Viewer(stars_warp_store) as viewer:
        browser.goto(viewer.url + "/")
        browser.wait_for(loaded, what="the first picture")
        assert browser.eval("document.getElementById('pid').textContent") == "red"
        assert "band=colour" in browser.eval(src)
        browser.wait_for(
            "document.getElementById('lcimg').complete && document.getElementById('lcimg').naturalWidth > 0",
            what="the light curve",
        )
        shot = browser.screenshot(tmp_path / "viewer-colour.png")
        assert _not_blank(shot) > 20
        # the star in the middle of the picture is red
        centre = browser.eval("""(() => {
          const img = document.getElementById('view');
          const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
          const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
          return Array.from(ctx.getImageData(c.width / 2 - 1, c.height / 2 - 1, 1, 1).data);
        })()""")
        assert centre[0] > centre[1] > centre[2], centre

        url = control("document.querySelector('#bands button[data-band=\"g\"]').click()")
        assert "band=g" in url
        url = control(
            "(() => { const s = document.getElementById('stretch'); s.value = 'linear';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        assert "stretch=linear" in url
        url = control(
            "(() => { const s = document.getElementById('contrast'); s.value = '1';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        assert "contrast=2.0000" in url
        url = control("document.getElementById('invert').click()")
        assert "invert=1" in url
        url = control(
            "(() => { const s = document.getElementById('epoch'); s.value = '3';"
            " s.dispatchEvent(new Event('input')); })()"
        )
        assert "epoch=3" in url
        assert "warp 4/12" in browser.eval("document.getElementById('epochinfo').textContent")
        browser.screenshot(tmp_path / "viewer-warp.png")
        # blink: the picture steps through the good epochs by itself
        browser.eval("document.getElementById('speed').value = '150'")
        browser.eval("document.getElementById('blink').click()")
        seen = set()
        deadline = time.monotonic() + 20
        while len(seen) < 4 and time.monotonic() < deadline:
            m = re.search(r"epoch=(\d+)", browser.eval(src) or "")
            if m:
                seen.add(int(m.group(1)))
            time.sleep(0.05)
        browser.eval("document.getElementById('blink').click()")
        assert len(seen) >= 4 and 2 not in seen  # the blank epoch is skipped
        # another position from the list, by keyboard
        browser.eval("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
        browser.wait_for(
            "document.getElementById('pid').textContent === 'orange'", what="next position"
        )
        browser.wait_for(loaded, what="the next position's picture")
        # the position outside the footprint: a black picture, statuses shown, no error
        browser.eval("document.querySelector('.item[data-index=\"5\"]').click()")
        browser.wait_for("document.getElementById('pid').textContent === 'south'", what="south")
        browser.wait_for(loaded, what="south's picture")
        assert "outside_footprint" in browser.eval("document.getElementById('pcoord').textContent")
        shot = browser.screenshot(tmp_path / "viewer-last.png")
        assert _not_blank(shot) > 10
    assert browser.errors == []


# --------------------------------------------------------------------------------------
# one aperture everywhere (ps1dask.photometry.*)
# --------------------------------------------------------------------------------------


def test_gallery_viewer_and_lightcurves_use_the_configured_aperture(
    stars_warp_store, tmp_path, monkeypatch
):
    import dask

    import ps1dask.plots
    from ps1dask.lightcurves import lightcurves_frame
    from ps1dask.photometry import default_aperture

    ds = ps1dask.open_store(stars_warp_store)
    assert default_aperture() == (6.0, (12.0, 20.0))  # the package default (ps1dask.yaml)
    from ps1dask.render.lightcurve import aperture_radii

    assert aperture_radii(64, 64) == default_aperture()
    default_lc = render.aperture_lightcurve(ds, 3)
    explicit = render.aperture_lightcurve(ds, 3, radius=5.0, annulus=(9.0, 15.0))
    assert not np.allclose(default_lc.flux, explicit.flux)  # the radius matters here
    drawn = []
    real_figure = ps1dask.plots.lightcurve_figure
    monkeypatch.setattr(
        ps1dask.plots,
        "lightcurve_figure",
        lambda df, **kw: drawn.append(df.copy()) or real_figure(df, **kw),
    )
    with dask.config.set({"ps1dask.photometry.radius": 5.0, "ps1dask.photometry.annulus": [9, 15]}):
        # the gallery's and the viewer's light curves
        np.testing.assert_array_equal(render.aperture_lightcurve(ds, 3).flux, explicit.flux)
        write_gallery(stars_warp_store, tmp_path / "g.html", page_size=6)
        bright = [d for d in drawn if len(d) and (d["id"] == "bright").all()]
        assert bright and np.array_equal(bright[0].flux.to_numpy(), explicit.flux.to_numpy())
        from ps1dask.viewer import Viewer

        with Viewer(stars_warp_store) as viewer:
            rows = requests.get(viewer.url + "/api/lightcurve/3", timeout=60).json()["rows"]
        np.testing.assert_allclose([r["flux"] for r in rows], explicit.flux, rtol=1e-12)
        # the light-curve table (API; the CLI passes None through)
        configured = lightcurves_frame(stars_warp_store, aperture_correction=False)
    pinned = lightcurves_frame(
        stars_warp_store, radius=5.0, annulus=(9.0, 15.0), aperture_correction=False
    )
    np.testing.assert_array_equal(configured.flux.to_numpy(), pinned.flux.to_numpy())
    assert not np.allclose(
        lightcurves_frame(stars_warp_store, aperture_correction=False).flux.dropna(),
        pinned.flux.dropna(),
    )


@needs_chromium
def test_viewer_and_gallery_of_a_ps1dask_warps_store_in_chromium(
    real_warp_store, browser, tmp_path
):
    """What a person sees of a real warp store: the viewer's picture and light curve and
    every picture of the gallery decode, with no console error."""
    from ps1dask.viewer import Viewer

    loaded = (
        "(() => { const v = document.getElementById('view'); return v.complete && v.naturalWidth > 0"
        " && v.getAttribute('data-loaded') === v.getAttribute('src'); })()"
    )
    with Viewer(real_warp_store) as viewer:
        browser.goto(viewer.url + "/")
        browser.wait_for(loaded, what="the first picture")
        assert browser.eval("document.getElementById('pid').textContent") == "red"
        browser.wait_for(
            "document.getElementById('lcimg').complete && document.getElementById('lcimg').naturalWidth > 0",
            what="the light curve",
        )
        assert _not_blank(browser.screenshot(tmp_path / "real-viewer.png")) > 20
    page = write_gallery(real_warp_store, tmp_path / "real.html")[0]
    browser.goto(page.as_uri())
    browser.wait_for(ALL_IMAGES_DECODED, what="every gallery picture")
    assert browser.eval("document.images.length") == 3 * 3 + 3
    assert browser.errors == []
