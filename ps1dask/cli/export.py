"""``ps1dask export``: the cutouts of a store as FITS files, one per cutout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ps1dask.cli.jobargs import add_storage_option_argument, store_location
from ps1dask.exceptions import InvalidParameterError


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ps1dask.conventions import parse_filters
    from ps1dask.storage import STATUS, open_store
    from ps1dask.storage.fits_export import cutout_filename, cutout_fits

    if args.format != "fits":
        raise InvalidParameterError(f"--format {args.format}: only fits is written")
    ds = open_store(store_location(args, args.store))
    stored = "".join(str(f) for f in ds["filter"].values)
    bands = parse_filters(args.filters) if args.filters else stored
    missing = [b for b in bands if b not in stored]
    if missing:
        raise InvalidParameterError(f"--filters: the store has {stored}, not {''.join(missing)}")
    parts = {"stack", "warp"} if args.part == "all" else {args.part}
    want_stacks = "stack" in parts and "stack_flux" in ds
    want_warps = "warp" in parts and "warp_flux" in ds
    if not (want_stacks or want_warps):
        raise InvalidParameterError(f"{args.store} has no {args.part} cutouts to export")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    status = {
        part: ds[f"{part}_status"].values
        for part, wanted in (("stack", want_stacks), ("warp", want_warps))
        if wanted
    }
    written = skipped = 0
    labels = ds["position"].values
    for k, position in enumerate(labels):
        for band in bands:
            f = stored.index(band)
            epochs: list[int | None] = []
            if want_stacks:
                epochs.append(None)
            if want_warps:
                epochs += [int(e) for e in np.arange(ds.sizes["epoch"])]
            for epoch in epochs:
                part = "stack" if epoch is None else "warp"
                code = status[part][k, f] if epoch is None else status[part][k, f, epoch]
                if int(code) != STATUS["ok"]:  # blank, no data, outside, padding: no pixels
                    skipped += epoch is None or int(code) != STATUS["pending"]
                    continue
                path = out / cutout_filename(ds, int(position), band, epoch)
                if path.exists() and not args.overwrite:
                    raise InvalidParameterError(
                        f"{path} exists; pass --overwrite to replace files in {out}"
                    )
                cutout_fits(ds, int(position), band, epoch).writeto(path, overwrite=True)
                written += 1
    print(f"wrote {written} FITS cutouts to {out} ({skipped} without pixels skipped)")
    if written == 0:
        print("nothing exported: no cutout has status ok", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the cutouts of a store as FITS files, one per cutout",
        description=(
            "Write every cutout of a ps1dask store (stacks and warp epochs with status ok) as "
            "one FITS file each: linear flux in the primary HDU with the full WCS, AB zero "
            "point (PHOTZP), times (warps: MJD-OBS/MJD-AVG in TAI, MJD-UTC) and provenance; "
            "the other stored images (variance, mask, ...) as extensions. Files are named "
            "<id>_<the service's file name>, e.g. "
            "M1_rings.v3.skycell.1784.059.stk.r.unconv.fits; from Python, "
            "ds.ps1.to_fits(position, filter, epoch) gives the same HDUList."
        ),
    )
    p.add_argument("store", help="a ps1dask Zarr store")
    add_storage_option_argument(p)
    p.add_argument("-o", "--output", required=True, help="directory for the FITS files")
    p.add_argument("--format", default="fits", choices=["fits"], help="file format (fits)")
    p.add_argument("--filters", default=None, help="subset of the store's filters (default all)")
    p.add_argument(
        "--part",
        default="all",
        choices=["all", "stack", "warp"],
        help="stack cutouts, warp epochs or both (default all that the store holds)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=run)
