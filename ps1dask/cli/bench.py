"""``ps1dask bench``: measure throughput against the embedded emulator."""

from __future__ import annotations

import argparse

from ps1dask.bench.registry import CATALOGUE


def run(args: argparse.Namespace) -> int:
    from ps1dask.bench.registry import run_benchmark, summarise_targets

    names = sorted(CATALOGUE) if args.name == "all" else [args.name]
    for name in names:
        options = {}
        if args.n is not None:
            options["n"] = args.n
        results = []
        for k in range(args.repeat):
            if args.repeat > 1:
                print(f"-- {name}: run {k + 1} of {args.repeat}", flush=True)
            results.append(run_benchmark(name, **options))
        if args.repeat > 1:
            lines = summarise_targets(results)
            print(f"== {name}: {args.repeat} runs" + ("" if lines else " (no stated target)"))
            for line in lines:
                print(line, flush=True)
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


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
    p.add_argument(
        "--repeat",
        type=_positive,
        default=1,
        metavar="N",
        help=(
            "run each benchmark N times, then sum up its targets: median, lowest, highest "
            "and in how many runs each was met (one run on a shared machine is one draw)"
        ),
    )
    p.set_defaults(func=run)
