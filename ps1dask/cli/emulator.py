"""``ps1dask emulator``: serve the offline PS1 image service emulator until interrupted."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from ps1dask.emulator.faults import DEFAULT_FAULT_KINDS

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def run(args: argparse.Namespace) -> int:
    from ps1dask.emulator.app import Emulator

    if args.verbose:  # the shared -v: also log every request
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
        )
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    if args.host not in _LOOPBACK:
        print(
            f"ps1dask emulator: warning: binding {args.host} makes the emulator reachable from "
            "other machines; it has no authentication (use 127.0.0.1 unless you need that)",
            file=sys.stderr,
        )
    emu = Emulator(
        seed=args.seed,
        latency=args.latency,
        bandwidth=args.bandwidth,
        fault_rate=args.fault_rate,
        fault_kinds=args.fault_kinds,
        retry_after=args.retry_after,
        stall_seconds=args.stall_seconds,
        max_concurrency=args.max_concurrency,
        work_per_mpix=args.work_per_mpix,
        s3_missing_fraction=args.s3_missing_fraction,
        cache_dir=args.cache_dir,
        host=args.host,
        port=args.port,
        workers=args.workers,
        cutout_processes=args.cutout_processes,
    )
    stop = threading.Event()
    # The parent at start: a change means it died and we were re-parented (to init or a
    # subreaper), so nobody is left to stop us.
    parent = os.getppid()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        emu.start()
    except OSError as err:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(
            f"ps1dask emulator: error: cannot listen on {args.host}:{args.port}: {err}",
            file=sys.stderr,
        )
        return 1
    try:
        url = emu.url
        print(url, flush=True)  # FIRST line of stdout: scripts read it
        knobs = emu.knobs
        faults = (
            f"{knobs.fault_rate:g} of requests ({', '.join(knobs.fault_kinds)})"
            if knobs.fault_rate > 0
            else "none"
        )
        print(
            f"ps1dask emulator of ps1images.stsci.edu (synthetic sky, seed {args.seed})\n"
            f"  image list   {url}/cgi-bin/ps1filenames.py?skycell=1405.053\n"
            f"  cutouts      {url}/cgi-bin/fitscut.cgi?red=<filename>&ra=&dec=&size=240&format=fits\n"
            f"  whole files  {url}/rings.v3.skycell/PPPP/SSS/<shortname>  (HTTP Range)\n"
            f"  S3 (path)    {url}/stpubdata/panstarrs/ps1/public/rings.v3.skycell/...  "
            f"(s3://stpubdata with endpoint {url})\n"
            f"  web page     {url}/cgi-bin/ps1cutouts\n"
            f"  truth        {url}/_emulator/truth?ra=&dec=&radius=60\n"
            f"  metrics      {url}/_emulator/metrics   (POST {url}/_emulator/metrics/reset)\n"
            f"  settings     {url}/_emulator/config    (POST JSON to change)\n"
            f"  latency {knobs.latency:g} s, bandwidth "
            f"{'unlimited' if not knobs.bandwidth else f'{knobs.bandwidth:g} MB/s'}, "
            f"faults {faults}, at most {knobs.max_concurrency} requests in flight per client\n"
            f"  use it: dask.config.set({{'ps1dask.service.url': '{url}'}})\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stop.wait(0.5):
            if not emu.running:  # pragma: no cover - the server thread died
                print("ps1dask emulator: the server stopped unexpectedly", file=sys.stderr)
                return 1
            if args.stop_with_parent and os.getppid() != parent:
                print("ps1dask emulator: the process that started it is gone", file=sys.stderr)
                break
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("ps1dask emulator: stopped", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "emulator",
        help="serve an offline emulator of the PS1 image service (ps1images.stsci.edu)",
        description=(
            "Serve a faithful offline stand-in for STScI's PS1 image service over a "
            "deterministic synthetic sky: ps1filenames.py, fitscut.cgi (FITS/JPEG/PNG), whole "
            "skycell files with HTTP Range, the ps1cutouts web page, the same files as the public "
            "S3 bucket (path-style /stpubdata/...), plus /_emulator/truth, "
            "/_emulator/metrics and /_emulator/config. Prints its base URL as the first line "
            "of output, then serves until Ctrl-C or SIGTERM."
        ),
        epilog=(
            "Examples:\n"
            "  ps1dask emulator --port 8000\n"
            "  ps1dask emulator --latency 0.2 --bandwidth 5 --fault-rate 0.05 "
            "--fault-kinds 503,reset\n"
            "Then: curl 'http://127.0.0.1:8000/cgi-bin/ps1filenames.py?ra=83.63&dec=22.01'\n"
            "S3 clients: s3://stpubdata/panstarrs/ps1/public/... with endpoint "
            "http://127.0.0.1:8000 (path-style; anonymous or signed)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        help="port to bind (default 0: any free port; the URL is printed)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic sky and of the fault generator (default 0)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="directory for rendered whole skycell files (default: a temporary "
        "directory removed on exit)",
    )
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="server-side delay per request, seconds (default 0)",
    )
    p.add_argument(
        "--bandwidth",
        type=float,
        default=None,
        metavar="MBPS",
        help="per-response bandwidth in MB/s (default: unlimited)",
    )
    p.add_argument(
        "--work-per-mpix",
        type=float,
        default=0.0,
        metavar="S",
        help="extra seconds per million cutout pixels, emulating the service's "
        "decompression time (default 0)",
    )
    p.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a fault per request, 0..1 (default 0)",
    )
    p.add_argument(
        "--fault-kinds",
        default=",".join(DEFAULT_FAULT_KINDS),
        metavar="KINDS",
        help=f"comma list of faults to draw from (default {','.join(DEFAULT_FAULT_KINDS)}): "
        "503/429 with Retry-After, reset (TCP RST), truncate (short body), "
        "stall (hold the request --stall-seconds), 500 (internal error); S3 requests get "
        "503 SlowDown for 503/429 and 500 InternalError",
    )
    p.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        metavar="S",
        help="Retry-After seconds of 503/429 answers (default 1)",
    )
    p.add_argument(
        "--stall-seconds",
        type=float,
        default=30.0,
        metavar="S",
        help="how long a stall fault holds a request (default 30)",
    )
    p.add_argument(
        "--max-concurrency",
        type=int,
        default=10,
        metavar="N",
        help="requests one client address may have in flight before getting 503 "
        "(default 10, STScI's limit)",
    )
    p.add_argument(
        "--s3-missing-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="fraction 0..1 of the S3 mode's keys absent from the bucket (NoSuchKey), chosen "
        "by a hash of the key (default 0)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="rendering threads (default: CPUs + 4, at most 16)",
    )
    p.add_argument(
        "--cutout-processes",
        type=int,
        default=None,
        metavar="N",
        help="worker processes that cut fitscut.cgi answers (default "
        "ps1dask.emulator.cutout-processes, 0: the rendering threads). Near the 10-slot "
        "limit, threads share the interpreter with the event loop and answers leave late; "
        "one process per CPU keeps them on time",
    )
    p.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="stop when the process that started this one exits (for scripts and benchmarks "
        "that run the emulator as a child process: no emulator left behind if they are killed)",
    )
    p.set_defaults(func=run)
