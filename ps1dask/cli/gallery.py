"""``ps1dask gallery``: a self-contained HTML gallery of a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from ps1dask.cli.images import add_colour_arguments, add_display_arguments, display_from_args
from ps1dask.cli.jobargs import add_storage_option_argument, store_location
from ps1dask.cli.options import add_scheduler_arguments, scheduler_client


def run(args: argparse.Namespace) -> int:
    from ps1dask.gallery import write_gallery

    with scheduler_client(args) as client:
        pages = write_gallery(
            store_location(args, args.store),
            args.output,
            page_size=args.page_size,
            filters=args.filters,
            colour=args.colour,
            no_colour=args.no_colour,
            method=args.method,
            thumb_size=args.thumb_size,
            fmt=args.format,
            lightcurves=not args.no_lightcurves,
            display=display_from_args(args),
            title=args.title,
            client=client,
            num_workers=args.threads,
        )
    more = f" (+{len(pages) - 1} more pages beside it)" if len(pages) > 1 else ""
    print(f"gallery: {pages[0]}{more}")
    if pages[0].name != Path(args.output).name:
        print(f"(-o {args.output} had no .html: wrote {pages[0].name} so that browsers render it)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gallery",
        help="write a self-contained HTML gallery of a store (colour composites, thumbnails, light curves)",
        description=(
            "Write an HTML gallery of a ps1dask store: for every position a colour composite "
            "(red/green/blue = the reddest, middle and bluest filter: y/i/g for grizy), a "
            "thumbnail per filter, a label (id, RA/Dec, skycell, status per filter) and, for "
            "stores with warps, a light curve from aperture photometry of the warp pixels. "
            "Images are inlined (base64), so each page is one file. Positions come in input "
            "order, --page-size to a page: page 1 is OUTPUT, page k is <stem>-pNNN.html.\n\n"
            "Example:\n  ps1dask gallery cutouts.zarr -o gallery.html --page-size 200"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a ps1dask Zarr store")
    add_storage_option_argument(p)
    p.add_argument(
        "-o",
        "--output",
        default="gallery.html",
        help="output HTML file (default gallery.html; .html is added if missing)",
    )
    p.add_argument("--page-size", type=int, default=100, help="positions per page (default 100)")
    p.add_argument(
        "--filters", default=None, help="filters of the thumbnails (default: all of the store's)"
    )
    add_colour_arguments(p)
    p.add_argument(
        "--thumb-size",
        type=int,
        default=128,
        help="largest side of a thumbnail in pixels (default 128)",
    )
    p.add_argument(
        "--format", choices=["jpg", "png"], default="jpg", help="inlined image format (default jpg)"
    )
    p.add_argument(
        "--no-lightcurves", action="store_true", help="no light-curve plots for warp stores"
    )
    p.add_argument("--title", default=None, help="page title")
    add_display_arguments(p)
    add_scheduler_arguments(p)
    p.set_defaults(func=run)
