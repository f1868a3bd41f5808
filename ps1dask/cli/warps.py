"""``ps1dask warps``: single-epoch warp cutouts of a position table into a Zarr store."""

from __future__ import annotations

import argparse

from ps1dask.cli.jobargs import add_job_arguments, job_config, job_kwargs, report
from ps1dask.cli.positionargs import read_cli_positions
from ps1dask.exceptions import InvalidParameterError


def _mjd_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidParameterError(
            f"--mjd-range {text!r}: expected START,END in MJD days"
        ) from None
    return start, end


def run(args: argparse.Namespace) -> int:
    from ps1dask.jobs import warps

    with job_config(args):
        summary = warps(
            read_cli_positions(args),
            args.output,
            mjd_range=_mjd_range(args.mjd_range),
            **job_kwargs(args),
        )
    return report(summary, "warp cutouts")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "warps",
        help="fetch every single-epoch PS1 warp cutout of a table of positions into a Zarr store",
        description=(
            "Fetch the single-epoch 'warp' cutouts (about 10-30 per filter) of every position, "
            "as a time series along an 'epoch' axis (UTC mid-exposure times, zero points, "
            "coverage; blank warps flagged and never fetched twice), into a Zarr store; the "
            "same store as 'ps1dask cutouts' when positions, filters and size agree. Then "
            "'ps1dask lightcurves STORE -o lc.parquet' measures them.\n\n"
            "Example:\n"
            "  ps1dask warps targets.csv -o targets.zarr --filters gri --size 64 --types warp,warp.wt,warp.mask"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_job_arguments(
        p,
        size="64",
        size_help='cutout size in pixels, N or W,H (width first; default 64 = 16")',
        types="warp",
        types_help="comma list: warp, warp.wt (variance), warp.mask (default: warp)",
        unit_size=16,
    )
    p.add_argument(
        "--mjd-range", default=None, help="START,END: only warps observed in this MJD range"
    )
    p.set_defaults(func=run)
