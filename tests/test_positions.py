"""read_positions: every input kind, value forms, bad rows, ids, and parser properties."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import astropy.units as u
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import Angle, SkyCoord
from astropy.io import fits
from astropy.table import QTable, Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ps1dask.exceptions import InvalidParameterError, InvalidPositionError
from ps1dask.positions import (
    CLI_ARGUMENTS,
    MAX_ROWS_SHOWN,
    PYTHON_ARGUMENTS,
    PositionTable,
    read_positions,
    read_table_columns,
)
from ps1dask.tessellation import skycell_center

RNG_SEED = 20240611
ANGLE_TOL_DEG = 1e-9
ARCSEC = 1.0 / 3600.0


def _positions(n: int = 7, seed: int = RNG_SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "ra": rng.uniform(0.0, 360.0, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))),
            "name": [f"src{i:03d}" for i in range(n)],
        }
    )


def _assert_matches(table: PositionTable, expected: pd.DataFrame, ids: list[str]) -> None:
    assert list(table.frame.columns) == ["id", "ra", "dec", "row"]
    assert list(table.frame.index) == list(range(len(expected)))
    np.testing.assert_allclose(table.ra, expected["ra"].to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.dec, expected["dec"].to_numpy(), rtol=0, atol=1e-12)
    assert list(table.ids) == ids
    assert table.frame["row"].dtype == np.int64
    assert table.frame["ra"].dtype == np.float64 and table.frame["dec"].dtype == np.float64
    assert all(isinstance(i, str) for i in table.ids)
    assert len(table) == len(expected)
    assert table.skipped.empty


# --- every input kind --------------------------------------------------------------------


def test_pandas_dataframe_ignores_index_and_keeps_input() -> None:
    df = _positions().set_index(pd.Index(list("gfedcba")))
    before = df.copy()
    table = read_positions(df)
    _assert_matches(table, df, list(df["name"]))
    assert list(table.rows) == list(range(7))
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is not modified


def test_csv_file(tmp_path: Path) -> None:
    df = _positions()
    path = tmp_path / "pos.csv"
    df.to_csv(path, index=False)
    _assert_matches(read_positions(path), df, list(df["name"]))
    _assert_matches(read_positions(str(path)), df, list(df["name"]))


def test_csv_comments_padding_and_leading_zero_ids(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    path.write_text("# written by hand\n#\nRA , Dec , ID\n10.5, -20.25, 007\n11, 12, 0042 \n")
    table = read_positions(path)
    assert list(table.ids) == ["007", "0042"]  # ids stay strings: leading zeros kept
    np.testing.assert_array_equal(table.ra, [10.5, 11.0])
    np.testing.assert_array_equal(table.dec, [-20.25, 12.0])


def test_whitespace_text_and_compressed_csv(tmp_path: Path) -> None:
    df = _positions(4)
    txt = tmp_path / "pos.txt"
    txt.write_text(
        "ra dec name\n" + "".join(f"{r!r}  {d!r}\t{n}\n" for r, d, n in df.itertuples(index=False))
    )
    _assert_matches(read_positions(txt), df, list(df["name"]))
    gz = tmp_path / "pos.csv.gz"
    df.to_csv(gz, index=False)
    _assert_matches(read_positions(gz), df, list(df["name"]))


def test_parquet_file(tmp_path: Path) -> None:
    df = _positions()
    for name in ("pos.parquet", "pos.pq"):
        df.to_parquet(tmp_path / name, index=False)
        _assert_matches(read_positions(tmp_path / name), df, list(df["name"]))


def test_fits_first_table_hdu(tmp_path: Path) -> None:
    df = _positions()
    objid = np.arange(7, dtype=np.int64) + 10**17  # beyond float precision: must stay exact
    table = Table(
        {
            "RAJ2000": df["ra"].to_numpy() * u.deg,
            "DEJ2000": df["dec"].to_numpy() * u.deg,
            "objID": objid,
        }
    )
    hdul = fits.HDUList(
        [
            fits.PrimaryHDU(np.zeros((2, 2))),
            fits.ImageHDU(np.ones((2, 2))),
            fits.table_to_hdu(table),
            fits.table_to_hdu(Table({"ra": [1.0], "dec": [2.0]})),
        ]
    )
    for name in ("pos.fits", "pos.fits.gz", "pos.fit"):
        hdul.writeto(tmp_path / name)
        _assert_matches(read_positions(tmp_path / name), df, [str(i) for i in objid])


def test_fits_without_table(tmp_path: Path) -> None:
    fits.PrimaryHDU(np.zeros((2, 2))).writeto(tmp_path / "img.fits")
    with pytest.raises(InvalidParameterError, match="no table HDU"):
        read_positions(tmp_path / "img.fits")


def test_votable_file(tmp_path: Path) -> None:
    df = _positions()
    table = Table(
        {
            "_RAJ2000": df["ra"].to_numpy() * u.deg,
            "_DEJ2000": df["dec"].to_numpy() * u.deg,
            "source_id": np.arange(7, dtype=np.int64) + 2**62,
        }
    )
    for name in ("pos.xml", "pos.vot"):
        table.write(tmp_path / name, format="votable")
        _assert_matches(read_positions(tmp_path / name), df, [str(2**62 + i) for i in range(7)])


def test_votable_sexagesimal_strings_with_vizier_units(tmp_path: Path) -> None:
    table = Table(
        {"RAJ2000": ["05 34 31.94", "12 00 00.00"], "DEJ2000": ["+22 00 52.2", "-00 30 00.0"]}
    )
    table["RAJ2000"].unit = "h:m:s"  # as VizieR writes it (not an astropy unit)
    table["DEJ2000"].unit = "d:m:s"
    path = tmp_path / "viz.vot"
    with pytest.warns(Warning):  # astropy complains about the unit; we only care it reads
        table.write(path, format="votable")
    got = read_positions(path)
    want = SkyCoord(["05 34 31.94 +22 00 52.2", "12 00 00 -00 30 00"], unit=(u.hourangle, u.deg))
    np.testing.assert_allclose(got.ra, want.ra.deg, atol=ANGLE_TOL_DEG, rtol=0)
    np.testing.assert_allclose(got.dec, want.dec.deg, atol=ANGLE_TOL_DEG, rtol=0)


def test_ecsv_file_and_structured_array(tmp_path: Path) -> None:
    df = _positions()
    table = QTable(
        {
            "ra": (df["ra"].to_numpy() / 15.0) * u.hourangle,
            "dec": df["dec"].to_numpy() * u.deg,
            "name": df["name"].to_numpy(),
        }
    )
    table.write(tmp_path / "pos.ecsv")
    _assert_matches(read_positions(tmp_path / "pos.ecsv"), df, list(df["name"]))
    rec = df.to_records(index=False)
    _assert_matches(read_positions(np.asarray(rec)), df, list(df["name"]))


def test_dask_dataframe() -> None:
    df = _positions(50)
    ddf = dd.from_pandas(df, npartitions=4)
    table = read_positions(ddf)
    _assert_matches(table, df, list(df["name"]))
    assert list(table.rows) == list(range(50))


def test_astropy_table_quantities_and_units() -> None:
    df = _positions()
    qt = QTable(
        {
            "ra": (df["ra"].to_numpy() / 15.0) * u.hourangle,
            "dec": (df["dec"].to_numpy() * 60.0) * u.arcmin,
        }
    )
    _assert_matches(read_positions(qt), df, [str(i) for i in range(7)])
    tab = Table({"ra": np.radians(df["ra"].to_numpy()), "dec": df["dec"].to_numpy()})
    tab["ra"].unit = u.rad
    _assert_matches(read_positions(tab), df, [str(i) for i in range(7)])
    bad = QTable({"ra": [1.0] * u.m, "dec": [1.0] * u.deg})
    with pytest.raises(InvalidParameterError, match="not an angle"):
        read_positions(bad)


@pytest.mark.parametrize("frame", ["icrs", "fk5", "galactic"])
def test_astropy_skycoord_column(frame: str) -> None:
    df = _positions()
    coord = SkyCoord(df["ra"].to_numpy() * u.deg, df["dec"].to_numpy() * u.deg, frame="icrs")
    coord = coord.transform_to(frame)
    table = read_positions(QTable({"where": coord, "name": df["name"].to_numpy()}))
    want = coord if frame in ("icrs", "fk5") else coord.icrs
    ra = want.spherical.lon.deg
    dec = want.spherical.lat.deg
    np.testing.assert_allclose(table.ra, ra, atol=1e-9, rtol=0)
    np.testing.assert_allclose(table.dec, dec, atol=1e-9, rtol=0)
    assert list(table.ids) == list(df["name"])
    named = read_positions(
        QTable({"where": coord, "ra": np.zeros(7), "dec": np.zeros(7)}), ra_col="where"
    )
    np.testing.assert_allclose(named.ra, ra, atol=1e-9, rtol=0)


def test_bare_skycoord_dict_and_scalars() -> None:
    coord = SkyCoord([10.0, 350.0] * u.deg, [-5.0, 80.0] * u.deg)
    table = read_positions(coord)
    np.testing.assert_allclose(table.ra, [10.0, 350.0])
    one = read_positions({"ra": 12.5, "dec": -3.0, "id": "only"})
    assert list(one.ids) == ["only"] and one.ra[0] == 12.5 and one.dec[0] == -3.0
    q = read_positions({"ra": [1.0, 2.0] * u.hourangle, "dec": [3.0, 4.0] * u.deg})
    np.testing.assert_allclose(q.ra, [15.0, 30.0])


def test_position_table_returned_as_is() -> None:
    table = read_positions(_positions())
    assert read_positions(table) is table


def test_unsupported_inputs(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="cannot read positions"):
        read_positions(42)  # type: ignore[arg-type]
    (tmp_path / "pos.xlsx").write_text("x")
    with pytest.raises(InvalidParameterError, match="unknown table format"):
        read_positions(tmp_path / "pos.xlsx")
    with pytest.raises(FileNotFoundError):
        read_positions(tmp_path / "missing.csv")


# --- columns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ra", "dec", "ident"),
    [
        ("RA", "DEC", "ID"),
        ("raMean", "decMean", "objID"),
        ("ra_deg", "dec_deg", "objname"),
        ("RADEG", "DEDEG", "Name"),
        ("_RAJ2000", "_DEJ2000", "source_id"),
        ("RAJ2000", "DECJ2000", "name"),
    ],
)
def test_column_detection(ra: str, dec: str, ident: str) -> None:
    table = read_positions({"other": [0, 0], ra: [1.0, 2.0], dec: [3.0, 4.0], ident: ["a", "b"]})
    np.testing.assert_array_equal(table.ra, [1.0, 2.0])
    np.testing.assert_array_equal(table.dec, [3.0, 4.0])
    assert list(table.ids) == ["a", "b"]


def test_explicit_columns_and_id_col_false() -> None:
    data = {
        "ra": [9.0, 9.0],
        "dec": [9.0, 9.0],
        "x": [1.0, 2.0],
        "y": [3.0, 4.0],
        "id": ["a", "a"],
        "label": ["p", "q"],
    }
    table = read_positions(data, ra_col="X", dec_col="y", id_col="label")
    np.testing.assert_array_equal(table.ra, [1.0, 2.0])
    assert list(table.ids) == ["p", "q"]
    rows = read_positions(data, id_col=False)
    assert list(rows.ids) == ["0", "1"]


def test_missing_columns_message() -> None:
    with pytest.raises(InvalidParameterError) as info:
        read_positions({"lon": [1.0], "lat": [2.0]})
    message = str(info.value)
    assert "['lon', 'lat']" in message  # the columns that exist
    assert "raj2000" in message and "dej2000" in message  # what was looked for
    assert "ra_col" in message
    with pytest.raises(InvalidParameterError, match="no dec column"):
        read_positions({"ra": [1.0], "lat": [2.0]})
    with pytest.raises(InvalidParameterError, match="ra_col='alpha' is not one of"):
        read_positions({"ra": [1.0], "dec": [2.0]}, ra_col="alpha")


@pytest.mark.parametrize(
    ("ra_name", "dec_name"),
    [
        ("RAJ2000", "DEJ2000"),  # VizieR
        ("_RAJ2000", "_DEJ2000"),  # VizieR computed columns
        ("RA_ICRS", "DE_ICRS"),  # VizieR, Gaia through VizieR
        ("ra_icrs", "dec_icrs"),
        ("RAdeg", "DEdeg"),
        ("raMean", "decMean"),  # PS1's own catalogue
        ("RA_d", "DEC_d"),  # SIMBAD
    ],
)
def test_catalogue_column_names_are_recognised(ra_name: str, dec_name: str) -> None:
    table = read_positions({"mag": [15.0, 16.0], ra_name: [10.5, 200.25], dec_name: [-3.0, 45.5]})
    np.testing.assert_array_equal(table.ra, [10.5, 200.25])
    np.testing.assert_array_equal(table.dec, [-3.0, 45.5])


def test_unusual_names_are_not_guessed_and_the_message_spells_the_callers_arguments() -> None:
    data = {"alpha": [10.0], "delta": [20.0]}
    for spelling, wanted, unwanted in (
        (PYTHON_ARGUMENTS, "ra_col=...", "--ra-col"),
        (CLI_ARGUMENTS, "--ra-col NAME", "ra_col"),
    ):
        with pytest.raises(InvalidParameterError) as info:
            read_positions(data, argument_names=spelling)
        message = str(info.value)
        assert "['alpha', 'delta']" in message
        assert wanted in message and unwanted not in message
    with pytest.raises(InvalidParameterError, match="--dec-col zeta is not one of"):
        read_positions(data, ra_col="alpha", dec_col="zeta", argument_names=CLI_ARGUMENTS)
    bad = {"ra": [1.0, "x"], "dec": [0.0, 0.0]}
    with pytest.raises(InvalidPositionError) as info:
        read_positions(bad, argument_names=CLI_ARGUMENTS)
    assert "--skip-bad" in str(info.value) and "skip_bad" not in str(info.value)
    dup = {"ra": [1.0, 2.0], "dec": [0.0, 0.0], "id": ["a", "a"]}
    with pytest.raises(InvalidPositionError, match="--no-id-col"):
        read_positions(dup, argument_names=CLI_ARGUMENTS)


def test_read_table_columns_passes_every_plain_column_through() -> None:
    coord = SkyCoord([10.0, 20.0] * u.deg, [1.0, 2.0] * u.deg)
    source = QTable({"where": coord, "mag": [15.5, 16.5] * u.mag, "name": ["a", "b"]})
    source["flux"] = np.ones((2, 3))  # 2-d: cannot be one output column
    frame = read_table_columns(source)
    assert list(frame.columns) == ["mag", "name"]
    np.testing.assert_array_equal(frame["mag"], [15.5, 16.5])
    assert list(frame["name"]) == ["a", "b"]


def test_empty_table(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="no positions"):
        read_positions(pd.DataFrame({"ra": [], "dec": []}))
    path = tmp_path / "empty.csv"
    path.write_text("ra,dec\n")
    with pytest.raises(InvalidParameterError, match="no positions"):
        read_positions(path)


# --- values ------------------------------------------------------------------------------

SEXAGESIMAL_CASES = [
    ("05 34 31.94", "+22 00 52.2"),
    ("05:34:31.94", "22:00:52.2"),
    ("5h34m31.94s", "22d00m52.2s"),
    ("05h 34m 31.94s", "+22d 00m 52.2s"),
    ("23 59 59.9999", "-89 59 59.999"),
    ("00 00 00.0", "-00 30 00"),
    ("0 0 0.001", "-0 0 0.5"),
    ("12 30", "-45 30"),
    ("12:30.5", "+45:30.25"),
    ("12h", "-45d"),
    ("12.5h", "+1°2′3″"),
    ("180d30m00s", "+00 00 01"),
    ("  3 04 05.6  ", "\u221210 20 30"),
]


@pytest.mark.parametrize(("ra", "dec"), SEXAGESIMAL_CASES)
def test_sexagesimal_matches_skycoord(ra: str, dec: str) -> None:
    got = read_positions({"ra": [ra], "dec": [dec]})
    ra_unit = u.deg if "d" in ra else u.hourangle
    want_ra = Angle(ra.strip(), unit=ra_unit).deg
    want_dec = Angle(dec.strip().replace("\u2212", "-"), unit=u.deg).deg
    want = SkyCoord(want_ra * u.deg, want_dec * u.deg)
    assert abs(got.ra[0] - want.ra.deg) < ANGLE_TOL_DEG
    assert abs(got.dec[0] - want.dec.deg) < ANGLE_TOL_DEG


def test_numeric_strings_and_mixed_objects() -> None:
    table = read_positions(
        {
            "ra": ["10.5", 20, np.float32(30.5), b"12:00:00", " 1e1 "],
            "dec": [b"-1.5", "2", 3.25, -4, "+5"],
        }
    )
    np.testing.assert_allclose(table.ra, [10.5, 20.0, 30.5, 180.0, 10.0])
    np.testing.assert_allclose(table.dec, [-1.5, 2.0, 3.25, -4.0, 5.0])


def test_ra_modulo_360_and_footprint_not_checked() -> None:
    table = read_positions(
        {"ra": [-10.0, 360.0, 725.0, -1e-20, 359.9999999999], "dec": [-80.0] * 5}
    )
    np.testing.assert_allclose(table.ra, [350.0, 0.0, 5.0, 0.0, 359.9999999999], atol=1e-12)
    assert np.all((table.ra >= 0.0) & (table.ra < 360.0))
    assert len(table) == 5  # dec -80 is outside PS1 but not an error here


def test_skycell_rows_are_skycell_centres(tmp_path: Path) -> None:
    cells = ["skycell.2069.026", "1405.053", "0635.000"]
    table = read_positions({"skycell": cells})
    for i, cell in enumerate(cells):
        assert (table.ra[i], table.dec[i]) == skycell_center(cell)
    mixed = pd.DataFrame(
        {
            "ra": [1.0, np.nan, None],
            "dec": [2.0, np.nan, None],
            "skycell": ["1405.053", "skycell.2069.026", None],
        }
    )
    with pytest.raises(InvalidPositionError, match="row 2"):
        read_positions(mixed)
    got = read_positions(mixed.iloc[:2])
    assert (got.ra[0], got.dec[0]) == (1.0, 2.0)  # ra/dec win over the skycell
    assert (got.ra[1], got.dec[1]) == skycell_center("2069.026")
    path = tmp_path / "cells.csv"
    path.write_text("skycell,id\n2069.020,a\n1405.053,b\n")  # read as text: .020 stays 20
    from_csv = read_positions(path)
    assert (from_csv.ra[0], from_csv.dec[0]) == skycell_center((2069, 20))
    numeric = read_positions({"skycell": [2069.02, 1405.053]})
    assert (numeric.ra[0], numeric.dec[0]) == skycell_center((2069, 20))


def test_unknown_skycell_is_a_bad_row() -> None:
    with pytest.raises(InvalidPositionError) as info:
        read_positions({"skycell": ["2069.026", "9999.000", "2069.100", "sky.1"]})
    assert info.value.rows == [1, 2, 3]
    message = str(info.value)
    assert "row 1: skycell" in message and "9999" in message
    assert "row 2: skycell" in message and "subcell 100" in message
    assert "row 3: skycell: not a skycell id" in message


# --- bad rows ----------------------------------------------------------------------------


BAD_COLUMNS = {
    "ra": [10.0, "abc", 20.0, np.inf, 30.0, "25:00:00", "12 61 00", None, "-01:00:00", 5.0],
    "dec": [0.0, 0.0, 95.0, 0.0, np.nan, 0.0, 0.0, None, 0.0, "10h"],
    "id": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
}
BAD_REASONS = {
    1: "ra: not an angle",
    2: "dec: |dec| > 90",
    3: "ra: not a finite number",
    4: "dec: missing value",
    5: "ra: sexagesimal hours outside [0, 24)",
    6: "ra: malformed sexagesimal",
    7: "no position",
    8: "ra: negative sexagesimal RA",
    9: "dec: given in hours",
}


def test_bad_rows_one_error_with_rows_and_reasons() -> None:
    with pytest.raises(InvalidPositionError) as info:
        read_positions(BAD_COLUMNS)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.rows == sorted(BAD_REASONS)
    message = str(err)
    assert "9 of 10 rows" in message and "0-based" in message
    for row, reason in BAD_REASONS.items():
        assert f"row {row}: {reason}" in message
    assert "'abc'" in message and "'25:00:00'" in message  # offending values shown
    assert "skip_bad=True" in message


def test_many_bad_rows_are_summarised(tmp_path: Path) -> None:
    n = 1000
    dec = np.zeros(n)
    dec[::10] = 100.0
    path = tmp_path / "many.csv"
    pd.DataFrame({"ra": np.ones(n), "dec": dec}).to_csv(path, index=False)
    with pytest.raises(InvalidPositionError) as info:
        read_positions(path)
    assert info.value.rows == list(range(0, n, 10))
    message = str(info.value)
    assert f"and {n // 10 - MAX_ROWS_SHOWN} more" in message
    assert "first row after the header is row 0" in message
    assert "row 190:" in message and "row 200:" not in message


def test_skip_bad_reports_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ps1dask.positions"):
        table = read_positions(BAD_COLUMNS, skip_bad=True)
    assert list(table.ids) == ["a"]
    assert list(table.rows) == [0]
    skipped = table.skipped
    assert list(skipped.columns) == ["row", "reason", "value"]
    assert list(skipped["row"]) == sorted(BAD_REASONS)
    for row, reason in BAD_REASONS.items():
        assert skipped.set_index("row").loc[row, "reason"].startswith(reason)
    assert skipped.set_index("row").loc[1, "value"] == "'abc'"
    assert any("skipped 9 of 10 rows" in r.getMessage() for r in caplog.records)


def test_skip_bad_with_nothing_left() -> None:
    with pytest.raises(InvalidPositionError, match="No usable position is left"):
        read_positions({"ra": ["x", "y"], "dec": [0, 0]}, skip_bad=True)


# --- ids ---------------------------------------------------------------------------------


def test_ids_default_to_row_numbers_and_are_strings() -> None:
    table = read_positions({"ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.0, 0.0]})
    assert list(table.ids) == ["0", "1", "2"]
    ints = read_positions({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "objid": [10, 11]})
    assert list(ints.ids) == ["10", "11"]
    floats = read_positions({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "id": [3.0, 4.5]})
    assert list(floats.ids) == ["3", "4.5"]
    padded = read_positions({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "id": [" a ", b"b"]})
    assert list(padded.ids) == ["a", "b"]


def test_missing_id_is_a_bad_row() -> None:
    with pytest.raises(InvalidPositionError, match="row 1: id: missing value") as info:
        read_positions({"ra": [1.0, 2.0], "dec": [0.0, 0.0], "id": ["a", None]})
    assert info.value.rows == [1]


def test_duplicate_ids_always_error() -> None:
    data = {"ra": [1.0, 2.0, 3.0, 4.0, 5.0], "dec": [0.0] * 5, "name": ["x", "y", "x", "z", "y"]}
    for skip in (False, True):
        with pytest.raises(InvalidPositionError) as info:
            read_positions(data, skip_bad=skip)
        assert info.value.rows == [0, 1, 2, 4]
        message = str(info.value)
        assert "'x': rows 0, 2" in message and "'y': rows 1, 4" in message
        assert "id_col=False" in message
    assert list(read_positions(data, id_col=False).ids) == ["0", "1", "2", "3", "4"]


def test_duplicate_of_a_skipped_row_is_not_a_duplicate() -> None:
    data = {"ra": [1.0, "bad"], "dec": [0.0, 0.0], "id": ["x", "x"]}
    table = read_positions(data, skip_bad=True)
    assert list(table.ids) == ["x"] and list(table.skipped["row"]) == [1]


# --- properties --------------------------------------------------------------------------

finite_ra = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
any_ra = st.floats(allow_nan=False, allow_infinity=False)
valid_dec = st.floats(min_value=-90.0, max_value=90.0, allow_nan=False)


def _circular_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(np.asarray(a) - np.asarray(b)) % 360.0
    return np.minimum(d, 360.0 - d)


def _hms(ra_deg: float, places: int) -> str:
    """Exact sexagesimal hours (integer arithmetic so that seconds never print as 60)."""
    scale = 10**places
    ticks = round((ra_deg % 360.0) / 15.0 * 3600.0 * scale) % (24 * 3600 * scale)
    h, rest = divmod(ticks, 3600 * scale)
    m, s = divmod(rest, 60 * scale)
    return f"{h:02d}:{m:02d}:{s // scale:02d}.{s % scale:0{places}d}"


def _dms(dec_deg: float, places: int) -> str:
    scale = 10**places
    ticks = round(abs(dec_deg) * 3600.0 * scale)
    d, rest = divmod(ticks, 3600 * scale)
    m, s = divmod(rest, 60 * scale)
    sign = "-" if dec_deg < 0 else "+"
    return f"{sign}{d:02d} {m:02d} {s // scale:02d}.{s % scale:0{places}d}"


@settings(max_examples=200, deadline=None)
@given(ra=st.lists(any_ra, min_size=1, max_size=20), data=st.data())
def test_property_degrees_round_trip(ra: list[float], data: st.DataObject) -> None:
    dec = data.draw(st.lists(valid_dec, min_size=len(ra), max_size=len(ra)))
    table = read_positions({"ra": ra, "dec": dec})
    expected = np.mod(np.asarray(ra), 360.0)
    expected[expected >= 360.0] = 0.0
    assert np.all((table.ra >= 0.0) & (table.ra < 360.0))
    assert np.all(_circular_diff(table.ra, expected) <= 1e-9)
    np.testing.assert_array_equal(table.dec, dec)
    as_text = read_positions({"ra": [repr(x) for x in ra], "dec": [repr(x) for x in dec]})
    np.testing.assert_array_equal(as_text.ra, table.ra)
    np.testing.assert_array_equal(as_text.dec, table.dec)


@settings(max_examples=200, deadline=None)
@given(ra=finite_ra, dec=valid_dec)
def test_property_sexagesimal_round_trip(ra: float, dec: float) -> None:
    places = 10  # 1e-10 s of time = 1.5e-9 arcsec
    table = read_positions({"ra": [_hms(ra, places)], "dec": [_dms(dec, places)]})
    tol = 1e-6 * ARCSEC
    assert _circular_diff(table.ra, np.mod(ra, 360.0))[0] <= tol
    assert abs(table.dec[0] - dec) <= tol
    assert 0.0 <= table.ra[0] < 360.0


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(0, 23),
    m=st.integers(0, 59),
    s=st.floats(0, 59.999, allow_nan=False),
    d=st.integers(-89, 89),
    dm=st.integers(0, 59),
    ds=st.floats(0, 59.999, allow_nan=False),
    sep=st.sampled_from([":", " "]),
    negzero=st.booleans(),
)
def test_property_sexagesimal_agrees_with_astropy(
    h: int, m: int, s: float, d: int, dm: int, ds: float, sep: str, negzero: bool
) -> None:
    ra_text = f"{h:02d}{sep}{m:02d}{sep}{s:09.6f}"
    sign = "-" if (d < 0 or (d == 0 and negzero)) else "+"
    dec_text = f"{sign}{abs(d):02d}{sep}{dm:02d}{sep}{ds:09.6f}"
    got = read_positions({"ra": [ra_text], "dec": [dec_text]})
    want = SkyCoord(ra_text, dec_text, unit=(u.hourangle, u.deg))
    assert abs(got.ra[0] - want.ra.deg) < ANGLE_TOL_DEG
    assert abs(got.dec[0] - want.dec.deg) < ANGLE_TOL_DEG


garbage = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789 :+-.eEhHmMsSdD°'\"\u2212\u2032\u2033nainf", max_size=25),
    st.binary(max_size=12),
    st.none(),
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ra=st.lists(garbage, min_size=1, max_size=8), data=st.data())
def test_property_garbage_only_raises_invalid_position(
    ra: list[object], data: st.DataObject
) -> None:
    dec = data.draw(st.lists(garbage, min_size=len(ra), max_size=len(ra)))
    skycell = data.draw(st.lists(garbage, min_size=len(ra), max_size=len(ra)))
    for columns in ({"ra": ra, "dec": dec}, {"ra": ra, "dec": dec, "skycell": skycell}):
        try:
            table = read_positions(columns)
        except InvalidPositionError as err:
            assert err.rows and all(0 <= r < len(ra) for r in err.rows)
            continue
        assert np.all(np.isfinite(table.ra)) and np.all((table.ra >= 0) & (table.ra < 360))
        assert np.all(np.abs(table.dec) <= 90.0)
        skipped = read_positions(columns, skip_bad=True)  # must agree with the strict read
        np.testing.assert_array_equal(skipped.ra, table.ra)


# --- timing (printed, not asserted) ------------------------------------------------------


def test_timing_million_numeric_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = 10**6
    rng = np.random.default_rng(RNG_SEED)
    df = pd.DataFrame({"ra": rng.uniform(0, 360, n), "dec": rng.uniform(-30, 90, n)})
    df.to_parquet(tmp_path / "m.parquet", index=False)
    df.to_csv(tmp_path / "m.csv", index=False)
    times = {}
    for label, src in (
        ("DataFrame", df),
        ("Parquet", tmp_path / "m.parquet"),
        ("CSV", tmp_path / "m.csv"),
    ):
        start = time.perf_counter()
        table = read_positions(src)
        times[label] = time.perf_counter() - start
        assert len(table) == n
    with capsys.disabled():
        print(
            "\nread_positions, 10^6 numeric rows: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
        )
