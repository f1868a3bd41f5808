"""Benchmarks: each measures and prints its figures (and ratios) from one run.

Run them with ``ps1dask bench NAME``; every network benchmark talks to an in-process
emulator over loopback HTTP, never to STScI.
"""

from ps1dask.bench.registry import BENCHMARKS, CATALOGUE, BenchResult, run_benchmark

__all__ = ["BENCHMARKS", "CATALOGUE", "BenchResult", "run_benchmark"]
