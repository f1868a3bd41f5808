"""``ps1dask warps``: single-epoch warp cutouts of a position table into a Zarr store."""

from __future__ import annotations

import argparse

from ps1dask.exceptions import InvalidParameterError
from ps1dask.jobs import warps


def _mjd_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        start, end = (float(v) for v in text.split(","))
    except ValueError:
        raise InvalidParameterError(f"--mjd-range {text!r}: expected START,END in MJD days") from None
    return start, end


def run(args: argparse.Namespace) -> int:
    summary = warps(
        args.positions,
        args.output,
        filters=args.filters,
        size=args.size,
        types=tuple(args.types.split(",")),
        mjd_range=_mjd_range(args.mjd_range),
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
        print(f"{failed} warp cutouts failed; rerun the same command to retry them")
    return 1 if failed else 0


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
    p.add_argument("positions", help="table of positions (CSV, Parquet, FITS, VOTable): ra/dec or skycell, optional id")
    p.add_argument("-o", "--output", required=True, help="output Zarr store (directory)")
    p.add_argument("--filters", default="grizy", help="subset of grizy (default: grizy)")
    p.add_argument("--size", default="64", help="cutout size in pixels, N or W,H (default 64 = 16\")")
    p.add_argument("--types", default="warp", help="comma list: warp, warp.wt (variance), warp.mask (default: warp)")
    p.add_argument("--mjd-range", default=None, help="START,END: only warps observed in this MJD range")
    p.add_argument("--strategy", default="auto", choices=["auto", "cutout", "skycell", "range"],
                   help="how to fetch (all give the same pixels; default auto)")
    p.add_argument("--service", default=None, help="service URL (default: ps1dask.service.url, i.e. STScI)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    where.add_argument("--workers", type=int, default=None, help="worker processes of the local cluster (default 2)")
    p.add_argument("--no-resume", action="store_true", help="delete an existing store and start over")
    p.add_argument("--unit-size", type=int, default=16, help="positions per Dask task (default 16)")
    p.add_argument("--cache-dir", default=None, help="whole-file cache directory (skycell strategy)")
    p.set_defaults(func=run)
