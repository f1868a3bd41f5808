"""Targets of the benchmarks and ``ps1dask bench --repeat``: values against limits, summed
up over runs."""

from __future__ import annotations

import statistics
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.bench import registry
from ps1dask.bench.registry import BenchResult, Target, summarise_targets
from ps1dask.cli import bench as bench_cli


def test_a_target_is_met_by_its_comparison():
    assert Target("ratio", 1.05, "<=", 1.053).met
    assert not Target("ratio", 1.06, "<=", 1.053).met
    assert Target("ratio", 1.053, "<=", 1.053).met  # the limit itself meets "<="
    assert not Target("GB", 2.0, "<", 2.0).met
    assert Target("x", 1.7, ">=", 1.7).met and not Target("x", 1.69, ">=", 1.7).met
    with pytest.raises(ValueError, match="op must be one of"):
        Target("x", 1.0, "==", 1.0)


@given(st.lists(st.floats(0.5, 2.0, allow_nan=False), min_size=1, max_size=9))
def test_the_summary_counts_the_runs_that_met_each_target(values):
    results = []
    for v in values:
        r = BenchResult("b")
        r.target("job time / bound", v, "<=", 1.053)
        r.target("rate", 100 * v, ">=", 120.0)
        results.append(r)
    first, second = summarise_targets(results)
    met = sum(v <= 1.053 for v in values)
    assert first.startswith("  job time / bound: median ")
    assert f"median {statistics.median(values):.4g}," in first
    assert f"lowest {min(values):.4g}, highest {max(values):.4g} over {len(values)} runs" in first
    assert first.endswith(f"target <= 1.053 met in {met} of {len(values)}")
    rate_met = sum(100 * v >= 120.0 for v in values)
    assert second.endswith(f"target >= 120 met in {rate_met} of {len(values)}")


def test_bench_repeat_runs_a_benchmark_n_times_and_sums_up(monkeypatch, capsys):
    values = iter([1.04, 1.07, 1.05])
    calls = []

    def fake_bench(**options):
        calls.append(options)
        result = BenchResult("fake")
        result.target("job time / bound", next(values), "<=", 1.053)
        return result

    monkeypatch.setitem(registry.CATALOGUE, "fake", (__name__, "a benchmark of this test"))
    monkeypatch.setitem(registry.BENCHMARKS, "fake", fake_bench)
    args = types.SimpleNamespace(name="fake", n=7, repeat=3)
    assert bench_cli.run(args) == 0
    out = capsys.readouterr().out
    assert calls == [{"n": 7}] * 3
    assert "-- fake: run 3 of 3" in out
    assert "== fake: 3 runs" in out
    assert (
        "  job time / bound: median 1.05, lowest 1.04, highest 1.07 over 3 runs; "
        "target <= 1.053 met in 2 of 3"
    ) in out


def test_bench_repeat_must_be_positive(capsys):
    from ps1dask.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "help", "--repeat", "0"])
    assert "--repeat: must be 1 or more, got 0" in capsys.readouterr().err
