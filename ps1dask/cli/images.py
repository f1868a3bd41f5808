"""``ps1dask images``: JPEG/PNG pictures of every cutout of a store, in parallel."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ps1dask.cli.options import add_scheduler_arguments, scheduler_client

if TYPE_CHECKING:
    from ps1dask.render import Display


def add_colour_arguments(p: argparse.ArgumentParser) -> None:
    """The colour composite options shared by ``images`` and ``gallery``."""
    p.add_argument(
        "--colour",
        default=None,
        help="red, green, blue filters of the composite, e.g. yig (default: reddest/middle/bluest)",
    )
    p.add_argument("--no-colour", action="store_true", help="no colour composite")
    p.add_argument(
        "--method",
        choices=["lupton", "fitscut"],
        default="lupton",
        help="colour composite: lupton (true colours, default) or fitscut (the service's per-band scaling)",
    )


def add_display_arguments(p: argparse.ArgumentParser) -> None:
    """The display options shared by ``images`` and ``gallery``."""
    g = p.add_argument_group("display (as on the PS1 cutout service)")
    g.add_argument(
        "--stretch",
        choices=["asinh", "linear"],
        default="asinh",
        help="display curve (default asinh)",
    )
    g.add_argument(
        "--autoscale",
        type=float,
        default=99.5,
        help="display limits at the (100-P, P) percentiles of each image (default 99.5)",
    )
    g.add_argument(
        "--min",
        dest="vmin",
        type=float,
        default=None,
        help="explicit lower display limit (linear flux)",
    )
    g.add_argument(
        "--max",
        dest="vmax",
        type=float,
        default=None,
        help="explicit upper display limit (linear flux)",
    )
    g.add_argument(
        "--contrast", type=float, default=1.0, help="divide the display range by this (default 1)"
    )
    g.add_argument("--invert", action="store_true", help="negative images (dark stars on white)")


def display_from_args(args: argparse.Namespace) -> Display:
    from ps1dask.render import Display

    return Display(
        stretch=args.stretch,
        autoscale=args.autoscale,
        vmin=args.vmin,
        vmax=args.vmax,
        contrast=args.contrast,
        invert=args.invert,
    )


def run(args: argparse.Namespace) -> int:
    from ps1dask.render.bulk import write_images

    with scheduler_client(args) as client:
        index = write_images(
            args.store,
            args.output,
            fmt=args.format,
            filters=args.filters,
            colour=args.colour,
            no_colour=args.no_colour,
            method=args.method,
            display=display_from_args(args),
            size=args.size,
            warps=args.warps,
            quality=args.quality,
            client=client,
            num_workers=args.threads,
        )
    written = int((index["file"] != "").sum())
    skipped = len(index) - written
    print(
        f"wrote {written} images of {index['position'].nunique()} positions to {args.output} "
        f"({skipped} without an image: see {args.output}/index.csv)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "images",
        help="write JPEG/PNG pictures of every cutout of a store (per filter and colour)",
        description=(
            "Write a picture of every cutout of a ps1dask store into a directory, in parallel "
            "with Dask: <id>_<filter>.jpg per filter, <id>_colour.jpg (red/green/blue = the "
            "reddest, middle and bluest filter: y/i/g for grizy), with --warps also "
            "<id>_<filter>_eNNN.jpg per warp epoch, and index.csv listing them with their "
            "status.\n\nExample:\n  ps1dask images cutouts.zarr -o pictures --format png --stretch linear"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a ps1dask Zarr store")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument(
        "--format", choices=["jpg", "png"], default="jpg", help="image format (default jpg)"
    )
    p.add_argument("--filters", default=None, help="filters to write (default: all of the store's)")
    add_colour_arguments(p)
    p.add_argument("--size", type=int, default=None, help="resample to this longest side in pixels")
    p.add_argument("--warps", action="store_true", help="also one picture per good warp epoch")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    add_display_arguments(p)
    add_scheduler_arguments(p)
    p.set_defaults(func=run)
