"""``ps1dask bench``: measure throughput against the embedded emulator."""

from __future__ import annotations

import argparse

from ps1dask.bench.registry import CATALOGUE


def run(args: argparse.Namespace) -> int:
    from ps1dask.bench.registry import run_benchmark

    names = sorted(CATALOGUE) if args.name == "all" else [args.name]
    for name in names:
        options = {}
        if args.n is not None:
            options["n"] = args.n
        run_benchmark(name, **options)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    listing = "\n".join(f"  {name:17s} {desc}" for name, (_, desc) in sorted(CATALOGUE.items()))
    p = sub.add_parser(
        "bench",
        help="run benchmarks against the embedded emulator and print measured ratios",
        description="Benchmarks (each prints figures measured in one run):\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=[*sorted(CATALOGUE), "all"], help="benchmark to run")
    p.add_argument(
        "-n",
        type=int,
        default=None,
        help="problem size (positions; runs for help), where it applies",
    )
    p.set_defaults(func=run)
