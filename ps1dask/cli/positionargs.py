"""The options that name the columns of a position table (``cutouts``, ``warps``, ``locate``).

The table is read here, with :func:`ps1dask.read_positions`, so that an error tells a shell
user which option to pass (``--ra-col``), not which Python keyword.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from ps1dask.positions import PositionTable

#: Skipped rows listed on stderr before "and N more".
_SKIPPED_SHOWN = 10


def add_position_arguments(p: argparse.ArgumentParser) -> None:
    """Add the positional ``positions`` table and the options naming its columns."""
    p.add_argument(
        "positions",
        help="table of positions: CSV, Parquet, FITS, VOTable or ECSV with RA/Dec (degrees or "
        "sexagesimal) or skycell columns, and optionally an id/name column",
    )
    cols = p.add_argument_group(
        "position columns",
        "Found case-insensitively when not named: RA as ra, RAJ2000, RA_ICRS, RAdeg, raMean, "
        "...; Dec as dec, DEJ2000, DE_ICRS, DEdeg, decMean, ...; the id as id, name, objid, "
        "source_id; skycell ids as skycell. Other names (e.g. alpha/delta) must be named.",
    )
    cols.add_argument("--ra-col", default=None, metavar="NAME", help="column of RA")
    cols.add_argument("--dec-col", default=None, metavar="NAME", help="column of Dec")
    ids = cols.add_mutually_exclusive_group()
    ids.add_argument("--id-col", default=None, metavar="NAME", help="column of position ids")
    ids.add_argument(
        "--no-id-col",
        action="store_true",
        help="ignore any id column: the ids are the 0-based row numbers",
    )
    cols.add_argument(
        "--skycell-col",
        default=None,
        metavar="NAME",
        help="column of PS1 skycell ids (skycell.2069.026), the centre of the skycell standing "
        "for rows without RA/Dec",
    )
    cols.add_argument(
        "--skip-bad",
        action="store_true",
        help="drop rows with unusable positions (listed on stderr) instead of stopping",
    )


def read_cli_positions(args: argparse.Namespace) -> PositionTable:
    """Read ``args.positions`` with the column options; list skipped rows on stderr."""
    from ps1dask.positions import CLI_ARGUMENTS, read_positions

    table = read_positions(
        args.positions,
        ra_col=args.ra_col,
        dec_col=args.dec_col,
        id_col=False if args.no_id_col else args.id_col,
        skycell_col=args.skycell_col,
        skip_bad=args.skip_bad,
        argument_names=CLI_ARGUMENTS,
    )
    skipped = table.skipped
    if len(skipped):
        print(
            f"skipped {len(skipped)} rows with unusable positions (0-based data rows):",
            file=sys.stderr,
        )
        for row, reason, value in skipped.head(_SKIPPED_SHOWN).itertuples(index=False):
            print(f"  row {row}: {reason} (value: {value})", file=sys.stderr)
        if len(skipped) > _SKIPPED_SHOWN:
            print(f"  and {len(skipped) - _SKIPPED_SHOWN} more", file=sys.stderr)
    return table
