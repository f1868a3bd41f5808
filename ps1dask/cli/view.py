"""``ps1dask view``: browse a store in a web browser (a local server)."""

from __future__ import annotations

import argparse
import sys

from ps1dask.cli.jobargs import add_storage_option_argument, store_location


def run(args: argparse.Namespace) -> int:
    from ps1dask.viewer import Viewer

    viewer = Viewer(store_location(args, args.store), host=args.host, port=args.port)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving {args.store} to the network on {args.host} (no authentication)",
            file=sys.stderr,
        )

    def announce() -> None:
        print(f"ps1dask viewer of {args.store} at {viewer.url}/  (Ctrl-C to stop)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(f"{viewer.url}/")

    viewer.start()
    announce()
    try:
        viewer.wait()
    except KeyboardInterrupt:
        pass
    finally:
        viewer.stop()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "view",
        help="browse a store in a web browser (filters, stretch, contrast, warp blinking, light curves)",
        description=(
            "Serve a local web page to browse the positions of a ps1dask store: switch filters "
            "and the colour composite, change stretch, autoscale and contrast, invert, blink "
            "through warp epochs and look at light curves. Pictures are rendered on demand "
            "from the Zarr store. Serves on the loopback interface (127.0.0.1) by default.\n\n"
            "Example:\n  ps1dask view cutouts.zarr --port 8765   # then open http://127.0.0.1:8765/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("store", help="a ps1dask Zarr store")
    add_storage_option_argument(p)
    p.add_argument(
        "--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port)"
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1, this machine only)",
    )
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.set_defaults(func=run)
