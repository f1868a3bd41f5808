"""``ps1dask cutouts``: stack cutouts of a position table into one Zarr store."""

from __future__ import annotations

import argparse

from ps1dask.jobs import cutouts


def run(args: argparse.Namespace) -> int:
    summary = cutouts(
        args.positions,
        args.output,
        filters=args.filters,
        size=args.size,
        types=tuple(args.types.split(",")),
        strategy=args.strategy,
        service=args.service,
        client=args.scheduler,
        n_workers=args.workers,
        resume=not args.no_resume,
        max_unit_positions=args.unit_size,
        cache_dir=args.cache_dir,
    )
    print(summary)
    failed = summary.statuses.get("failed", 0)
    if failed:
        print(f"{failed} cutouts failed; rerun the same command to retry them")
    return 1 if failed else 0


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
    p.add_argument(
        "positions",
        help="table of positions: CSV, Parquet, FITS or VOTable with ra/dec (degrees or "
        "sexagesimal) or skycell columns, and optionally an id/name column",
    )
    p.add_argument("-o", "--output", required=True, help="output Zarr store (directory)")
    p.add_argument("--filters", default="grizy", help="subset of grizy (default: grizy)")
    p.add_argument(
        "--size", default="240", help="cutout size in pixels, N or W,H (0.25\"/pixel; default 240 = 1')"
    )
    p.add_argument(
        "--types",
        default="stack",
        help="comma list of stack image types: stack, stack.wt (variance), stack.mask, "
        "stack.exp, stack.num, stack.expwt (default: stack)",
    )
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "cutout", "skycell", "range"],
        help="how to fetch: server cutouts, whole skycell files, HTTP range reads of row "
        "tiles, or auto (a cost model per skycell; default). All give the same pixels.",
    )
    p.add_argument("--service", default=None, help="service URL (default: ps1dask.service.url, i.e. STScI)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, e.g. tcp://host:8786")
    where.add_argument("--workers", type=int, default=None, help="worker processes of the local cluster (default 2)")
    p.add_argument("--no-resume", action="store_true", help="delete an existing store and start over")
    p.add_argument("--unit-size", type=int, default=64, help="positions per Dask task (default 64)")
    p.add_argument("--cache-dir", default=None, help="whole-file cache directory (skycell strategy)")
    p.set_defaults(func=run)
