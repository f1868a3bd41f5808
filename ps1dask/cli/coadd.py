"""``ps1dask coadd``: stack the warps of a store (all epochs, per season or per N days)."""

from __future__ import annotations

import argparse

from ps1dask.cli.jobargs import add_storage_option_argument, store_location
from ps1dask.cli.options import scheduler_client


def _bins(text: str) -> None | str | float:
    from ps1dask.coadd import parse_bins

    try:
        return parse_bins(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    from ps1dask.coadd import coadd_warps

    with scheduler_client(args) as client:
        summary = coadd_warps(
            store_location(args, args.store),
            bins=args.bins,
            clip_sigma=None if args.no_clip else args.clip_sigma,
            weighting=args.weighting,
            zeropoint=args.zeropoint,
            client=client,
        )
    print(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "coadd",
        help="stack the warps of a store into coadds (all epochs, per season or per N days)",
        description=(
            "Combine the warps of every position and filter of a ps1dask store into coadds "
            "written back to the store (coadd_flux, coadd_variance, coadd_ninputs, "
            "coadd_mjd_start/end, coadd_nepochs, coadd_zeropoint): rescaled to a common zero "
            "point (the stack's where there is one, else 25), masks respected, outliers "
            "rejected across epochs, inverse-variance weighted. Rerunning replaces the "
            "coadds.\n\n"
            "Example:\n"
            "  ps1dask coadd field.zarr --bins season\n"
            "  python -c \"import ps1dask; print(ps1dask.open_store('field.zarr').coadd_flux)\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a ps1dask Zarr store holding warps")
    add_storage_option_argument(p)
    p.add_argument(
        "--bins",
        type=_bins,
        default=None,
        help="all (one coadd of every epoch; default), season (split at gaps of more "
        "than 60 days) or a bin width in days",
    )
    p.add_argument(
        "--clip-sigma",
        type=float,
        default=3.0,
        help="outlier rejection threshold across epochs (default 3)",
    )
    p.add_argument("--no-clip", action="store_true", help="no outlier rejection")
    p.add_argument(
        "--weighting",
        choices=["image", "pixel"],
        default="image",
        help="one inverse-variance weight per warp (default) or per pixel",
    )
    p.add_argument(
        "--zeropoint",
        choices=["stack", "fixed"],
        default="stack",
        help="common zero point: the stack's where there is one, else 25 (default); or always 25",
    )
    p.add_argument(
        "--scheduler", default=None, help="address of a Dask scheduler (default: local threads)"
    )
    p.set_defaults(func=run)
