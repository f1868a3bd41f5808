"""``ps1dask demo``: the whole main job against the embedded emulator, on a local cluster."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

from ps1dask.cli.jobargs import add_strategy_argument
from ps1dask.exceptions import InvalidParameterError

DEMO_FIELD = (150.40, 2.35)  # a field in the 3pi footprint (COSMOS-like); any would do


def _demo_positions(sky: object, n: int, seed: int) -> pd.DataFrame:
    import pandas as pd

    """Truth stars of the emulator's sky (so photometry can be checked), plus odd cases."""
    ra0, dec0 = DEMO_FIELD
    stars = pd.DataFrame(sky.sources(ra0, dec0, 1500.0))  # type: ignore[attr-defined]
    stars = stars[(stars.mag_r > 15.5) & (stars.mag_r < 19.0)]
    stars = stars.sample(n=min(n, len(stars)), random_state=seed).sort_values("mag_r")
    table = pd.DataFrame(
        {"name": [f"star{i:03d}" for i in range(len(stars))], "ra": stars.ra, "dec": stars.dec}
    )
    extra = pd.DataFrame(
        {
            "name": ["south-of-footprint", "crab-nebula-field"],
            "ra": ["05:34:31.9", "05 34 31.97"],
            "dec": ["-50:00:00", "+22 00 52.1"],
        }
    )
    return pd.concat([table.astype({"ra": str, "dec": str}), extra], ignore_index=True)


#: File the demo leaves in its output directory: a directory holding it is the demo's to replace.
DEMO_MARKER = ".ps1dask-demo"


