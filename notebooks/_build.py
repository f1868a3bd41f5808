"""Write the notebooks from their cell sources (run: python notebooks/_build.py).

Kept as code so that reviews read plain diffs; the .ipynb files are committed without
outputs and executed top to bottom by tests/test_notebooks.py.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

QUICKSTART = [
    new_markdown_cell(
        "# ps1dask quickstart: positions → Zarr store → xarray → images\n\n"
        "This notebook runs against the embedded PS1 emulator (no internet needed). To use the "
        "real STScI service, drop `service=emu.url` (the default is `https://ps1images.stsci.edu`)."
    ),
    new_code_cell(
        "import tempfile, pathlib\n"
        "import numpy as np, pandas as pd\n"
        "import ps1dask\n"
        "from ps1dask.emulator import Emulator\n\n"
        "work = pathlib.Path(tempfile.mkdtemp(prefix='ps1dask-quickstart-'))\n"
        "emu = Emulator(seed=0, latency=0.02, cache_dir=work / 'emulator').start()\n"
        "emu.url"
    ),
    new_markdown_cell(
        "## Where do my positions fall?\n`ps1dask.locate` is pure computation: no request is sent."
    ),
    new_code_cell(
        "stars = pd.DataFrame(emu.sky.sources(150.40, 2.35, 600))\n"
        "stars = stars[(stars.mag_r > 16) & (stars.mag_r < 19)].head(12)\n"
        "targets = pd.DataFrame({'name': [f'star{i}' for i in range(len(stars))], 'ra': stars.ra.values, 'dec': stars.dec.values})\n"
        "targets.loc[len(targets)] = ['far-south', 10.0, -60.0]   # outside the PS1 footprint: gets a status\n"
        "ps1dask.locate(targets.ra, targets.dec).head()"
    ),
    new_markdown_cell(
        "## Fetch stack cutouts into one Zarr store\nA local Dask cluster starts by itself (its "
        "dashboard link is printed) and a progress bar follows the job; the summary counts "
        "statuses and requests."
    ),
    new_code_cell(
        "summary = ps1dask.cutouts(targets, work / 'cutouts.zarr', filters='gri', size=64,\n"
        "                          types=('stack', 'stack.wt', 'stack.mask'), service=emu.url, n_workers=2)\n"
        "print(summary)\n"
        "print('max requests in flight seen by the service:', emu.metrics()['max_in_flight'])"
    ),
    new_markdown_cell(
        "## Open it with xarray\nPositions come back in input order; `ds.ps1.wcs(i)` is the WCS of cutout `i`."
    ),
    new_code_cell(
        "ds = ps1dask.open_store(work / 'cutouts.zarr')\n"
        "print(ds)\n"
        "print(ds.ps1.status_names().sel(filter='r').values)\n"
        "ds.ps1.wcs(0)"
    ),
    new_markdown_cell(
        "## Measure the stars\nRead what the loop needs once (`.load()`), then index numpy "
        "arrays: `ds.stack_flux.values[i]` inside a loop would read the whole array from the "
        "store at every turn."
    ),
    new_code_cell(
        "from ps1dask.photometry import measure_aperture\n"
        "from ps1dask.conventions import flux_to_abmag\n"
        "r = ds[['id', 'stack_flux', 'stack_variance', 'stack_zeropoint']].sel(filter='r').load()  # one read\n"
        "flux, variance, zp, ids = r.stack_flux.values, r.stack_variance.values, r.stack_zeropoint.values, r.id.values\n"
        "n = len(stars)\n"
        "measured = [measure_aperture(flux[i], variance[i]).flux for i in range(n)]\n"
        "phot = pd.DataFrame({'id': [str(v) for v in ids[:n]], 'mag_r': flux_to_abmag(np.array(measured), zp[:n]),\n"
        "                     'true_mag_r': stars.mag_r.to_numpy()})\n"
        "phot['difference'] = phot.mag_r - phot.true_mag_r\n"
        "assert phot.difference.abs().median() < 0.05\n"
        "phot"
    ),
    new_markdown_cell(
        "## Look at a cutout\n`ps1dask.plots` draws cutouts on sky axes (RA/Dec from the "
        "cutout's WCS), alone or as colour composites, with catalogue overlays."
    ),
    new_code_cell(
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "from ps1dask.plots import cutout_figure\n"
        "cutout_figure(ds, 0, 'r', figsize=(4, 4))"
    ),
    new_code_cell("cutout_figure(ds, 0, colour=True, catalogue=targets, figsize=(4, 4))"),
    new_code_cell("emu.stop()"),
]

LIGHTCURVES = [
    new_markdown_cell(
        "# Light curves from PS1 warps\n\nWarps → forced photometry → a variability search, against "
        "the emulator (whose sky has periodic variables and transients with known truth)."
    ),
    new_code_cell(
        "import tempfile, pathlib\n"
        "import numpy as np, pandas as pd\n"
        "import ps1dask\n"
        "from ps1dask.emulator import Emulator\n"
        "work = pathlib.Path(tempfile.mkdtemp(prefix='ps1dask-lc-'))\n"
        "emu = Emulator(seed=0, latency=0.0, cache_dir=work / 'emulator').start()"
    ),
    new_code_cell(
        "truth = pd.DataFrame(emu.sky.sources(150.40, 2.35, 900))\n"
        "kinds = truth.variability.map(lambda v: v['kind'])\n"
        "chosen = pd.concat([truth[(kinds == 'periodic') & (truth.mag_r < 19)].head(3),\n"
        "                    truth[(kinds == 'constant') & (truth.mag_r.between(16, 18.5))].head(5)])\n"
        "targets = pd.DataFrame({'name': [f'{k}-{i}' for i, k in enumerate(chosen.variability.map(lambda v: v['kind']))],\n"
        "                        'ra': chosen.ra.values, 'dec': chosen.dec.values})\n"
        "targets"
    ),
    new_code_cell(
        "# a few positions per skycell: one server cutout per warp is cheapest (auto would agree on the real service)\n"
        "summary = ps1dask.warps(targets, work / 'lc.zarr', filters='r', size=48, types=('warp', 'warp.wt', 'warp.mask'),\n"
        "                        strategy='cutout', service=emu.url, n_workers=2)\n"
        "print(summary)\n"
        "ds = ps1dask.open_store(work / 'lc.zarr')\n"
        "print(ds.n_epochs.values.ravel())"
    ),
    new_markdown_cell(
        "## Forced photometry\nOne row per position, filter and epoch. Some rows are not "
        "usable (a blank warp, masked pixels in the aperture, ...): their quality flags say "
        "why, and `good_rows` keeps the rows none of the documented bad flags "
        "(`ps1dask.lightcurves.BAD_FLAGS`) marks."
    ),
    new_code_cell(
        "from ps1dask.analysis import good_rows\n"
        "lc = ps1dask.lightcurves(work / 'lc.zarr').compute()\n"
        "good = lc[good_rows(lc)]\n"
        "print(f'{len(good)} usable rows of {len(lc)}')\n"
        "good.head()"
    ),
    new_code_cell("stats = ps1dask.lightcurve_stats(good)\nstats"),
    new_code_cell(
        "# err_model says how each flux_err was made ('variance' here: the store has warp.wt)\n"
        "print(good.err_model.value_counts())\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "from ps1dask.plots import lightcurve_figure\n"
        "lightcurve_figure(good, max_panels=4)"
    ),
    new_code_cell("emu.stop()"),
]

CLUSTER = [
    new_markdown_cell(
        "# Running on a cluster\n\nps1dask runs on any Dask cluster: pass a `distributed.Client` (or "
        "`--scheduler tcp://host:8786` on the command line). The 10-request limit is shared by every "
        "worker through a named `distributed.Semaphore`. Here the 'cluster' is a LocalCluster; on "
        "Kubernetes or SLURM use the files in `deploy/`."
    ),
    new_code_cell(
        "import logging, tempfile, pathlib\n"
        "import numpy as np, pandas as pd\n"
        "import distributed, ps1dask\n"
        "from ps1dask.emulator import Emulator\n"
        "work = pathlib.Path(tempfile.mkdtemp(prefix='ps1dask-cluster-'))\n"
        "emu = Emulator(seed=1, latency=0.05, cache_dir=work / 'emulator').start()\n"
        "cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=2, dashboard_address=':0', silence_logs=logging.ERROR)\n"
        "client = distributed.Client(cluster)\n"
        "print('scheduler:', cluster.scheduler_address, 'dashboard:', client.dashboard_link)"
    ),
    new_code_cell(
        "rng = np.random.default_rng(1)\n"
        "targets = pd.DataFrame({'ra': rng.uniform(0, 360, 60), 'dec': rng.uniform(-25, 70, 60)})\n"
        "summary = ps1dask.cutouts(targets, work / 'sky.zarr', filters='gr', size=48, service=emu.url, client=client)\n"
        "print(summary)\n"
        "m = emu.metrics(); print('max in flight', m['max_in_flight'], 'of 10; refused', m['refused_over_limit'])\n"
        "assert m['max_in_flight'] <= 10"
    ),
    new_markdown_cell(
        "## Go on working while a job runs\n`compute=False` returns a handle as soon as the "
        "work is submitted: the notebook stays free, `handle.progress()` counts, "
        "`handle.cancel()` stops (a rerun resumes), `handle.result()` waits for the summary."
    ),
    new_code_cell(
        "more = pd.DataFrame({'ra': rng.uniform(0, 360, 30), 'dec': rng.uniform(-25, 70, 30)})\n"
        "handle = ps1dask.cutouts(more, work / 'more.zarr', filters='g', size=48, service=emu.url, client=client, compute=False)\n"
        "print(handle.progress())   # returns at once"
    ),
    new_code_cell("summary = handle.result()\nprint(handle.progress())\nprint(summary)"),
    new_code_cell("client.close(); cluster.close(); emu.stop()"),
]


def main() -> None:
    for name, cells in (
        ("quickstart", QUICKSTART),
        ("lightcurves", LIGHTCURVES),
        ("cluster", CLUSTER),
    ):
        nb = new_notebook(
            cells=cells,
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        )
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
