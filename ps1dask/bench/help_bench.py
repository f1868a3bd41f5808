"""How fast the command line answers ``--help`` (its parser imports no heavy library)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from ps1dask.bench.registry import BenchResult, register


def _run_seconds(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    return time.perf_counter() - t0


def _median_seconds(command: list[str], repeat: int) -> float:
    """Median wall time of ``command`` over ``repeat`` runs (fresh interpreters)."""
    return statistics.median(_run_seconds(command) for _ in range(max(repeat, 1)))


@register("help")
def bench_help(n: int = 3) -> BenchResult:
    """``n``: runs per command (the median is printed)."""
    from ps1dask.cli import build_parser

    commands = [
        name
        for action in build_parser()._subparsers._group_actions  # type: ignore[union-attr]
        for name in getattr(action, "choices", None) or ()
    ]
    cli = [sys.executable, "-m", "ps1dask"]
    result = BenchResult("help")
    figures = {"python -c pass": _median_seconds([sys.executable, "-c", "pass"], n)}
    figures["ps1dask --help"] = _median_seconds([*cli, "--help"], n)
    for command in commands:
        figures[f"ps1dask {command} --help"] = _median_seconds([*cli, command, "--help"], n)
    for what, seconds in figures.items():
        result.say(f"{what:36s} {seconds:.3f} s")
    slowest = max(v for k, v in figures.items() if k.startswith("ps1dask"))
    result.say(
        f"slowest --help {slowest:.3f} s (target: under 0.5 s); median of {n} runs each, "
        "interpreter start-up included"
    )
    result.figures = {"seconds": figures, "slowest": slowest}
    result.target("slowest --help (s)", slowest, "<", 0.5)
    return result
