"""The benchmark registry and the result record they return."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchResult:
    """Figures of one benchmark run; ``lines`` is the human report, ``figures`` the numbers."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


BenchFunc = Callable[..., BenchResult]
BENCHMARKS: dict[str, tuple[BenchFunc, str]] = {}


def register(name: str, description: str) -> Callable[[BenchFunc], BenchFunc]:
    def wrap(func: BenchFunc) -> BenchFunc:
        BENCHMARKS[name] = (func, description)
        return func

    return wrap


def run_benchmark(name: str, **options: Any) -> BenchResult:
    _load_all()
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name][0](**options)


def _load_all() -> None:
    # Benchmarks register themselves on import.
    import importlib

    for module in (
        "ps1dask.bench.locate_bench",
        "ps1dask.bench.jobs_bench",
        "ps1dask.bench.lightcurve_bench",
        "ps1dask.bench.faults_bench",
    ):
        importlib.import_module(module)
