"""``ps1dask bench``: measure throughput against the embedded emulator."""

from __future__ import annotations

import argparse

from ps1dask.bench.registry import BENCHMARKS, _load_all, run_benchmark


def run(args: argparse.Namespace) -> int:
    _load_all()
    names = sorted(BENCHMARKS) if args.name == "all" else [args.name]
    for name in names:
        options = {}
        if args.n is not None:
            options["n"] = args.n
        run_benchmark(name, **options)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    _load_all()
    listing = "\n".join(f"  {name:10s} {desc}" for name, (_, desc) in sorted(BENCHMARKS.items()))
    p = sub.add_parser(
        "bench",
        help="run benchmarks against the embedded emulator and print measured ratios",
        description="Benchmarks (each prints figures measured in one run):\n" + listing,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", choices=[*sorted(BENCHMARKS), "all"], help="benchmark to run")
    p.add_argument("-n", type=int, default=None, help="problem size (positions), where it applies")
    p.set_defaults(func=run)
