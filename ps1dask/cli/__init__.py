"""The ``ps1dask`` command line: one subcommand module per job, registered here.

``ps1dask --help`` builds the parser of every command, so command modules import nothing
heavy (Dask, astropy, xarray, zarr, pandas, ...) at module level: their ``run`` functions
import what they use. tests/test_cli.py checks it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ps1dask.cli.options import add_output_options, output_options
from ps1dask.exceptions import PS1DaskError

# The commands, in --help order: each module ps1dask.cli.NAME defines
# ``register(subparsers)`` adding its subcommand with ``func`` set; every command also gets
# the shared -q/-v/--log-level options here.
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
    "cache",
    "export",
)


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when asked (it is slow to import)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        import ps1dask

        print(f"ps1dask {ps1dask.__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ps1dask",
        description=(
            "Bulk Pan-STARRS1 (PS1) image extraction on Dask. Positions in, one Zarr store of "
            "linear-flux cutouts out, never more than 10 simultaneous requests to STScI."
        ),
        epilog="Run 'ps1dask COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        module = importlib.import_module(f"ps1dask.cli.{name}")
        module.register(sub)
        add_output_options(sub.choices[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with output_options(args):
            return int(args.func(args) or 0)
    except (PS1DaskError, OSError) as err:
        # OSError: unreadable inputs, unwritable outputs (FileNotFoundError, PermissionError,
        # NotADirectoryError, a full disk, ...): the message, no traceback.
        print(f"ps1dask {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ps1dask {args.command}: interrupted", file=sys.stderr)
        return 130
