"""The benchmark catalogue, the registry the benchmark modules fill, and the result record.

The catalogue names every benchmark with its module and description, so that listing them
(``ps1dask bench --help``) imports none of the modules (which import numpy, pandas, Dask);
each module registers its functions with :func:`register` when it is imported to run.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: How a target compares a figure with its limit.
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda value, limit: value <= limit,
    "<": lambda value, limit: value < limit,
    ">=": lambda value, limit: value >= limit,
}


@dataclass(frozen=True)
class Target:
    """A figure a benchmark is judged by, and its target: met when ``value <op> limit``."""

    what: str
    value: float
    op: str
    limit: float

    def __post_init__(self) -> None:
        if self.op not in COMPARISONS:
            raise ValueError(f"target {self.what!r}: op must be one of {sorted(COMPARISONS)}")

    @property
    def met(self) -> bool:
        return COMPARISONS[self.op](self.value, self.limit)


@dataclass
class BenchResult:
    """Figures of one benchmark run; ``lines`` is the human report, ``figures`` the numbers,
    ``targets`` the figures the project's targets are stated in (what ``--repeat`` sums up)."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def target(self, what: str, value: float, op: str, limit: float) -> None:
        """Record a figure against its target (the report's lines already state it)."""
        self.targets.append(Target(what, float(value), op, float(limit)))


def summarise_targets(results: Sequence[BenchResult]) -> list[str]:
    """Lines on the targets of repeated runs of one benchmark: each target's median, lowest
    and highest value, and in how many runs it was met. One run on a shared machine is one
    draw (the same job varies by several percent here), so whether a target holds is read
    from the runs that met it, not from the best one."""
    values: dict[tuple[str, str, float], list[Target]] = {}
    for result in results:
        for t in result.targets:
            values.setdefault((t.what, t.op, t.limit), []).append(t)
    lines = []
    for (what, op, limit), runs in values.items():
        xs = sorted(t.value for t in runs)
        met = sum(t.met for t in runs)
        lines.append(
            f"  {what}: median {statistics.median(xs):.4g}, lowest {xs[0]:.4g}, highest "
            f"{xs[-1]:.4g} over {len(xs)} runs; target {op} {limit:.4g} met in {met} of "
            f"{len(xs)}"
        )
    return lines


BenchFunc = Callable[..., BenchResult]

#: name -> (module defining it, what it measures)
CATALOGUE: dict[str, tuple[str, str]] = {
    "locate": (
        "ps1dask.bench.locate_bench",
        "locate N random positions (default 10^6) and print the time",
    ),
    "sparse": (
        "ps1dask.bench.jobs_bench",
        (
            "1,000 cutouts at random positions, emulator latency 0.2 s: rate vs the 10-slot limit "
            "and the sequential recipe; auto on the same positions"
        ),
    ),
    "dense": (
        "ps1dask.bench.jobs_bench",
        "2,000 positions in a 1x1 deg field at latency 0.2 s: each strategy and auto",
    ),
    "dense-large": (
        "ps1dask.bench.jobs_bench",
        (
            "20,000 positions in 1 deg^2, grizy, 120 px, latency 0.2 s: skycell, range and "
            "auto against the decode bound, peak RSS per worker"
        ),
    ),
    "scale": (
        "ps1dask.bench.jobs_bench",
        "read and plan 10^6 positions (the target is for -n 10000000): time, memory peaks",
    ),
    "warps": (
        "ps1dask.bench.jobs_bench",
        "warp cutouts per second at emulator latency 0.2 s, against the 10-slot limit",
    ),
    "lightcurves": (
        "ps1dask.bench.lightcurve_bench",
        "forced-photometry light curves per second from a synthetic warp store",
    ),
    "lightcurve-memory": (
        "ps1dask.bench.lightcurve_bench",
        "peak memory of one light-curve partition and one coadd task for 10, 30, 100 epochs",
    ),
    "faults": (
        "ps1dask.bench.faults_bench",
        (
            "soak: 5-20% faults of each kind, all kinds at once, worker kills, a service that keeps "
            "answering 503; every store compared with a fault-free run"
        ),
    ),
    "soak": (
        "ps1dask.bench.soak_bench",
        (
            "10^5 cutouts (16 px) at latency 0.01 s through the whole job path: rate, 10-slot "
            "bound, worker and scheduler RSS at start, middle and end"
        ),
    ),
    "mosaic": (
        "ps1dask.bench.mosaic_bench",
        (
            "a 0.5 x 0.5 deg, 3-filter mosaic across a projection-cell edge (-n: side in "
            "pixels): time and peak memory against reproject_and_coadd on the same files"
        ),
    ),
    "mosaic-memory": (
        "ps1dask.bench.mosaic_bench",
        (
            "a 1 x 1 deg, 5-filter mosaic (-n: side in pixels): time and the peak resident "
            "memory of every process (target: under 4 GB)"
        ),
    ),
    "s3-sparse": (
        "ps1dask.bench.s3_bench",
        "500 positions, r, 240 px, from the emulator's S3 mode at 0.03 s: s3 vs the tutorial recipe",
    ),
    "s3-dense": (
        "ps1dask.bench.s3_bench",
        "2,000 positions in 1 deg^2, grizy, 120 px, S3 mode at 0.03 s: rate, 1 vs 2 one-core workers, recipe",
    ),
    "help": (
        "ps1dask.bench.help_bench",
        "time 'ps1dask --help' and every 'ps1dask COMMAND --help' (fresh interpreters)",
    ),
}

#: name -> function, filled as the modules of :data:`CATALOGUE` are imported
BENCHMARKS: dict[str, BenchFunc] = {}


def register(name: str) -> Callable[[BenchFunc], BenchFunc]:
    if name not in CATALOGUE:
        raise KeyError(f"benchmark {name!r} is not in ps1dask.bench.registry.CATALOGUE")

    def wrap(func: BenchFunc) -> BenchFunc:
        BENCHMARKS[name] = func
        return func

    return wrap


def run_benchmark(name: str, **options: Any) -> BenchResult:
    if name not in CATALOGUE:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(CATALOGUE)}")
    importlib.import_module(CATALOGUE[name][0])  # registers the function
    return BENCHMARKS[name](**options)
