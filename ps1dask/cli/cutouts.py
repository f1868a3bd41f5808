"""``ps1dask cutouts``: stack cutouts of a position table into one Zarr store."""

from __future__ import annotations

import argparse

from ps1dask.cli.jobargs import add_job_arguments, job_config, job_kwargs, report
from ps1dask.cli.positionargs import read_cli_positions


def run(args: argparse.Namespace) -> int:
    from ps1dask.jobs import cutouts

    with job_config(args):
        kwargs = job_kwargs(args)
        summary = cutouts(read_cli_positions(args), args.output, mosaic=args.mosaic, **kwargs)
        return report(summary, "cutouts")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cutouts",
        help="fetch PS1 stack cutouts for a table of positions into one Zarr store",
        description=(
            "Fetch Pan-STARRS1 stack cutouts (linear flux, correct WCS) for every position of a "
            "table into one Zarr v3 store, never more than 10 requests to the service at once "
            "across the whole cluster. Rerunning the same command resumes: nothing already "
            "stored is fetched again.\n\n"
            "Example:\n"
            "  ps1dask cutouts targets.csv -o cutouts.zarr --filters gri --size 120\n"
            "  python -c \"import ps1dask; print(ps1dask.open_store('cutouts.zarr'))\""
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_job_arguments(
        p,
        size="240",
        size_help="cutout size in pixels, N or W,H (width first; 0.25\"/pixel; default 240 = 1')",
        types="stack",
        types_help="comma list of stack image types: stack, stack.wt (variance), stack.mask, "
        "stack.exp, stack.num, stack.expwt (default: stack)",
        unit_size=64,
    )
    p.add_argument(
        "--mosaic",
        action="store_true",
        help="complete cutouts of any size up to 14400 (1 degree), filled from every skycell "
        "that covers them, across skycell and projection-cell edges (not with --strategy "
        "cutout)",
    )
    p.set_defaults(func=run)
