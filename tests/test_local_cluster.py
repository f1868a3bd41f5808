"""The LocalCluster a job starts listens on loopback only, unless asked otherwise."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

import dask.config
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ps1dask.cli import build_parser
from ps1dask.cli.jobargs import job_config
from ps1dask.execution.runner import cluster_client


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the processes ``pids``."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.append((conn.laddr.ip, conn.laddr.port))
    return out


def test_a_jobs_local_cluster_listens_on_loopback_only():
    with cluster_client(n_workers=1, threads_per_worker=1, quiet=True) as client:
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        sockets = _listening(pids)
        dashboard_port = urlparse(client.dashboard_link).port
        assert dashboard_port in {port for _, port in sockets}
        for address, port in sockets:
            assert ipaddress.ip_address(address).is_loopback, (address, port, sockets)


def test_the_dashboard_address_is_an_option_of_job_commands():
    args = build_parser().parse_args(
        ["cutouts", "pos.csv", "-o", "s.zarr", "--dashboard-address", ":8799"]
    )
    with job_config(args):
        assert dask.config.get("ps1dask.cluster.dashboard-address") == ":8799"
    assert dask.config.get("ps1dask.cluster.dashboard-address") == "127.0.0.1:0"
    args = build_parser().parse_args(["warps", "pos.csv", "-o", "s.zarr"])
    with job_config(args):
        assert dask.config.get("ps1dask.cluster.dashboard-address") == "127.0.0.1:0"


def test_threads_per_worker_follow_the_setting_and_the_option(capsys):
    with (
        dask.config.set({"ps1dask.cluster.threads-per-worker": 3}),
        cluster_client(n_workers=1, quiet=True) as client,
    ):
        threads = [w["nthreads"] for w in client.scheduler_info()["workers"].values()]
    assert threads == [3]
    assert dask.config.get("ps1dask.cluster.threads-per-worker") == 4  # the package default
    args = build_parser().parse_args(
        ["cutouts", "pos.csv", "-o", "s.zarr", "--threads-per-worker", "6"]
    )
    with job_config(args):
        assert dask.config.get("ps1dask.cluster.threads-per-worker") == 6
    for bad in ("0", "two"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(
                ["warps", "pos.csv", "-o", "s.zarr", "--threads-per-worker", bad]
            )
        assert "--threads-per-worker" in capsys.readouterr().err


def test_neighbour_blocks_are_submitted_interleaved():
    """Each worker's block of consecutive units starts at once: submitted block after
    block, the later workers idled and the scheduler stole units from the middle of the
    first block (whose skycells' rows then had to be read by two processes)."""
    from ps1dask.execution.runner import NeighbourPlacement

    placement = NeighbourPlacement(("tcp://a", "tcp://b"), 5)
    assert [placement.where(i)["workers"] for i in range(5)] == [["tcp://a"]] * 3 + [
        ["tcp://b"]
    ] * 2
    assert all(placement.where(i)["allow_other_workers"] for i in range(5))
    assert placement.submission_order() == [0, 3, 1, 4, 2]
    three = NeighbourPlacement(("a", "b", "c"), 7)
    assert three.submission_order() == [0, 3, 6, 1, 4, 2, 5]


@given(
    st.lists(st.floats(0.0, 1e9, allow_nan=False), min_size=2, max_size=60),
    st.integers(2, 5),
)
def test_weighted_neighbour_blocks_are_contiguous_and_share_the_weight(weights, n_workers):
    """Blocks of consecutive units, each within one unit's weight of an equal share; every
    unit submitted once, the blocks interleaved."""
    from ps1dask.execution.runner import NeighbourPlacement

    workers = tuple(f"w{k}" for k in range(n_workers))
    placement = NeighbourPlacement(workers, len(weights), tuple(weights))
    blocks = [workers.index(placement.where(i)["workers"][0]) for i in range(len(weights))]
    assert blocks == sorted(blocks)
    total, heaviest = sum(weights), max(weights)
    for k in range(n_workers):
        share = sum(w for w, b in zip(weights, blocks) if b == k)
        assert share <= total / n_workers + heaviest + 1e-6 * total
    order = placement.submission_order()
    assert sorted(order) == list(range(len(weights)))
    firsts = [blocks.index(b) for b in sorted(set(blocks))]
    assert order[: len(firsts)] == firsts


def test_weighted_blocks_move_a_heavy_boundary_unit_to_the_lighter_side():
    from ps1dask.execution.runner import NeighbourPlacement

    # s3-dense's shape: heavy units (field edges, two skycells) among light ones
    weights = (3.0, 1.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0)
    placement = NeighbourPlacement(("a", "b"), 8, weights)
    blocks = [placement.where(i)["workers"][0] for i in range(8)]
    assert blocks == ["a"] * 4 + ["b"] * 4  # 6 and 6, where counting units also gives 4 + 4
    skewed = NeighbourPlacement(("a", "b"), 6, (5.0, 1.0, 1.0, 1.0, 1.0, 1.0))
    assert [skewed.where(i)["workers"][0] for i in range(6)] == ["a", "b", "b", "b", "b", "b"]
    assert skewed.submission_order() == [0, 1, 2, 3, 4, 5]
    unweighted = NeighbourPlacement(("a", "b"), 6)
    assert [unweighted.where(i)["workers"][0] for i in range(6)] == ["a"] * 3 + ["b"] * 3
