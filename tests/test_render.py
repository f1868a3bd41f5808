"""Pictures from pixels: stretches, colour composites, plots and bulk export.

Pure tests on known arrays first (asinh, linear, invert, NaN, channel order, a synthetic
red star), then a real store made with the emulator (filters g, i, y in one skycell): the
red star renders red, our pictures equal the emulator's fitscut JPEG/PNG pixels, plots and
bulk export work on it.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import requests
from PIL import Image
from render_helpers import (
    BLANK_EPOCH,
    N_EPOCHS,
    PERIOD_DAYS,
    SIZE,
    STARS,
    injected_amplitude,
    stack_store,
    warp_store,
)

import ps1dask
from ps1dask import render
from ps1dask.exceptions import InvalidParameterError
from ps1dask.imaging import fitscut_grey, fitscut_limits
from ps1dask.imaging import fitscut_rgb as imaging_fitscut_rgb
from ps1dask.render import Display


def _fitscut_asinh_bytes(t):
    """fitscut's grey asinh on values already scaled to the limits (0..1 = vmin..vmax)."""
    t = np.asarray(t, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(t != 0, np.arcsinh(3 * t) / 3, 0.0) / 0.7
    return np.rint(np.clip(v, 0, 1) * 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# pure stretches
# --------------------------------------------------------------------------------------


def test_asinh_and_linear_stretch_on_known_values():
    data = np.array([[0.0, 0.25, 0.5, 1.0, 2.0, -1.0]])
    asinh = render.grey(data, vmin=0.0, vmax=1.0)
    np.testing.assert_array_equal(asinh[0], _fitscut_asinh_bytes(data[0]))
    assert list(asinh[0]) == [0, 84, 145, 221, 255, 0]  # asinh lifts the faint end
    linear = render.grey(data, stretch="linear", vmin=0.0, vmax=1.0)
    assert list(linear[0]) == [0, 64, 128, 255, 255, 0]  # clipped at both ends
    assert list(
        render.grey(np.array([[10.0, 15.0, 20.0]]), stretch="linear", vmin=10, vmax=20)[0]
    ) == [0, 128, 255]
    # the service's grey picture, pixel for pixel
    rng = np.random.default_rng(0)
    field = rng.normal(0, 1, (20, 30))
    np.testing.assert_array_equal(render.grey(field), fitscut_grey(field))
    np.testing.assert_array_equal(
        render.grey(field, stretch="linear", invert=True),
        fitscut_grey(field, asinh=False, inverted=True),
    )


def test_percentile_autoscale_invert_contrast_and_nan():
    rng = np.random.default_rng(1)
    data = rng.normal(100.0, 5.0, (40, 40))
    data[10:14, 10:14] += 400.0  # a star
    data[5, 5] = 1e6  # one hot pixel must not set the scale
    lo, hi = Display().limits(data)
    assert (lo, hi) == pytest.approx(fitscut_limits(data))
    assert lo == pytest.approx(np.percentile(data, 0.5)) and hi < 1000
    # contrast 2 halves the display range above vmin
    assert Display(contrast=2.0).limits(data) == pytest.approx((lo, lo + (hi - lo) / 2))
    brighter = render.grey(data, contrast=2.0)
    assert brighter.mean() > render.grey(data).mean() + 10
    # invert: 255 - value; NaN pixels black, white when inverted
    data[0, :] = np.nan
    plain = render.grey(data, north_up=False)
    inverted = render.grey(data, north_up=False, invert=True)
    np.testing.assert_array_equal(inverted.astype(int), 255 - plain.astype(int))
    assert (plain[0] == 0).all() and (inverted[0] == 255).all()
    # north up: FITS row 0 (south) is the last row of the picture
    np.testing.assert_array_equal(render.grey(data), plain[::-1])
    # all-NaN (outside the footprint): black, no warning, no crash
    assert (render.grey(np.full((8, 8), np.nan)) == 0).all()


def test_display_settings_are_validated_and_parsed_from_query_strings():
    d = Display.from_params(
        {"stretch": "linear", "min": "1", "max": "9", "contrast": "2", "invert": "1"}
    )
    assert d == Display(stretch="linear", vmin=1.0, vmax=9.0, contrast=2.0, invert=True)
    assert Display.from_params({"asinh": "false"}).stretch == "linear"
    for bad in (
        {"stretch": "log"},
        {"autoscale": "20"},
        {"contrast": "0"},
        {"invert": "maybe"},
        {"min": "x"},
    ):
        with pytest.raises(InvalidParameterError):
            Display.from_params(bad)
    with pytest.raises(InvalidParameterError, match="after|below|max"):
        render.grey(np.zeros((4, 4)), vmin=5, vmax=1)
    with pytest.raises(InvalidParameterError, match="2-d"):
        render.grey(np.zeros(4))


def test_fitscut_composite_is_the_services_and_keeps_channel_order():
    rng = np.random.default_rng(2)
    r, g, b = (rng.normal(0, 1, (30, 20)) for _ in range(3))
    r[3, 4] = np.nan
    np.testing.assert_array_equal(render.fitscut_rgb(r, g, b), imaging_fitscut_rgb(r, g, b))
    # channel order: red parameter -> channel 0
    ramp = np.tile(np.linspace(0, 1, 20), (30, 1))
    img = render.fitscut_rgb(ramp, np.zeros_like(ramp), -ramp, stretch="linear", vmin=0, vmax=1)
    assert (
        (img[..., 0][:, -1] == 255).all() and (img[..., 1] == 0).all() and (img[..., 2] == 0).all()
    )
    # two bands: the missing one is the mean of the others
    two = render.fitscut_rgb(ramp, None, np.zeros_like(ramp), stretch="linear", vmin=0, vmax=1)
    np.testing.assert_allclose(
        two[..., 1].astype(float), (two[..., 0].astype(float) + two[..., 2]) / 2, atol=1
    )
    with pytest.raises(InvalidParameterError):
        render.fitscut_rgb(ramp, None, None)


def _star_field(fluxes, n=48, sigma=2.0, noise=1.0, seed=3):
    """Three bands (red, green, blue) with one Gaussian star of the given total fluxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    psf = np.exp(-((xx - n // 2) ** 2 + (yy - n // 2) ** 2) / (2 * sigma**2))
    psf /= psf.sum()
    return [100.0 + f * psf + rng.normal(0, noise, (n, n)) for f in fluxes]


def test_a_red_star_renders_red_and_a_blue_star_blue():
    red, green, blue = _star_field([20000.0, 6000.0, 1500.0])  # bright in y, faint in g
    img = render.lupton_rgb(red, green, blue)
    core = img[22:27, 22:27].reshape(-1, 3).astype(int)
    assert (core[:, 0] > core[:, 1]).all() and (core[:, 1] > core[:, 2]).all()
    assert core[:, 0].min() >= 200  # and bright
    # the colour holds in the saturated core too (flux ratios kept, not clipped to white)
    bright = render.lupton_rgb(*_star_field([2e6, 6e5, 1.5e5]))
    centre = bright[24, 24].astype(int)
    assert centre[0] == 255 and centre[0] > centre[1] > centre[2] and centre[2] < 100, centre
    # the sky is dark in every band
    assert np.median(img[:8, :8]) < 30
    blue_star = render.lupton_rgb(*_star_field([1500.0, 6000.0, 20000.0]))
    core = blue_star[22:27, 22:27].reshape(-1, 3).astype(int)
    assert (core[:, 2] > core[:, 1]).all() and (core[:, 1] > core[:, 0]).all()
    # zero points put the bands on one flux scale: equal AB fluxes look white
    zps = [30.0, 29.0, 28.0]
    counts = [1e4 * 10 ** (0.4 * (zp - 28.0)) for zp in zps]
    grey_star = render.lupton_rgb(*_star_field(counts, noise=0.01), zeropoints=zps)
    c = grey_star[24, 24].astype(int)
    assert c.max() - c.min() <= 3, c
    # NaN in every band: black, white when inverted; NaN in one band: that channel is 0
    r, g, b = _star_field([2e4, 6e3, 1.5e3])
    r[0, :] = g[0, :] = b[0, :] = np.nan
    r[1, :] = np.nan
    pic = render.lupton_rgb(r, g, b, north_up=False)
    assert (pic[0] == 0).all() and (pic[1, :, 0] == 0).all()
    assert (render.lupton_rgb(r, g, b, north_up=False, invert=True)[0] == 255).all()
    lin = render.lupton_rgb(r, g, b, stretch="linear")
    assert lin[24, 24, 0] > lin[24, 24, 2]


def test_colour_filter_choice_follows_the_service():
    assert render.default_colour_filters("grizy") == ("y", "i", "g")
    assert render.default_colour_filters("gri") == ("i", "r", "g")
    assert render.default_colour_filters("giy") == ("y", "i", "g")
    assert render.default_colour_filters("yg") == ("y", None, "g")
    assert render.parse_colour_filters("zrg", "grz") == ("z", "r", "g")
    assert render.parse_colour_filters("y,g", "gy") == ("y", None, "g")
    with pytest.raises(InvalidParameterError, match="not in"):
        render.parse_colour_filters("zrg", "gri")
    with pytest.raises(InvalidParameterError):
        render.default_colour_filters("r")


# --------------------------------------------------------------------------------------
# a real store from the emulator
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stars_store(job_emulator, dask_client, tmp_path_factory):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    return stack_store(tmp_path_factory.mktemp("render-stores"), job_emulator, dask_client)


@pytest.fixture(scope="module")
def stars_warp_store(stars_store, job_emulator, dask_client):
    return warp_store(stars_store.parent, job_emulator, dask_client)


def _fitscut(emu, band_files, ra, dec, fmt="png", **extra):
    params = {**band_files, "ra": ra, "dec": dec, "size": SIZE, "format": fmt, **extra}
    reply = requests.get(f"{emu.url}/cgi-bin/fitscut.cgi", params=params, timeout=30)
    reply.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(reply.content)))


def test_red_star_in_a_store_is_red_and_pictures_match_fitscut(stars_store, job_emulator):
    from ps1dask.conventions import image_filename
    from ps1dask.tessellation import SkycellId

    ds = ps1dask.open_store(stars_store)
    assert ds.id.values[0] == "red"
    img = render.colour_image(ds, 0)  # y/i/g, Lupton-style
    c = SIZE // 2
    core = img[c - 2 : c + 2, c - 2 : c + 2].reshape(-1, 3).astype(int)
    assert (core[:, 0] > core[:, 1]).all() and (core[:, 1] > core[:, 2]).all(), core
    assert core[:, 0].mean() > 200 and core[:, 2].mean() < 100
    # the white star is not red (its bands are within a few tenths of a magnitude)
    white = render.colour_image(ds, 2)[c - 1 : c + 1, c - 1 : c + 1].reshape(-1, 3).astype(int)
    assert white.min() > 150

    files = {b: image_filename(SkycellId(1405, 53), b) for b in "giy"}
    _, ra, dec = STARS[0][:3]
    # the service's own colour JPEG/PNG of the same cutout: fitscut method, same pixels
    theirs = _fitscut(
        job_emulator, {"red": files["y"], "green": files["i"], "blue": files["g"]}, ra, dec
    )
    ours = render.colour_image(ds, 0, "yig", method="fitscut")
    np.testing.assert_array_equal(ours, theirs)
    for band, extra, settings in (
        ("g", {}, {}),
        ("i", {"asinh": "false", "invert": "true"}, {"stretch": "linear", "invert": True}),
        (
            "y",
            {"min": "-5", "max": "200", "autoscale": "99"},
            {"vmin": -5, "vmax": 200, "autoscale": 99},
        ),
    ):
        theirs = _fitscut(job_emulator, {"red": files[band]}, ra, dec, **extra)
        np.testing.assert_array_equal(render.cutout_image(ds, 0, band, **settings), theirs)
    # bytes and PIL images
    png = render.cutout_bytes(ds, 0, "g")
    assert png[:4] == b"\x89PNG" and Image.open(io.BytesIO(png)).size == (SIZE, SIZE)
    jpg = render.colour_bytes(ds, 0, fmt="jpg", size=128)
    pic = Image.open(io.BytesIO(jpg))
    assert pic.format == "JPEG" and pic.mode == "RGB" and pic.size == (128, 128)
    assert render.colour_pil(ds, 1).size == (SIZE, SIZE)
    # outside the footprint: all NaN, a black picture and a status
    info = render.position_table(ds, [5])[0]
    assert info.id == "south" and set(info.status.values()) == {"outside_footprint"}
    assert (render.cutout_image(ds, 5, "g") == 0).all()
    with pytest.raises(InvalidParameterError, match="not in the store"):
        render.cutout_image(ds, 0, "r")
    with pytest.raises(InvalidParameterError, match="no warps"):
        render.cutout_image(ds, 0, "g", epoch=0)
    # the choices shared by `images` and `gallery`
    from ps1dask.render.store import picture_filters, picture_format

    assert picture_format("JPEG") == "jpg" and picture_format("png") == "png"
    with pytest.raises(InvalidParameterError, match="use jpg or png"):
        picture_format("gif")
    available = render.store_filters(ds)
    assert picture_filters(ds, None, None, True, "lupton") == (available, None)
    chosen, rgb = picture_filters(ds, available[0], None, False, "fitscut")
    assert chosen == available[0] and rgb is not None and len(rgb) == 3
    with pytest.raises(InvalidParameterError, match="not in the store"):
        picture_filters(ds, "gq", None, False, "lupton")
    with pytest.raises(InvalidParameterError, match="colour method"):
        picture_filters(ds, None, None, False, "rainbow")


def test_plots_cutout_with_wcs_and_catalogue_lightcurve_periodogram(
    stars_store, job_emulator, tmp_path
):
    from matplotlib.patches import Circle

    from ps1dask import plots

    ds = ps1dask.open_store(stars_store)
    _, ra, dec = STARS[0][:3]
    catalogue = job_emulator.sky.sources(ra, dec, 10.0)  # within the 16" cutout
    assert catalogue
    fig = plots.cutout_figure(ds, 0, "i", catalogue=catalogue)
    ax = fig.axes[0]
    assert type(ax).__name__ == "WCSAxes"
    assert len([p for p in ax.patches if isinstance(p, Circle)]) == len(catalogue)
    # the catalogue's star sits on the cutout centre in pixel coordinates of the plot
    centre = next(p.center for p in ax.patches if isinstance(p, Circle))
    assert abs(centre[0] - SIZE // 2) < 2 and abs(centre[1] - SIZE // 2) < 2
    assert "red" in ax.get_title()
    fig.savefig(tmp_path / "cutout.png")
    colour = plots.cutout_figure(ds, 0, colour=True)
    assert colour.axes[0].images[0].get_array().shape == (SIZE, SIZE, 3)
    # an 8-bit RGB picture (such as that composite) is drawn as it is, not refused
    picture = np.asarray(colour.axes[0].images[0].get_array())
    assert picture.dtype == np.uint8
    again = plots.cutout_figure(picture)
    assert np.array_equal(np.asarray(again.axes[0].images[0].get_array()), picture)

    rng = np.random.default_rng(4)
    rows = []
    for band, amp in zip("giy", (1.0, 0.7, 0.5)):
        mjd = np.sort(55000 + rng.uniform(0, 300, 40))
        rows.append(
            pd.DataFrame(
                {
                    "filter": band,
                    "mjd": mjd,
                    "id": "v1",
                    "flux_err": 2.0,
                    "flux": 100 + 30 * amp * np.sin(2 * np.pi * mjd / 2.5) + rng.normal(0, 2, 40),
                }
            )
        )
    lc = pd.concat(rows, ignore_index=True)
    fig = plots.lightcurve_figure(lc)
    ax = fig.axes[0]
    assert len(ax.containers) == 3  # one errorbar set per filter
    assert ax.get_xlabel() == "MJD (UTC)" and "µJy" in ax.get_ylabel()
    # several ids: one panel each; an unknown id is an error
    two = pd.concat([lc, lc.assign(id="v2")], ignore_index=True)
    assert len(plots.lightcurve_figure(two).axes) == 2
    with pytest.raises(InvalidParameterError):
        plots.lightcurve_figure(two, id="nope")
    with pytest.raises(InvalidParameterError, match="flux_err"):
        plots.lightcurve_figure(lc.drop(columns="flux_err"))
    fig = plots.periodogram_figure(lc, minimum_period=1.0, maximum_period=20.0)
    assert fig.periodogram.best_period == pytest.approx(2.5, rel=0.01)
    assert set(fig.periodogram.power) == {"g", "i", "y"}
    fig.savefig(tmp_path / "periodogram.png")
    assert plots.periodogram(
        lc[lc["filter"] == "g"], minimum_period=1.0
    ).best_period == pytest.approx(2.5, rel=0.01)


def test_aperture_lightcurve_from_warp_pixels(stars_store, stars_warp_store):
    assert render.aperture_lightcurve(ps1dask.open_store(stars_store), 0).empty  # no warps
    ds = ps1dask.open_store(stars_warp_store)
    lc = render.aperture_lightcurve(ds, 3)  # the bright star
    assert lc.attrs["flux_unit"] == "uJy"
    counts = lc.groupby("filter").size().to_dict()
    assert counts == {b: n - 1 for b, n in zip("giy", N_EPOCHS)}  # the blank epoch left out
    assert BLANK_EPOCH not in set(lc["epoch"])
    from ps1dask.conventions.photometry import counts_to_microjansky

    for f, (band, part) in enumerate(lc.groupby("filter")):
        phase = np.sin(2 * np.pi * (part["mjd"] - 56000.0) / PERIOD_DAYS)
        assert np.corrcoef(phase, part["flux"])[0, 1] > 0.95, band
        # the injected amplitude comes back (in microjansky, the PSF inside the aperture)
        slope = np.polyfit(phase, part["flux"], 1)[0]
        stack = ds.stack_flux.values[3, f]
        expected = counts_to_microjansky(
            injected_amplitude(stack), float(ds.stack_zeropoint.values[3, f])
        )
        assert slope == pytest.approx(expected, rel=0.1), band
    # microjansky: the mean y flux is the star's AB magnitude
    y_mean = lc[lc["filter"] == "y"]["flux"].mean()
    assert -2.5 * np.log10(y_mean) + 23.9 == pytest.approx(STARS[3][5], abs=0.2)
    assert render.aperture_lightcurve(ds, 5).empty  # outside the footprint: no warps


def test_bulk_images_threads_and_cluster(stars_warp_store, dask_client, tmp_path):
    from ps1dask.cli import main
    from ps1dask.render.bulk import write_images

    index = write_images(stars_warp_store, tmp_path / "threads", warps=True, num_workers=2)
    ok = index[index["file"] != ""]
    stack_rows = index[index["epoch"] == -1]
    assert len(stack_rows) == 6 * 4  # 6 positions x (3 filters + colour)
    assert set(stack_rows[stack_rows["id"] == "south"]["status"]) == {"outside_footprint"}
    assert (stack_rows[stack_rows["id"] == "south"]["file"] == "").all()
    n_warps = sum(n - 1 for n in N_EPOCHS) * 5
    assert len(ok) == 5 * 4 + n_warps
    for name in ("red_colour.jpg", "red_g.jpg", "bright_y_e000.jpg"):
        pic = Image.open(tmp_path / "threads" / name)
        assert pic.size == (SIZE, SIZE) and pic.format == "JPEG"
    red = np.asarray(Image.open(tmp_path / "threads" / "red_colour.jpg")).astype(int)
    c = SIZE // 2
    assert red[c, c, 0] > red[c, c, 1] > red[c, c, 2]
    assert (tmp_path / "threads" / "index.csv").exists()
    # on the cluster, PNG, the same pictures
    cluster = write_images(
        stars_warp_store,
        tmp_path / "cluster",
        fmt="png",
        client=dask_client,
        no_colour=True,
        filters="g",
    )
    assert list(cluster["file"][cluster["file"] != ""]) == [f"{s[0]}_g.png" for s in STARS]
    a = np.asarray(Image.open(tmp_path / "cluster" / "red_g.png"))
    np.testing.assert_array_equal(
        a, render.cutout_image(ps1dask.open_store(stars_warp_store), 0, "g")
    )
    # the CLI
    assert (
        main(
            [
                "images",
                str(stars_warp_store),
                "-o",
                str(tmp_path / "cli"),
                "--format",
                "png",
                "--stretch",
                "linear",
                "--invert",
                "--size",
                "32",
            ]
        )
        == 0
    )
    pic = Image.open(tmp_path / "cli" / "white_i.png")
    assert pic.size == (32, 32)
    assert (
        main(["images", str(stars_warp_store), "-o", str(tmp_path / "bad"), "--filters", "r"]) == 1
    )


def test_safe_file_names():
    from ps1dask.render.bulk import safe_names

    assert safe_names(["a b/c", "x", "x", "..", "ok"]) == ["a_b_c", "x-1", "x-2", "position", "ok"]


def test_lightcurve_figure_drops_rows_with_bad_flags():
    from ps1dask import plots
    from ps1dask.lightcurves import BAD_FLAGS, LCFlag

    mjd = 55000.0 + np.arange(12, dtype=float)
    lc = pd.DataFrame(
        {
            "filter": "r",
            "mjd": mjd,
            "id": "s1",
            "flux": 100.0 + np.arange(12.0),
            "flux_err": 2.0,
            "lc_flags": 0,
        }
    )
    lc.loc[3, ["flux", "lc_flags"]] = (9e5, int(LCFlag.SATURATED))  # a bad flag: dropped
    lc.loc[5, "lc_flags"] = int(LCFlag.UNRELIABLE | LCFlag.MASKED)  # bad flag: dropped
    lc.loc[7, "lc_flags"] = int(LCFlag.MASKED | LCFlag.PSF_ESTIMATED)  # informational: kept
    assert int(LCFlag.MASKED | LCFlag.PSF_ESTIMATED) & int(BAD_FLAGS) == 0

    def drawn(fig):
        (container,) = fig.axes[0].containers
        return container.lines[0].get_xdata(), container.lines[0].get_ydata()

    x, y = drawn(plots.lightcurve_figure(lc))
    np.testing.assert_array_equal(x, np.delete(mjd, [3, 5]))
    assert y.max() < 1000.0
    assert fig_legend_count(plots.lightcurve_figure(lc)) == "r (10)"
    # every row on request, and tables of earlier versions (column "flags") likewise
    assert len(drawn(plots.lightcurve_figure(lc, exclude_flags=0))[0]) == 12
    legacy = lc.rename(columns={"lc_flags": "flags"})
    np.testing.assert_array_equal(drawn(plots.lightcurve_figure(legacy))[0], x)
    # on caller's axes too
    fig = plots.lightcurve_figure(lc.iloc[:0])
    x_ax, _ = drawn(plots.lightcurve_figure(lc, ax=fig.axes[0]))
    np.testing.assert_array_equal(x_ax, x)


def fig_legend_count(fig) -> str:
    return fig.axes[0].get_legend().get_texts()[0].get_text()
