"""Shared fixtures: one emulator and one local Dask cluster of worker processes per session."""

from __future__ import annotations

import contextlib
import os
import warnings

import pytest
from hypothesis import settings

os.environ.setdefault("PS1DASK_TESTING", "1")

# Property tests are seeded (the same examples every run) and never timed: Hypothesis's
# per-example deadline is a wall-clock assertion, which a loaded 2-core machine fails.
settings.register_profile("ps1dask", derandomize=True, deadline=None)
settings.load_profile("ps1dask")

#: Under CI (``CI=true``, as CI services set it) every collected test must run: a skip (no
#: Chromium for the browser tests, a missing optional package, no setpriv) fails instead.
IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _fail_skip_in_ci(report):
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {reason}"
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    return _fail_skip_in_ci((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (``pytest.importorskip``) fails under CI too."""
    return _fail_skip_in_ci((yield))


@pytest.fixture(scope="session")
def emulator_cache(tmp_path_factory):
    """Whole files rendered by the emulator, shared by every test of the session."""
    return tmp_path_factory.mktemp("emulator-cache")


@pytest.fixture(scope="session")
def job_emulator(emulator_cache):
    """An emulator for job tests (seed 0, no faults); tests reset its metrics and knobs."""
    from ps1dask.emulator import Emulator

    with Emulator(seed=0, latency=0.0, cache_dir=emulator_cache) as emu:
        yield emu


@contextlib.contextmanager
def local_cluster_client():
    """A LocalCluster of 2 worker processes x 2 threads, as on a laptop or CI box."""
    import logging

    import distributed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            dashboard_address="127.0.0.1:0",  # loopback: no dashboard for the network
            silence_logs=logging.ERROR,
        )
        # not the default client: other tests must not find a cluster they did not ask for
        client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="session")
def dask_client():
    """The session's shared cluster. Modules that kill workers or provoke failures override
    this fixture with a cluster of their own, so that nothing they do reaches other tests."""
    with local_cluster_client() as client:
        yield client
