"""The ``ps1dask`` command line: one subcommand module per job, registered here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ps1dask.exceptions import PS1DaskError

# Each module defines ``register(subparsers)`` adding its subcommand with ``func`` set.
_SUBCOMMANDS = (
    "locate",
    "cutouts",
    "warps",
    "lightcurves",
    "coadd",
    "emulator",
    "demo",
    "bench",
    "images",
    "gallery",
    "view",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ps1dask",
        description=(
            "Bulk Pan-STARRS1 (PS1) image extraction on Dask. Positions in, one Zarr store of "
            "linear-flux cutouts out, never more than 10 simultaneous requests to STScI."
        ),
        epilog="Run 'ps1dask COMMAND --help' for the options of each command.",
    )
    from ps1dask import __version__

    parser.add_argument("--version", action="version", version=f"ps1dask {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"ps1dask.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (PS1DaskError, OSError) as err:
        # OSError: unreadable inputs, unwritable outputs (FileNotFoundError, PermissionError,
        # NotADirectoryError, a full disk, ...): the message, no traceback.
        print(f"ps1dask {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ps1dask {args.command}: interrupted", file=sys.stderr)
        return 130
