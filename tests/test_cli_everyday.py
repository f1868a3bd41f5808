"""Everyday command-line behaviour: the demo's output directory, the gallery's file name."""

from __future__ import annotations

from pathlib import Path

import pytest
import zarr

from ps1dask.cli.demo import DEMO_MARKER, _prepare_output
from ps1dask.exceptions import InvalidParameterError
from tests._cli import run_ps1dask
from tests.render_helpers import stack_store


def _users_directory(path: Path) -> Path:
    path.mkdir()
    (path / "thesis.tex").write_text("months of work")
    return path


def test_demo_never_deletes_a_directory_it_did_not_make(tmp_path: Path) -> None:
    mine = _users_directory(tmp_path / "results")
    done = run_ps1dask("demo", "-o", str(mine), stdin="y\n")  # stdin is no terminal: no asking
    assert done.returncode == 1
    assert "not made by 'ps1dask demo'" in done.stderr and "--force" in done.stderr
    assert (mine / "thesis.tex").read_text() == "months of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    done = run_ps1dask("demo", "-o", str(a_file))
    assert done.returncode == 1 and a_file.read_text() == "x"


def test_demo_output_rules(tmp_path: Path) -> None:
    # new and empty directories are used, and marked as the demo's
    for out in (tmp_path / "new", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        _prepare_output(out, resume=False, force=False)
        assert (out / DEMO_MARKER).exists()
    # an earlier demo's directory is replaced; --resume keeps it
    ours = tmp_path / "new"
    (ours / "old-store").mkdir()
    _prepare_output(ours, resume=True, force=False)
    assert (ours / "old-store").exists()
    _prepare_output(ours, resume=False, force=False)
    assert not (ours / "old-store").exists() and (ours / DEMO_MARKER).exists()
    # the user's directory: refused (no terminal in tests), replaced only with force
    mine = _users_directory(tmp_path / "mine")
    with pytest.raises(InvalidParameterError, match="--force"):
        _prepare_output(mine, resume=False, force=False)
    assert (mine / "thesis.tex").exists()
    _prepare_output(mine, resume=False, force=True)
    assert not (mine / "thesis.tex").exists() and (mine / DEMO_MARKER).exists()


def test_demo_force_runs_end_to_end(tmp_path: Path) -> None:
    mine = _users_directory(tmp_path / "scratch")
    args = ["--positions", "3", "--filters", "r", "--size", "64", "--workers", "1"]
    done = run_ps1dask("demo", "-o", str(mine), "--force", "--latency", "0", *args, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not (mine / "thesis.tex").exists()
    status = zarr.open_array(str(mine / "cutouts.zarr"), path="stack_status", mode="r")[:]
    assert status.shape == (5, 1)  # 3 stars + the two odd positions of the demo table
    assert "aperture photometry" in done.stdout


def test_gallery_without_html_suffix_writes_html(job_emulator, dask_client, tmp_path: Path) -> None:
    job_emulator.configure(latency=0.0, fault_rate=0.0)
    store = stack_store(tmp_path, job_emulator, dask_client)
    done = run_ps1dask("gallery", str(store), "-o", str(tmp_path / "mygallery"))
    assert done.returncode == 0, done.stderr
    page = tmp_path / "mygallery.html"
    assert page.exists() and not (tmp_path / "mygallery").exists()
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
    assert "mygallery.html" in done.stdout


@pytest.mark.parametrize("failing", [None, "ruff check", "ruff format", "mypy"])
def test_ci_run_uses_the_active_virtual_environment(tmp_path: Path, failing: str | None) -> None:
    """``.ci/run`` (the README's test command) installs into, checks and tests with the
    venv's Python: ruff, ruff format and mypy before pytest, and a failing check fails the
    run before the tests."""
    import os
    import subprocess

    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    stub = venv_bin / "python"
    fail = f'case "$*" in *"{failing}"*) exit 3;; esac\n' if failing else ""
    stub.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\n{fail}')
    stub.chmod(0o755)
    tools = tmp_path / "tools"  # a chromium on PATH: the script must not reach for apt-get
    tools.mkdir()
    (tools / "chromium").write_text("#!/bin/sh\nexit 0\n")
    (tools / "chromium").chmod(0o755)
    env = {
        **os.environ,
        "VIRTUAL_ENV": str(venv_bin.parent),
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
    }
    script = Path(__file__).resolve().parents[1] / ".ci" / "run"
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("-m pip install") and ".[test]" in lines[0]
    steps = [
        "-m ruff check ps1dask tests",
        "-m ruff format --check ps1dask tests",
        "-m mypy ps1dask",
        "-m pytest",
    ]
    if failing is None:
        assert done.returncode == 0, done.stderr
        assert len(lines) == 1 + len(steps)
        assert all(line.startswith(step) for line, step in zip(lines[1:], steps))
    else:
        assert done.returncode == 3
        ran = lines[1:]
        assert ran[-1].startswith("-m " + failing)  # stopped at the failing check
        assert not any(line.startswith("-m pytest") for line in ran)
        assert all(line.startswith(step) for line, step in zip(ran, steps))


def test_readme_first_command_makes_and_uses_a_venv() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].split("\n", 1)[0]
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0].startswith("python3 -m venv ") and steps[1].startswith(". ")
    assert steps[1].endswith("/bin/activate") and steps[-1] == "ps1dask demo"
    assert any(s.startswith("pip install -e .") for s in steps)
