"""The command line through its real entry point (``python -m ps1dask``): a parser that
imports no heavy library, and the messages options every command shares."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import zarr
from _jobs import emulator_knobs, positions_in_one_skycell

from ps1dask.cli import build_parser
from ps1dask.storage import STATUS

#: What ``--help`` must not import: the parser is built from argparse and our own modules.
HEAVY = ("dask", "distributed", "astropy", "xarray", "zarr", "numpy", "pandas")

COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def _imported_by(args: list[str]) -> set[str]:
    """Top-level packages imported by ``python -m ps1dask ARGS`` (from -X importtime)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ps1dask", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: ps1dask" in proc.stdout
    return {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def test_every_command_is_listed():
    assert {"cutouts", "warps", "lightcurves", "coadd", "images", "gallery"} <= set(COMMANDS)


@pytest.mark.parametrize("command", ["", *COMMANDS], ids=["ps1dask", *COMMANDS])
def test_help_imports_no_heavy_library(command):
    imported = _imported_by([command, "--help"] if command else ["--help"])
    assert "ps1dask" in imported  # the listing is real
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_quiet_verbose_and_log_level(command):
    parser = build_parser()
    args = parser.parse_args([command, *_required(command), "-vv", "--log-level", "info"])
    assert args.verbose == 2 and args.log_level == "INFO" and not args.quiet
    assert parser.parse_args([command, *_required(command), "--quiet"]).quiet
    with pytest.raises(SystemExit):  # -q and -v contradict each other
        parser.parse_args([command, *_required(command), "-q", "-v"])


def _required(command: str) -> list[str]:
    """Positional arguments and required options that make ``command`` parse."""
    parser = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    out: list[str] = []
    for action in parser._actions:
        if action.option_strings and action.required:
            out += [action.option_strings[0], "x"]
        elif not action.option_strings and action.nargs is None:
            out.append(action.choices[0] if action.choices else "x")
    return out


@pytest.fixture()
def cli_job(job_emulator, dask_client, tmp_path):
    """Run ``ps1dask cutouts`` on six positions against a service refusing half the requests
    (503), on the session's cluster; returns (exit code, stderr, store)."""
    job_emulator.reset_metrics()
    csv = tmp_path / "positions.csv"
    positions_in_one_skycell(6, seed=3).head(6).to_csv(csv, index=False)
    env = {
        **os.environ,
        "DASK_PS1DASK__HTTP__ATTEMPTS": "30",
        "DASK_PS1DASK__HTTP__BACKOFF_INITIAL": "0.02",
        "DASK_PS1DASK__HTTP__BACKOFF_MAX": "0.05",
    }
    env.pop("DASK_PS1DASK__PROGRESS", None)

    def run(*options: str, extra_env: dict[str, str] | None = None) -> tuple[int, str, str]:
        store = tmp_path / f"run{len(list(tmp_path.glob('run*')))}.zarr"
        args = [str(csv), "-o", str(store), "--filters", "r", "--size", "24"]
        args += ["--strategy", "cutout", "--service", job_emulator.url, "--unit-size", "2"]
        args += ["--scheduler", dask_client.scheduler.address, *options]
        with emulator_knobs(job_emulator, fault_rate=0.5, fault_kinds=("503",), retry_after=0):
            proc = subprocess.run(
                [sys.executable, "-m", "ps1dask", "cutouts", *args],
                check=False,
                capture_output=True,
                text=True,
                timeout=300,
                env={**env, **(extra_env or {})},
            )
        status = np.asarray(zarr.open_array(str(store), path="stack_status", mode="r")[:])
        assert (status == STATUS["ok"]).all(), proc.stderr
        return proc.returncode, proc.stderr, proc.stdout

    return run


def test_verbose_shows_retries_of_refused_requests_and_the_dashboard(cli_job):
    code, err, out = cli_job("-v")
    assert code == 0, err
    assert "Dask dashboard: http" in err  # a scheduler given by the user: still announced
    # the workers' retries of the 503s, forwarded to this process's log at INFO
    retries = [line for line in err.splitlines() if " INFO ps1dask.client: retrying " in line]
    assert retries and all("ServiceUnavailableError" in line for line in retries), err
    counted = re.search(r"\((\d+) retries\)", out)
    assert counted and int(counted.group(1)) > 0, out


def test_quiet_prints_only_the_summary(cli_job):
    code, err, out = cli_job("--quiet", extra_env={"DASK_PS1DASK__PROGRESS": "true"})
    assert code == 0, err
    assert err == ""  # no dashboard link, no progress (even when configured on), no log
    assert out.startswith("store ")


def test_progress_is_off_for_a_pipe_unless_asked(cli_job):
    code, err, _ = cli_job()
    assert code == 0, err
    assert "Dask dashboard:" in err and "INFO" not in err
    assert "ps1dask:" not in err  # stderr is a pipe: no bar by default
    code, err, _ = cli_job(extra_env={"DASK_PS1DASK__PROGRESS": "true"})
    assert code == 0, err
    assert "ps1dask: 100%" in err and "6/6" in err  # asked for: the bar, to the end


_PACKAGE_CHECK = """
import sys
import ps1dask
assert not {"dask", "distributed", "astropy", "xarray", "zarr"} & set(sys.modules), "eager"
assert {"cutouts", "warps", "lightcurves", "open_store", "JobHandle"} <= set(dir(ps1dask))
import ps1dask.lightcurves.store  # the subpackage, imported directly
assert callable(ps1dask.lightcurves) and ps1dask.lightcurves.__module__ == "ps1dask.lightcurves.store"
from ps1dask.client.retry import RetryPolicy  # config defaults registered without ps1dask.*
assert RetryPolicy.from_config().attempts == 6
from ps1dask import cutouts, read_positions
assert cutouts.__module__ == "ps1dask.jobs" and ps1dask.__version__
print("ok")
"""


def test_import_ps1dask_is_lazy_and_complete():
    proc = subprocess.run(
        [sys.executable, "-c", _PACKAGE_CHECK],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
