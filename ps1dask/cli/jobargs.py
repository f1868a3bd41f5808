"""Arguments that every fetching command (``cutouts``, ``warps``) takes."""

from __future__ import annotations

import argparse
from typing import Any

from ps1dask.cli.positionargs import add_position_arguments


def add_job_arguments(
    p: argparse.ArgumentParser,
    *,
    size: str,
    size_help: str,
    types: str,
    types_help: str,
    unit_size: int,
) -> None:
    add_position_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output Zarr store (directory)")
    p.add_argument("--filters", default="grizy", help="subset of grizy (default: grizy)")
    p.add_argument("--size", default=size, help=size_help)
    p.add_argument("--types", default=types, help=types_help)
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "cutout", "skycell", "range"],
        help="how to fetch: server cutouts, whole skycell files, HTTP range reads of row "
        "tiles, or auto (a cost model per skycell; default). All give the same pixels.",
    )
    p.add_argument(
        "--service", default=None, help="service URL (default: ps1dask.service.url, i.e. STScI)"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        help="address of a running Dask scheduler, e.g. tcp://host:8786",
    )
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of the local cluster (default 2)",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="delete an existing store and start over"
    )
    p.add_argument(
        "--unit-size",
        type=int,
        default=unit_size,
        help=f"positions per Dask task (default {unit_size})",
    )
    p.add_argument(
        "--cache-dir", default=None, help="whole-file cache directory (skycell strategy)"
    )


def job_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`ps1dask.cutouts` / :func:`ps1dask.warps`."""
    return {
        "filters": args.filters,
        "size": args.size,
        "types": tuple(args.types.split(",")),
        "strategy": args.strategy,
        "service": args.service,
        "client": args.scheduler,
        "n_workers": args.workers,
        "resume": not args.no_resume,
        "max_unit_positions": args.unit_size,
        "cache_dir": args.cache_dir,
    }


def report(summary: Any, what: str) -> int:
    """Print a job summary; exit status 1 when something failed (a rerun retries it)."""
    print(summary)
    failed = summary.statuses.get("failed", 0)
    if failed:
        print(f"{failed} {what} failed; rerun the same command to retry them")
    return 1 if failed else 0
