"""The fast paths that let 10^7 positions plan in seconds give exactly the old answers.

Ids stay Arrow strings, duplicates are found from 64-bit hashes, the store order comes from
one sort of packed keys, skycell names are formatted per run, the positions digest is fed
from Arrow buffers: each is checked against the plain computation it replaces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.exceptions import InvalidPositionError
from ps1dask.planning import plan_stack_job
from ps1dask.planning.plan import _store_order
from ps1dask.positions import read_positions
from ps1dask.positions import reader as reader_module
from ps1dask.positions.reader import _string_hashes
from ps1dask.storage.layout import positions_digest
from ps1dask.tessellation import locate, skycell_names

URL = "http://127.0.0.1:1"
# few letters, so that duplicates are common; NUL and multi-byte characters on purpose
ids_text = st.text(alphabet="ab\x00é日", min_size=1, max_size=20)
id_lists = st.lists(ids_text, min_size=1, max_size=40)


def _arrow_series(values: list[str], kind: str) -> pd.Series:
    if kind == "str":
        return pd.Series(values, dtype=str)
    if kind == "object":
        return pd.Series(values, dtype=object)
    arrow = pa.large_string() if kind == "large" else pa.string()
    return pd.Series(values, dtype=pd.ArrowDtype(arrow))


@settings(max_examples=200, deadline=None)
@given(id_lists, st.integers(0, 5))
def test_equal_strings_hash_equal_wherever_they_sit_in_the_buffers(values, skip):
    for arrow in (pa.string(), pa.large_string()):
        whole = pa.array(["zz"] * skip + values, type=arrow)[skip:]  # an offset into buffers
        alone = pa.array(values, type=arrow)
        hashes = _string_hashes(whole)
        assert hashes.tolist() == _string_hashes(alone).tolist()
        for i, a in enumerate(values):
            for j, b in enumerate(values):
                if a == b:
                    assert hashes[i] == hashes[j]


@settings(max_examples=150, deadline=None)
@given(id_lists, st.sampled_from(["str", "object", "arrow", "large"]))
def test_duplicate_ids_are_exactly_those_pandas_finds(values, kind):
    n = len(values)
    data = {
        "ra": np.linspace(1.0, 50.0, n),
        "dec": np.zeros(n),
        "name": _arrow_series(values, kind),
    }
    expected = np.flatnonzero(pd.Series(values).duplicated(keep=False).to_numpy()).tolist()
    if expected:
        with pytest.raises(InvalidPositionError, match="used by more than one row") as info:
            read_positions(pd.DataFrame(data))
        assert info.value.rows == expected
    else:
        assert list(read_positions(pd.DataFrame(data)).ids) == values


def test_colliding_hashes_are_compared_exactly(monkeypatch):
    # a hash that collides for every id of the same length: only string comparison remains
    def by_length(strings: pa.Array) -> np.ndarray:
        return np.asarray(pa.compute.utf8_length(strings), dtype=np.uint64)

    monkeypatch.setattr(reader_module, "_string_hashes", by_length)
    unique = ["ab", "ba", "aa", "bb", "a", "b"]
    table = read_positions({"ra": np.arange(1.0, 7.0), "dec": np.zeros(6), "name": unique})
    assert list(table.ids) == unique
    twice = pd.DataFrame(
        {"ra": np.arange(1.0, 7.0), "dec": np.zeros(6), "name": ["ab", "ba", "ab", "x", "y", "x"]}
    )
    with pytest.raises(InvalidPositionError) as info:
        read_positions(twice)
    assert info.value.rows == [0, 2, 3, 5]
    assert "'ab': rows 0, 2" in str(info.value) and "'x': rows 3, 5" in str(info.value)


@pytest.mark.parametrize("kind", ["str", "arrow", "large"])
def test_arrow_text_ids_are_read_as_text_with_their_bad_rows(kind):
    names = _arrow_series([" a ", "b", "  ", "d"], kind)
    with pytest.raises(InvalidPositionError, match=r"row 2: id: missing value \(value: '  '\)"):
        read_positions(pd.DataFrame({"ra": [1.0, 2.0, 3.0, 4.0], "dec": [0.0] * 4, "id": names}))
    table = read_positions(
        pd.DataFrame({"ra": [1.0, 2.0, 3.0, 4.0], "dec": [0.0] * 4, "id": names}), skip_bad=True
    )
    assert list(table.ids) == ["a", "b", "d"] and list(table.skipped["row"]) == [2]
    # a column with a missing value takes the general path: the same report
    missing = _arrow_series(["a", None, "c", "d"], kind)
    with pytest.raises(InvalidPositionError, match="row 1: id: missing value"):
        read_positions(pd.DataFrame({"ra": [1.0, 2.0, 3.0, 4.0], "dec": [0.0] * 4, "id": missing}))


def test_plan_keeps_each_arrow_id_with_its_position():
    rng = np.random.default_rng(5)
    n = 3000
    ids = [f"src-{i:05d}" for i in rng.permutation(n)]
    frame = pd.DataFrame(
        {"ra": rng.uniform(0, 360, n), "dec": rng.uniform(-30, 85, n), "name": ids}
    )
    plan = plan_stack_job(read_positions(frame), filters="r", size=32, service_url=URL)
    stored = np.asarray(plan.positions.id, dtype=object)
    assert stored.tolist() == [ids[i] for i in plan.order]
    assert plan.request.positions_digest == positions_digest(
        np.array(ids, dtype=object), frame["ra"].to_numpy(), frame["dec"].to_numpy()
    )
    cells = locate(frame["ra"].to_numpy()[plan.order], frame["dec"].to_numpy()[plan.order])
    assert plan.positions.skycell.tolist() == cells["skycell"].tolist()


small_ints = st.integers(-3, 3)
key_arrays = st.integers(0, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.lists(small_ints, min_size=n, max_size=n),
        st.lists(st.integers(-(2**40), 2**40), min_size=n, max_size=n),
    )
)


@settings(max_examples=300, deadline=None)
@given(key_arrays, st.booleans())
def test_store_order_is_the_lexsort_order(keys, wide):
    flags, small, big = (np.array(k) for k in keys)
    flags = flags.astype(bool)
    small = small.astype(np.int64)
    big = big.astype(np.int64) if wide else big.astype(np.int64) // 2**30
    n = len(flags)
    expected = np.lexsort((np.arange(n), big, small, flags))
    assert _store_order(flags, small, big).tolist() == expected.tolist()


def test_store_order_falls_back_to_lexsort_past_63_bits():
    a = np.array([2**40, -(2**40), 0, 5], dtype=np.int64)
    b = np.array([2**30, 2**30, -(2**30), 0], dtype=np.int64)
    assert _store_order(a, b).tolist() == np.lexsort((np.arange(4), b, a)).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([-1, 635, 636, 2643]), min_size=0, max_size=80), st.booleans())
def test_skycell_names_grouped_or_not(projcells, grouped):
    projcell = np.array(projcells, dtype=np.int64)
    if grouped:
        projcell = np.sort(projcell)
    subcell = np.where(projcell < 0, -1, projcell % 100)
    expected = [f"skycell.{p:04d}.{s:03d}" if p >= 0 else "" for p, s in zip(projcell, subcell)]
    assert skycell_names(projcell, subcell).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=30), st.integers(0, 3))
def test_positions_digest_from_arrow_equals_the_joined_text(values, skip):
    rng = np.random.default_rng(len(values))
    ra, dec = rng.uniform(0, 360, len(values)), rng.uniform(-30, 80, len(values))
    expected = positions_digest(np.array(values, dtype=object), ra, dec)
    for arrow in (pa.string(), pa.large_string()):
        ids = pa.array(["x"] * skip + values, type=arrow)[skip:]
        assert positions_digest(ids, ra, dec) == expected
