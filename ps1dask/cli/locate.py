"""``ps1dask locate``: add PS1 skycell columns to a table of positions."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ps1dask.exceptions import InvalidParameterError

if TYPE_CHECKING:
    import pandas as pd


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path)
    raise InvalidParameterError(f"{path}: expected a .csv or .parquet table")


def _write_table(df: pd.DataFrame, path: Path) -> None:
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    elif path.suffix.lower() in (".csv", ".txt"):
        df.to_csv(path, index=False)
    else:
        raise InvalidParameterError(f"{path}: output must be .csv or .parquet")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from ps1dask.tessellation import locate

    table = _read_table(Path(args.input))
    cols = {c.lower(): c for c in table.columns}
    missing = [c for c in ("ra", "dec") if c not in cols]
    if missing:
        raise InvalidParameterError(
            f"{args.input}: no {' or '.join(missing)} column (columns are {list(table.columns)})"
        )
    located = locate(table[cols["ra"]].to_numpy(), table[cols["dec"]].to_numpy())
    out = pd.concat([table.reset_index(drop=True), located], axis=1)
    _write_table(out, Path(args.output))
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
            "Read a CSV or Parquet table with 'ra' and 'dec' columns (J2000 degrees) and write "
            "the same rows plus projcell, subcell, skycell, x, y (1-based FITS pixel in the "
            "skycell image) and in_footprint. No request is sent to any service."
        ),
    )
    p.add_argument("input", help="CSV or Parquet table with ra, dec columns (degrees)")
    p.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    p.set_defaults(func=run)
