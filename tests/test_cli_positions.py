"""The command line reads positions one way (read_positions) and names its own options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import Angle
from astropy.table import Table

import ps1dask
from ps1dask.storage import STATUS
from ps1dask.tessellation import locate
from tests._cli import run_ps1dask
from tests._jobs import positions_in_one_skycell


def test_locate_reads_fits_with_vizier_names_and_sexagesimal_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ra = rng.uniform(0.0, 360.0, 6)
    dec = rng.uniform(-25.0, 80.0, 6)
    fits_path = tmp_path / "vizier.fits"
    Table({"RAJ2000": ra, "DEJ2000": dec, "Vmag": np.arange(6.0)}).write(fits_path)
    out = tmp_path / "fits.parquet"
    done = run_ps1dask("locate", str(fits_path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    got = pd.read_parquet(out)
    expected = locate(ra, dec)
    assert list(got["skycell"]) == list(expected["skycell"])
    np.testing.assert_array_equal(got["Vmag"], np.arange(6.0))  # input columns pass through
    assert list(got["id"]) == [str(i) for i in range(6)]

    # the same positions written sexagesimal (RA in hours), read by the same reader
    text = pd.DataFrame(
        {
            "name": [f"s{i}" for i in range(6)],
            "RA_ICRS": Angle(ra, "deg").to_string(unit="hour", sep=" ", precision=4, pad=True),
            "DE_ICRS": Angle(dec, "deg").to_string(
                unit="deg", sep=":", precision=3, alwayssign=True, pad=True
            ),
        }
    )
    csv_path = tmp_path / "sexagesimal.csv"
    text.to_csv(csv_path, index=False)
    done = run_ps1dask("locate", str(csv_path), "-o", str(tmp_path / "s.csv"))
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(tmp_path / "s.csv")
    assert list(got["id"]) == list(text["name"])
    np.testing.assert_allclose(got["ra"], ra, atol=1e-5)  # 0.0001 s of RA = 4e-7 deg
    np.testing.assert_allclose(got["dec"], dec, atol=1e-5)
    assert list(got["RA_ICRS"]) == list(text["RA_ICRS"])  # the input's own text, kept


def test_locate_does_not_guess_unusual_names_and_names_the_options(tmp_path: Path) -> None:
    path = tmp_path / "greek.csv"
    path.write_text("label,alpha,delta\na,10.5,20.1\nb,11.0,oops\nc,12.0,30.0\n")
    out = tmp_path / "out.csv"
    done = run_ps1dask("locate", str(path), "-o", str(out))
    assert done.returncode == 1 and not out.exists()
    assert "['label', 'alpha', 'delta']" in done.stderr
    assert "--ra-col" in done.stderr and "--dec-col" in done.stderr
    assert "ra_col" not in done.stderr and "Traceback" not in done.stderr

    named = ("--ra-col", "alpha", "--dec-col", "delta", "--id-col", "label")
    done = run_ps1dask("locate", str(path), "-o", str(out), *named)
    assert done.returncode == 1
    assert "row 1: dec" in done.stderr and "--skip-bad" in done.stderr
    assert "skip_bad" not in done.stderr

    done = run_ps1dask("locate", str(path), "-o", str(out), *named, "--skip-bad")
    assert done.returncode == 0, done.stderr
    assert "row 1: dec" in done.stderr  # what was skipped is said
    got = pd.read_csv(out)
    assert list(got["id"]) == ["a", "c"]
    assert list(got["skycell"]) == list(locate([10.5, 12.0], [20.1, 30.0])["skycell"])


@pytest.mark.parametrize("command", ["cutouts", "warps"])
def test_fetching_commands_name_their_options(command: str, tmp_path: Path) -> None:
    path = tmp_path / "greek.csv"
    path.write_text("alpha,delta\n10.5,20.1\n")
    store = tmp_path / "never.zarr"
    done = run_ps1dask(command, str(path), "-o", str(store), "--service", "http://127.0.0.1:9")
    assert done.returncode == 1 and not store.exists()
    assert "--ra-col NAME" in done.stderr and "ra_col" not in done.stderr


def test_cutouts_with_named_columns(job_emulator, dask_client, tmp_path: Path) -> None:
    table = positions_in_one_skycell(5, seed=3)
    path = tmp_path / "named.csv"
    frame = pd.DataFrame(
        {
            "label": [*table["name"], "bad"],
            "alpha": [*table["ra"], "x"],  # the last row is unusable
            "delta": [*table["dec"], 0.0],
            "name": "same",  # would be the id if --id-col were not given (and is not unique)
        }
    )
    frame.to_csv(path, index=False)
    store = tmp_path / "named.zarr"
    args = ["-o", str(store), "--filters", "r", "--size", "16", "--strategy", "cutout"]
    args += ["--service", job_emulator.url, "--scheduler", dask_client.scheduler.address]
    args += ["--ra-col", "alpha", "--dec-col", "delta", "--id-col", "label", "--skip-bad"]
    done = run_ps1dask("cutouts", str(path), *args)
    assert done.returncode == 0, done.stderr
    assert f"row {len(table)}: ra" in done.stderr
    ds = ps1dask.open_store(store)
    assert [str(v) for v in ds["id"].values] == list(table["name"])
    np.testing.assert_allclose(ds["ra"].values, table["ra"])
    assert int((ds["stack_status"].values == STATUS["ok"]).sum()) == len(table)
