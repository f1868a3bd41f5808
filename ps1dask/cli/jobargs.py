"""Arguments that every fetching command (``cutouts``, ``warps``) takes."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from ps1dask.cli.positionargs import add_position_arguments


def strategy_name(text: str) -> str:
    """``--strategy``'s type: ``auto`` or a registered strategy (the registry is read here,
    when a command runs, not when its parser is built: ``--help`` must stay light)."""
    from ps1dask.exceptions import UnknownStrategyError
    from ps1dask.fetch.strategies import AUTO, get_strategy

    name = text.strip()
    if name != AUTO:
        try:
            get_strategy(name)
        except UnknownStrategyError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return name


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_strategy_argument(p: argparse.ArgumentParser) -> None:
    """``--strategy``, validated against the registry of fetch strategies."""
    p.add_argument(
        "--strategy",
        default="auto",
        type=strategy_name,
        metavar="NAME",
        help=_strategy_help(),
    )


def _strategy_help() -> str:
    # The registry's own help once it is loaded (a program that registered strategies);
    # a bare `ps1dask COMMAND --help` does not load it (it imports the whole fetch layer),
    # so there the built-ins are described here and plug-ins named from their entry points.
    if "ps1dask.fetch.strategies" in sys.modules:
        from ps1dask.fetch.strategies import strategy_help

        return strategy_help()
    from importlib.metadata import entry_points

    plugins = sorted(point.name for point in entry_points(group="ps1dask.strategies"))
    installed = f" Installed plug-ins: {', '.join(plugins)}." if plugins else ""
    return (
        "how to fetch: auto (default: a cost model per skycell group), cutout (server "
        "cutouts), skycell (whole files through the local cache), range (HTTP Range reads of "
        "only the row tiles needed), s3 (the same row tiles from the public S3 copy), or a strategy a plug-in registers (docs/strategies.md). "
        f"All give the same pixels.{installed}"
    )


def add_storage_option_argument(p: argparse.ArgumentParser) -> None:
    """``--storage-option KEY=VALUE`` (repeatable): fsspec's options of a store URL."""
    p.add_argument(
        "--storage-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an option of an object-store URL (s3://, gs://, az://), as fsspec spells it: "
        "endpoint_url=http://..., key=..., secret=..., anon=true, "
        'client_kwargs=\'{"region_name": "us-east-1"}\'; repeatable. S3 credentials may '
        "also come from the AWS_* environment variables",
    )


def store_location(args: argparse.Namespace, store: str) -> Any:
    """The :class:`~ps1dask.storage.location.StoreLocation` of ``store`` and the command's
    ``--storage-option`` values (errors name the flag)."""
    from ps1dask.storage.location import StoreLocation, parse_storage_options

    options = parse_storage_options(getattr(args, "storage_option", None))
    return StoreLocation.of(store, options)


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
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output Zarr store: a directory, or a URL such as s3://bucket/path.zarr "
        "(gs://, az://, file:// too; see --storage-option)",
    )
    add_storage_option_argument(p)
    p.add_argument("--filters", default="grizy", help="subset of grizy (default: grizy)")
    p.add_argument("--size", default=size, help=size_help)
    p.add_argument("--types", default=types, help=types_help)
    add_strategy_argument(p)
    p.add_argument(
        "--service", default=None, help="service URL (default: ps1dask.service.url, i.e. STScI)"
    )
    p.add_argument(
        "--s3-endpoint",
        default=None,
        metavar="URL",
        help="endpoint of the S3 copy of the images that --strategy s3 reads (an S3-compatible "
        "mirror, or the emulator's URL); default ps1dask.s3.endpoint-url, i.e. AWS. Setting it "
        "also lets auto choose s3",
    )
    p.add_argument(
        "--s3-fallback",
        action="store_true",
        help="read stack files missing from the S3 copy from the service (default: no_data); "
        "warps missing from it always come from the service",
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
        "--threads-per-worker",
        type=positive_int,
        default=None,
        metavar="N",
        help="threads of each local worker process, i.e. work units it runs at once (default "
        "ps1dask.cluster.threads-per-worker, 4: units wait on the network a good part of "
        "their time, so more threads than cores keep the cores busy; each unit holds its "
        "cutouts in memory)",
    )
    p.add_argument(
        "--dashboard-address",
        default=None,
        metavar="HOST:PORT",
        help="where the Dask dashboard of the local cluster listens (default "
        "ps1dask.cluster.dashboard-address, 127.0.0.1:0: this machine only, any free port; "
        "':8787' serves it to the network, without authentication)",
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


@contextlib.contextmanager
def job_config(args: argparse.Namespace) -> Iterator[None]:
    """The dask config a job runs under: its options that are configuration, not arguments."""
    import dask.config

    settings = {}
    if args.dashboard_address is not None:
        settings["ps1dask.cluster.dashboard-address"] = args.dashboard_address
    if args.threads_per_worker is not None:
        settings["ps1dask.cluster.threads-per-worker"] = args.threads_per_worker
    if getattr(args, "s3_fallback", False):
        settings["ps1dask.s3.fallback-to-service"] = True
    with dask.config.set(settings):
        yield


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
        "quiet": args.quiet,
        "storage_options": _storage_options(args),
        "s3_endpoint": args.s3_endpoint,
    }


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    from ps1dask.storage.location import parse_storage_options

    return parse_storage_options(getattr(args, "storage_option", None))


def report(summary: Any, what: str) -> int:
    """Print a job summary; exit status 1 when something failed (a rerun retries it)."""
    print(summary)
    failed = summary.statuses.get("failed", 0)
    if failed:
        print(f"{failed} {what} failed; rerun the same command to retry them")
    return 1 if failed else 0
