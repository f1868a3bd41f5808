"""Fetch strategies as plug-ins: a strategy registered from outside the package runs a job,
and every layer (API, CLI choices, cost model, engine) reads the one registry."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from _jobs import assert_same_store, positions_in_one_skycell

import ps1dask
from ps1dask.cli.jobargs import add_job_arguments
from ps1dask.client import PS1Service
from ps1dask.exceptions import InvalidParameterError, ServiceError, UnknownStrategyError
from ps1dask.fetch.engine import CutoutEngine
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import (
    FetchContext,
    FetchStrategy,
    FetchTask,
    get_strategy,
    register_strategy,
    strategies_for,
    strategy_choices,
    unregister_strategy,
)
from ps1dask.planning import ServiceProfile, choose_strategy
from ps1dask.planning.cost import GroupWork, strategy_costs


class OneByOne(FetchStrategy):
    """A toy: the server cuts, but each image's cutouts go one after the other on a pool of
    the strategy's own (two threads per work unit)."""

    name = "one-by-one"
    summary = "server cutouts, one image at a time"
    in_auto = False
    pool = "one-by-one"

    def workers(self, profile: ServiceProfile) -> int:
        return 2

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        return [lambda: self._fetch(group, context)]

    @staticmethod
    def _fetch(group: ImageGroup, context: FetchContext) -> None:
        for k, member in enumerate(group.members.tolist()):
            try:
                hdu = context.service.cutout_fits(
                    group.filename,
                    float(group.ra[k]),
                    float(group.dec[k]),
                    (context.width, context.height),
                )
            except ServiceError as err:
                context.on_failure([member], err)
                continue
            context.on_cutout(member, np.asarray(hdu.data, dtype=np.float32), hdu.header)


class Free(FetchStrategy):
    """A toy that claims to cost nothing, so that ``auto`` must pick it."""

    name = "free"
    preference = 0

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        return 0.0

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        raise AssertionError("never run")


@pytest.fixture()
def one_by_one():
    registered = register_strategy(OneByOne)
    yield registered
    unregister_strategy(OneByOne.name)


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def test_a_strategy_registered_outside_the_package_runs_a_job(
    one_by_one, emu, dask_client, tmp_path
):
    table = positions_in_one_skycell(6)
    stores = {}
    for strategy in ("cutout", "one-by-one"):
        stores[strategy] = tmp_path / f"{strategy}.zarr"
        summary = ps1dask.cutouts(
            table,
            stores[strategy],
            filters="gr",
            size=40,
            strategy=strategy,
            service=emu.url,
            client=dask_client,
            progress=False,
        )
        assert summary.statuses == {"ok": 12}, (strategy, summary)
        assert summary.strategies == {strategy: 12}
        assert emu.metrics()["max_in_flight"] <= 10
    assert_same_store(stores["cutout"], stores["one-by-one"])


def test_every_layer_reads_the_registry(one_by_one):
    assert strategy_choices() == ("auto", "cutout", "skycell", "range", "s3", "one-by-one")
    assert get_strategy("one-by-one") is one_by_one
    assert set(strategies_for("auto")) == {"cutout", "skycell", "range", "s3"}  # in_auto=False
    assert strategies_for("one-by-one") == {"one-by-one": one_by_one}
    parser = argparse.ArgumentParser()
    add_job_arguments(parser, size="64", size_help="", types="stack", types_help="", unit_size=8)
    args = parser.parse_args(["positions.csv", "-o", "out", "--strategy", "one-by-one"])
    assert args.strategy == "one-by-one"
    assert "one-by-one: server cutouts, one image at a time" in " ".join(
        parser.format_help().split()
    )
    unregister_strategy("one-by-one")
    with pytest.raises(UnknownStrategyError):
        get_strategy("one-by-one")
    register_strategy(OneByOne)  # for the fixture's teardown


def test_auto_chooses_among_the_registered_strategies():
    profile = ServiceProfile()
    runs = [(1000, 1240)]
    assert choose_strategy(1, 240, 240, runs, profile) == "cutout"
    register_strategy(Free)
    try:
        assert choose_strategy(1, 240, 240, runs, profile) == "free"
        assert strategy_costs(1, 240, 240, runs, profile)["free"] == 0.0
    finally:
        unregister_strategy("free")
    assert "free" not in strategy_costs(1, 240, 240, runs, profile)


def test_unknown_strategy_names_are_errors_everywhere(emu, tmp_path):
    with pytest.raises(UnknownStrategyError, match="choose one of auto, cutout, skycell, range"):
        strategies_for("fastest")
    with pytest.raises(InvalidParameterError, match="strategy 'fastest'"):
        ps1dask.cutouts(positions_in_one_skycell(2), tmp_path / "s.zarr", strategy="fastest")
    # the engine no longer treats an unknown name as ``range``
    engine = CutoutEngine(
        width=8,
        height=8,
        service=PS1Service(emu.url),
        cache=None,
        profile=ServiceProfile(),
        on_cutout=lambda *a: None,
        on_failure=lambda *a: None,
    )
    one = np.zeros(1, dtype=np.int64)
    group = ImageGroup("x.fits", one, one * 1.0, one * 1.0, one, one, strategy="rnage")
    with pytest.raises(UnknownStrategyError, match="'rnage'"):
        engine.run([group])
    with pytest.raises(UnknownStrategyError, match="'rnage'"):
        engine.choose(group, "rnage")
    assert emu.metrics()["requests_total"] == 0


def test_registering_checks_names():
    with pytest.raises(InvalidParameterError, match="already registered"):
        register_strategy(get_strategy("cutout").__class__)

    class Auto(Free):
        name = "auto"

    with pytest.raises(InvalidParameterError, match="other than 'auto'"):
        register_strategy(Auto)
    with pytest.raises(InvalidParameterError, match="not a ps1dask FetchStrategy"):
        register_strategy(object())  # type: ignore[arg-type]
