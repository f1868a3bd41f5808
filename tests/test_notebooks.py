"""The notebooks run top to bottom against the emulator (executed with nbclient), and what
they produce is right: the stores they write are read back here and checked against the
emulator's truth (statuses, epochs, photometry), not only that every cell ran."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbclient
import nbformat
import numpy as np
import pytest

import ps1dask
from ps1dask.conventions import flux_to_abmag
from ps1dask.emulator.sky import SyntheticSky
from ps1dask.photometry import measure_aperture
from ps1dask.storage import STATUS, mjd_days
from ps1dask.tessellation import locate

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _one(work: Path, pattern: str) -> Path:
    found = sorted(work.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def _truth_source(sky: SyntheticSky, ra: float, dec: float) -> dict:
    """The emulator source the notebook chose at (ra, dec) (targets are truth positions)."""
    near = sky.sources(ra, dec, 1.0)
    assert near, (ra, dec)
    return min(near, key=lambda s: (s["ra"] - ra) ** 2 + (s["dec"] - dec) ** 2)


def check_quickstart(work: Path) -> None:
    ds = ps1dask.open_store(_one(work, "ps1dask-quickstart-*/cutouts.zarr"))
    status = ds.stack_status.values
    ids = [str(i) for i in ds["id"].values]
    assert ids[-1] == "far-south" and (status[-1] == STATUS["outside_footprint"]).all()
    assert (status[:-1] == STATUS["ok"]).all() and len(ids) > 1
    # r photometry of the stored linear stack cutouts against the emulator's magnitudes
    sky = SyntheticSky(seed=0)
    r = list(ds["filter"].values).index("r")
    diffs = []
    for i in range(len(ids) - 1):
        m = measure_aperture(
            ds.stack_flux.values[i, r], ds.stack_variance.values[i, r], radius=10, annulus=(16, 24)
        )
        mag = float(flux_to_abmag(m.flux, float(ds.stack_zeropoint.values[i, r])))
        truth = _truth_source(sky, float(ds.ra.values[i]), float(ds.dec.values[i]))
        diffs.append(mag - truth["mag_r"])
    assert np.median(np.abs(diffs)) < 0.05, diffs


def check_lightcurves(work: Path) -> None:
    store = _one(work, "ps1dask-lc-*/lc.zarr")
    ds = ps1dask.open_store(store)
    sky = SyntheticSky(seed=0)
    for i in range(ds.sizes["position"]):
        # every true epoch of the position's skycell, at its UTC mid-exposure time
        epochs = sky.warp_epochs(str(ds.skycell.values[i]), "r")
        assert int(ds.n_epochs.values[i, 0]) == len(epochs) > 0
        np.testing.assert_allclose(
            mjd_days(ds.warp_mjd.values[i, 0, : len(epochs)]),
            [e.mjd_mid_utc for e in epochs],
            rtol=0,
            atol=1e-8,
        )
    # the light curves the notebook computed, against the true flux at each epoch
    lc = ps1dask.lightcurves(store).compute()
    good = lc[(lc.status == STATUS["ok"]) & lc.flux.notna()].reset_index(drop=True)
    assert len(good) > 0.8 * (lc.status == STATUS["ok"]).sum()
    true_flux = np.empty(len(good))
    for rows in good.groupby("id").indices.values():
        first = good.iloc[rows[0]]
        source = _truth_source(sky, float(first.ra), float(first.dec))
        mags = sky.true_mag(source, "r", good.mjd.to_numpy()[rows])
        true_flux[rows] = 10 ** (-0.4 * (np.asarray(mags) - 23.9))  # AB mag to microjansky
    ratio = good.flux.to_numpy() / true_flux
    pull = (good.flux.to_numpy() - true_flux) / good.flux_err.to_numpy()
    assert abs(np.median(ratio) - 1.0) < 0.02, np.median(ratio)
    assert 0.7 < float(np.mean(pull**2)) < 1.5, np.mean(pull**2)


def check_cluster(work: Path) -> None:
    ds = ps1dask.open_store(_one(work, "ps1dask-cluster-*/sky.zarr"))
    sky = SyntheticSky(seed=1)
    cells = locate(ds.ra.values, ds.dec.values).skycell.to_numpy()
    expected = np.array(
        [
            STATUS["outside_footprint"]
            if not cell
            else (STATUS["ok"] if sky.has_data(cell) else STATUS["no_data"])
            for cell in cells
        ]
    )
    status = ds.stack_status.values
    assert (status == expected[:, None]).all()
    assert (expected == STATUS["ok"]).sum() > 0
    ok = status == STATUS["ok"]
    assert np.isfinite(ds.stack_flux.values[ok]).mean() > 0.99


CHECKS: dict[str, Callable[[Path], None]] = {
    "quickstart": check_quickstart,
    "lightcurves": check_lightcurves,
    "cluster": check_cluster,
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_cleanly(path, tmp_path, monkeypatch):
    # the notebooks write under tempfile.mkdtemp(): the kernel's TMPDIR puts that here
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    assert all(cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code")
    CHECKS[path.stem](work)


def test_all_three_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == set(CHECKS)


def _stderr_and_widgets(cell) -> str:
    """What a cell showed of progress: its stderr text and the text of its widgets."""
    text = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            text.append(out.get("text", ""))
        elif out.get("output_type") == "display_data":
            text.append(out.get("data", {}).get("text/plain", ""))
    return "".join(text)


def test_job_progress_shows_in_a_notebook(job_emulator, dask_client, tmp_path):
    """ipykernel's stderr is not a TTY, yet a notebook is watched: the bar shows there
    (a widget with ipywidgets, else text on stderr), and ps1dask.progress=False hides it."""
    from _jobs import positions_in_one_skycell
    from nbformat.v4 import new_code_cell, new_notebook

    csv = tmp_path / "positions.csv"
    positions_in_one_skycell(5, seed=9).head(5).to_csv(csv, index=False)
    job = (
        f"ps1dask.cutouts(pd.read_csv({str(csv)!r}), {{store!r}}, filters='r', size=24, "
        f"strategy='cutout', service={job_emulator.url!r}, "
        f"client={dask_client.scheduler.address!r}, max_unit_positions=1)"
    )
    nb = new_notebook(
        cells=[
            new_code_cell("import sys, dask, pandas as pd, ps1dask\nsys.stderr.isatty()"),
            new_code_cell("summary = " + job.format(store=str(tmp_path / "a.zarr"))),
            new_code_cell(
                "with dask.config.set({'ps1dask.progress': False}):\n"
                "    summary = " + job.format(store=str(tmp_path / "b.zarr"))
            ),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    tty, shown, hidden = nb.cells
    assert tty.outputs[0]["data"]["text/plain"] == "False"
    progress = _stderr_and_widgets(shown)
    assert "ps1dask: 100%" in progress and "5/5" in progress, progress
    assert "Dask dashboard: http" in progress  # the given scheduler's link, for a notebook
    assert "ps1dask:" not in _stderr_and_widgets(hidden)
