"""``ps1dask locate``: add PS1 skycell columns to a table of positions."""

from __future__ import annotations

import argparse
from pathlib import Path

from ps1dask.cli.positionargs import add_position_arguments, read_cli_positions
from ps1dask.exceptions import InvalidParameterError

_OUTPUT_SUFFIXES = (".csv", ".txt", ".parquet", ".pq")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ps1dask.positions import read_table_columns
    from ps1dask.tessellation import locate

    output = Path(args.output)
    if output.suffix.lower() not in _OUTPUT_SUFFIXES:
        raise InvalidParameterError(f"-o {output}: the output must be .csv or .parquet")
    table = read_cli_positions(args)
    located = locate(table.ra, table.dec)
    # the input's own columns, as read, on the rows kept; then the parsed position (degrees,
    # whatever the input spelling) and the location, which replace input columns of the
    # same name
    passed = read_table_columns(args.positions).iloc[table.rows].reset_index(drop=True)
    ours = pd.concat([table.frame[["id", "ra", "dec"]], located], axis=1)
    out = pd.concat([passed.drop(columns=[c for c in ours if c in passed]), ours], axis=1)
    if output.suffix.lower() in (".parquet", ".pq"):
        out.to_parquet(output, index=False)
    else:
        out.to_csv(output, index=False)
    n_out = int((~located["in_footprint"]).sum())
    print(
        f"located {len(out)} positions in {located['skycell'].nunique()} skycells "
        f"({n_out} outside the PS1 3pi footprint) -> {args.output}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "locate",
        help="find the PS1 skycell and pixel of each position (no network)",
        description=(
            "Read a table of positions (as 'ps1dask cutouts' does: CSV, Parquet, FITS, VOTable "
            "or ECSV; RA/Dec in degrees or sexagesimal, or skycell ids) and write its rows "
            "plus id, ra, dec (J2000 degrees), projcell, subcell, skycell, x, y (1-based FITS "
            "pixel in the skycell image) and in_footprint. No request is sent to any service."
        ),
    )
    add_position_arguments(p)
    p.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    p.set_defaults(func=run)