def _prepare_output(out: Path, *, resume: bool, force: bool) -> None:
    """Make ``out`` ready; replace it only if a demo made it, or the user says so.

    An earlier demo's directory (it holds :data:`DEMO_MARKER`) is replaced (kept with
    ``--resume``); an empty one is used. Anything else is the user's: ``--force`` replaces
    it, a terminal asks, and otherwise the demo stops without touching it.
    """
    if out.exists() and not out.is_dir():
        raise InvalidParameterError(f"-o {out}: exists and is not a directory; choose another -o")
    ours = (out / DEMO_MARKER).exists()
    if out.exists() and not resume and any(out.iterdir()):
        if not (ours or force):
            question = f"{out} exists and was not made by 'ps1dask demo'. Delete it? [y/N] "
            if not (sys.stdin.isatty() and input(question).strip().lower() in ("y", "yes")):
                raise InvalidParameterError(
                    f"-o {out}: the directory exists and was not made by 'ps1dask demo'; "
                    "nothing was deleted. Choose another -o, or pass --force to replace it "
                    "(--resume to write into it)"
                )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by 'ps1dask demo'; a rerun replaces this directory\n")


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    import ps1dask
    from ps1dask.conventions import flux_to_abmag
    from ps1dask.emulator import Emulator
    from ps1dask.photometry import aperture_flux

    out = Path(args.output)
    _prepare_output(out, resume=args.resume, force=args.force)
    store = out / "cutouts.zarr"
    print(
        f"ps1dask {ps1dask.__version__} demo: an emulated PS1 service, a local Dask cluster, one Zarr store"
    )
    with Emulator(seed=args.seed, latency=args.latency, cache_dir=out / "emulator-cache") as emu:
        print(
            f"emulator serving {emu.url} (latency {args.latency} s per request, seed {args.seed})"
        )
        positions = _demo_positions(emu.sky, args.positions, args.seed)
        table_path = out / "positions.csv"
        positions.to_csv(table_path, index=False)
        print(f"{len(positions)} positions -> {table_path}")
        summary = ps1dask.cutouts(
            table_path,
            store,
            filters=args.filters,
            size=args.size,
            types=("stack", "stack.wt", "stack.mask"),
            strategy=args.strategy,
            service=emu.url,
            # the emulator's S3 mode (same port) stands for the public bucket
            s3_endpoint=emu.url if args.strategy == "s3" else None,
            n_workers=args.workers,
            quiet=args.quiet,
        )
        print(summary)
        metrics = emu.metrics()
        print(
            f"emulator saw {metrics['requests_total']} requests, at most {metrics['max_in_flight']} "
            f"in flight (limit 10), {metrics['bytes_sent'] / 1e6:.1f} MB sent"
            + (
                f"; its S3 mode {metrics['s3']['requests']} requests, "
                f"{metrics['s3']['bytes_sent'] / 1e6:.1f} MB"
                if "s3" in metrics
                else ""
            )
        )
        ds = ps1dask.open_store(store)
        print(ds)
        # Forced photometry at each star's position, against the emulator's truth.
        truth = pd.DataFrame(emu.sky.sources(*DEMO_FIELD, 1500.0))
        rows = []
        band = "r" if "r" in args.filters else args.filters[0]
        # One read of what the loop needs; indexing an xarray variable's .values inside the
        # loop would read the whole array from the store at every turn.
        names = [
            "id",
            "ra",
            "dec",
            "stack_status",
            "stack_flux",
            "stack_variance",
            "stack_zeropoint",
        ]
        one = ds[names].sel(filter=band).load()
        ids, ras, decs = one.id.values, one.ra.values, one.dec.values
        status, images, variances = (
            one.stack_status.values,
            one.stack_flux.values,
            one.stack_variance.values,
        )
        zeropoints = one.stack_zeropoint.values
        for i in range(ds.sizes["position"]):
            name = str(ids[i])
            if not name.startswith("star") or status[i] != 1:
                continue
            flux, _err = aperture_flux(images[i], variances[i])  # the configured aperture
            zp = float(zeropoints[i])
            ra, dec = float(ras[i]), float(decs[i])
            near = truth.iloc[int(np.argmin((truth.ra - ra) ** 2 + (truth.dec - dec) ** 2))]
            rows.append(
                {
                    "id": name,
                    f"mag_{band}_measured": float(flux_to_abmag(flux, zp)),
                    f"mag_{band}_true": near[f"mag_{band}"],
                }
            )
        phot = pd.DataFrame(rows)
        if len(phot):
            phot["difference"] = phot.iloc[:, 1] - phot.iloc[:, 2]
            print(f"\naperture photometry ({band}) of the stars vs the emulator's truth:")
            print(phot.head(10).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
            print(
                f"median |difference| {phot.difference.abs().median():.3f} mag over {len(phot)} stars"
            )
    print(f"\nstore: {store}  (ps1dask.open_store({str(store)!r}))")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the main job end to end against the embedded emulator (no internet needed)",
        description=(
            "Start the embedded PS1 emulator, write a table of positions (emulator stars, a "
            "sexagesimal position, one outside the PS1 footprint), fetch their stack cutouts "
            "(flux, variance, mask) into one Zarr store on a local Dask cluster, then measure "
            "the stars' magnitudes in the store and compare them with the emulator's truth."
        ),
    )
    p.add_argument(
        "-o", "--output", default="ps1dask-demo", help="output directory (default ./ps1dask-demo)"
    )
    p.add_argument(
        "--positions", type=int, default=40, help="number of star positions (default 40)"
    )
    p.add_argument("--filters", default="gri", help="filters (default gri)")
    p.add_argument("--size", type=int, default=96, help="cutout size in pixels (default 96)")
    add_strategy_argument(p)
    p.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    p.add_argument(
        "--latency", type=float, default=0.05, help="emulated service latency in s (default 0.05)"
    )
    p.add_argument("--seed", type=int, default=0, help="emulator sky seed (default 0)")
    keep = p.add_mutually_exclusive_group()
    keep.add_argument(
        "--resume", action="store_true", help="keep an existing output directory and resume"
    )
    keep.add_argument(
        "--force",
        action="store_true",
        help="replace the output directory even if an earlier demo did not make it (without "
        "--force a directory that is not the demo's is never deleted: a terminal is asked)",
    )
    p.set_defaults(func=run)
