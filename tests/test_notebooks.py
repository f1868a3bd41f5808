"""The notebooks run top to bottom against the emulator (executed with nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_cleanly(path, tmp_path):
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


def test_all_three_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "lightcurves", "cluster"}


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
