"""``ps1dask lightcurves``: forced-photometry light curves of a store's warps to Parquet/CSV."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from ps1dask.cli.jobargs import add_storage_option_argument, store_location
from ps1dask.cli.options import scheduler_client
from ps1dask.exceptions import InvalidParameterError


def _annulus(text: str) -> tuple[float, float]:
    try:
        inner, outer = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"annulus {text!r}: expected INNER,OUTER in pixels"
        ) from None
    return inner, outer


def run(args: argparse.Namespace) -> int:
    import dask

    from ps1dask.lightcurves import BAD_FLAGS, lightcurves
    from ps1dask.progress import compute_progress

    out = Path(args.output)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise InvalidParameterError(
            f"{out}: output must end in .parquet (a Parquet dataset) or .csv"
        )
    t0 = time.perf_counter()
    lc = lightcurves(
        store_location(args, args.store),
        radius=args.radius,
        annulus=args.annulus,
        filters=args.filters,
        include_stack=not args.no_stack,
        aperture_correction=not args.no_apcorr,
        gain=args.gain,
    )
    with (
        scheduler_client(args) as client,
        dask.config.set(scheduler=client or "threads"),
        contextlib.nullcontext() if client else compute_progress("lightcurves"),
    ):
        if suffix == ".csv":
            frame = lc.compute()
            frame.to_csv(out, index=False)
        else:
            lc.to_parquet(str(out), write_index=False, overwrite=args.overwrite)
    if suffix != ".csv":
        import pandas as pd

        frame = pd.read_parquet(out, columns=["id", "filter", "lc_flags", "err_model"])
    seconds = time.perf_counter() - t0
    n_bad = int(((frame["lc_flags"] & int(BAD_FLAGS)) != 0).sum())
    models = ", ".join(sorted(set(frame["err_model"]))) if len(frame) else "-"
    n_curves = frame.groupby(["id", "filter"]).ngroups if len(frame) else 0
    print(
        f"{len(frame):,} epochs of {n_curves:,} light curves ({frame['id'].nunique():,} positions) "
        f"-> {out} in {seconds:.1f} s; {n_bad:,} rows flagged unusable (BAD_FLAGS); "
        f"errors: {models}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lightcurves",
        help="forced-photometry light curves of the warps in a store (Parquet or CSV)",
        description=(
            "Measure every warp epoch of every position of a ps1dask store (made by "
            "'ps1dask warps') with forced aperture photometry at the position: one row per "
            "position, filter and epoch with UTC mid-exposure MJD, flux and error in "
            "microjansky, AB magnitude, local background, masked pixels and quality flags "
            "(lc_flags), plus the stack's flux in the same aperture when the store has stacks.\n\n"
            "Errors (err_model column): from the variance image when the store has warp.wt "
            "('variance'); else the annulus sky scatter plus the source's photon noise with "
            "--gain electrons per count ('sky+poisson').\n\n"
            "Example:\n"
            "  ps1dask warps targets.csv -o field.zarr --types warp,warp.wt,warp.mask\n"
            "  ps1dask lightcurves field.zarr -o lc.parquet --radius 6 --annulus 12,20\n"
            "  python -c \"import pandas as pd; print(pd.read_parquet('lc.parquet'))\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a ps1dask Zarr store holding warps")
    add_storage_option_argument(p)
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: .parquet (a Parquet dataset directory, one file per store chunk) or .csv",
    )
    p.add_argument(
        "--radius",
        type=float,
        default=None,
        help='aperture radius, pixels of 0.25" (default: ps1dask.photometry.radius, 6)',
    )
    p.add_argument(
        "--annulus",
        type=_annulus,
        default=None,
        help="background annulus INNER,OUTER in pixels (default: ps1dask.photometry.annulus, 12,20)",
    )
    p.add_argument("--filters", default=None, help="subset of the store's filters (default: all)")
    p.add_argument("--no-stack", action="store_true", help="leave out the stack photometry columns")
    p.add_argument(
        "--no-apcorr",
        action="store_true",
        help="plain aperture fluxes (no PSF correction to total flux)",
    )
    p.add_argument(
        "--gain",
        type=float,
        default=None,
        help="electrons per warp count, for the source's photon noise when the store has no "
        "variance image (default: ps1dask.photometry.warp-gain, 1.0)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing Parquet output")
    p.add_argument(
        "--scheduler", default=None, help="address of a Dask scheduler (default: local threads)"
    )
    p.set_defaults(func=run)
