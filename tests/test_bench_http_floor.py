"""The plain-HTTP floor of the service-bound benchmarks: the replay sends exactly the
requests the job sent (same endpoints, same answers), 10 at a time at most."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import ps1dask
from ps1dask.bench.http_floor import replay_seconds, stack_replay, warp_replay
from ps1dask.tessellation import locate, skycell_center


def _two_skycells(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for cell in ("1405.053", "1405.054"):
        ra0, dec0 = skycell_center(cell)
        ra = ra0 + rng.uniform(-0.15, 0.15, 4 * n)
        dec = dec0 + rng.uniform(-0.15, 0.15, 4 * n)
        keep = np.flatnonzero(locate(ra, dec).skycell.to_numpy() == f"skycell.{cell}")[:n]
        frames.append(pd.DataFrame({"ra": ra[keep], "dec": dec[keep]}))
    table = pd.concat(frames, ignore_index=True)
    table.loc[len(table)] = [20.0, -70.0]  # outside the footprint: no request
    return table


@pytest.fixture()
def emu(job_emulator):
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    job_emulator.reset_metrics()
    return job_emulator


def _sent(metrics: dict) -> dict[str, int]:
    return {k: v for k, v in metrics["requests_by_endpoint"].items() if v}


@pytest.mark.parametrize("part", ["stack", "warp"])
def test_the_replay_sends_the_jobs_requests_again(part, emu, dask_client, tmp_path):
    table = _two_skycells(3, seed=5)
    store = tmp_path / f"{part}.zarr"
    job = ps1dask.cutouts if part == "stack" else ps1dask.warps
    job(
        table,
        store,
        filters="gr",
        size=24,
        strategy="cutout",
        service=emu.url,
        client=dask_client,
        progress=False,
    )
    sent = _sent(emu.metrics())
    replay = stack_replay(store, 24) if part == "stack" else warp_replay(store, 24)
    assert replay.n_requests == sum(sent.values())
    if part == "stack":
        assert len(replay.gets) == 6 * 2 and not replay.posts  # (position, filter) inside
    else:
        assert len(replay.posts) == 1  # one listing of both skycells
    emu.reset_metrics()
    seconds, failed = replay_seconds(emu.url, replay)
    assert failed == 0
    assert seconds > 0
    again = emu.metrics()
    assert _sent(again) == sent  # the same endpoints, as many times
    assert again["max_in_flight"] <= 10
    assert again["responses_by_status"] == {"200": replay.n_requests}
