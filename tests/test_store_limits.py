"""Hostile or damaged stores: absurd sizes and foreign filter names get a clear error, never
a MemoryError, a hang, or markup in the viewer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import ps1dask
from ps1dask.cli import main as cli_main
from ps1dask.exceptions import InvalidStoreError
from ps1dask.viewer.app import ViewerState


def _tiny_store(path: Path) -> Path:
    """A 3-position, 2-filter, 4x4 pixel store in the ps1dask layout."""
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {
            "stack_flux": (
                ("position", "filter", "y", "x"),
                rng.normal(size=(3, 2, 4, 4)).astype(np.float32),
            ),
            "stack_status": (("position", "filter"), np.ones((3, 2), dtype=np.uint8)),
            "ra": (("position",), np.array([1.0, 2.0, 3.0])),
        },
        coords={"position": np.arange(3), "filter": ["g", "r"]},
    )
    encoding = {"stack_flux": {"chunks": (1, 2, 4, 4)}}
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding=encoding)
    return path


def _declare(store: Path, array: str, axis: int, n: int, chunk: int | None = None) -> None:
    meta_path = store / array / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"][axis] = n
    if chunk is not None:
        meta["chunk_grid"]["configuration"]["chunk_shape"][axis] = chunk
    meta_path.write_text(json.dumps(meta))


def _everywhere(store: Path, dim: str, n: int, chunk: int | None = None) -> None:
    for meta_path in store.glob("*/zarr.json"):
        dims = json.loads(meta_path.read_text()).get("dimension_names") or []
        if dim in dims:
            _declare(store, meta_path.parent.name, dims.index(dim), n, chunk)


def test_the_tiny_store_itself_opens(tmp_path):
    ds = ps1dask.open_store(_tiny_store(tmp_path / "ok.zarr"))
    assert ds.sizes["position"] == 3 and float(ds.ra[2]) == 3.0


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s: _everywhere(s, "position", 10**12), "declares 1000000000000 along 'position'"),
        (lambda s: _everywhere(s, "y", 10**9), "declares 1000000000 along 'y'"),
        (lambda s: _everywhere(s, "filter", 6), "along 'filter'"),
        (lambda s: _everywhere(s, "position", 5 * 10**7, chunk=1), "chunks"),
        (lambda s: _declare(s, "stack_flux", 0, 10**6), "'position' has"),
        (lambda s: _everywhere(s, "position", 10**6), "last chunk"),
    ],
    ids=["positions", "pixels", "filters", "chunk-grid", "disagreeing", "unwritten-coordinate"],
)
def test_absurd_sizes_are_refused_before_reading(tmp_path, tamper, message):
    store = _tiny_store(tmp_path / "bad.zarr")
    tamper(store)
    with pytest.raises(InvalidStoreError, match=message):
        ps1dask.open_store(store)
    with pytest.raises(InvalidStoreError, match=message):
        ViewerState(store)  # what `ps1dask view` serves
    for command in (["gallery", str(store), "-o", str(tmp_path / "g")], ["view", str(store)]):
        assert cli_main(command) == 1


def _with_filters(path: Path, filters: list[str]) -> Path:
    store = _tiny_store(path)
    ds = xr.open_zarr(store, consolidated=False).load()
    ds = ds.isel(filter=[0] * len(filters)).assign_coords(filter=np.array(filters))
    ds.to_zarr(path, zarr_format=3, consolidated=False, mode="w")
    return path


@pytest.mark.parametrize(
    "filters",
    [["g", "<img src=x onerror=alert(1)>"], ["g", "rr"], ["r", "r"], ["g", "u"]],
    ids=["markup", "two-letters", "twice", "not-ps1"],
)
def test_filters_other_than_distinct_ps1_letters_are_refused(tmp_path, filters):
    store = _with_filters(tmp_path / "f.zarr", filters)
    with pytest.raises(InvalidStoreError, match="not distinct PS1 filters"):
        ViewerState(store)
    for command in (["gallery", str(store), "-o", str(tmp_path / "g")], ["view", str(store)]):
        assert cli_main(command) == 1
    assert not (tmp_path / "g").exists() or not any((tmp_path / "g").rglob("*.html"))


def test_the_viewer_page_builds_store_text_as_nodes_never_as_html():
    from ps1dask.viewer.page import PAGE_HTML

    script = PAGE_HTML[PAGE_HTML.index("<script>") :]
    for sink in ("insertAdjacentHTML", "innerHTML", "outerHTML", "document.write"):
        assert sink not in script, sink
    # the store's text (ids, filters, statuses) goes in as text and attributes
    assert "dot.title = f + ': ' + it.status[f]" in script


def test_a_group_where_an_array_belongs_is_a_damaged_store(tmp_path: Path) -> None:
    """The typed store access: arrays read back as written; a group in an array's place and
    a non-numeric number attribute raise InvalidStoreError naming them."""
    import zarr

    from ps1dask.storage.arrays import float_attr, open_store_group, read_array, zarr_array

    path = _tiny_store(tmp_path / "s.zarr")
    expected = xr.open_zarr(path)["stack_flux"].values
    group = open_store_group(str(path))
    assert np.array_equal(read_array(group, "stack_flux"), expected)
    assert np.array_equal(read_array(group, "stack_flux", slice(1, 3), 0), expected[1:3, 0])
    assert zarr_array(group, "stack_flux").shape == expected.shape
    writable = zarr.open_group(str(path), mode="r+")
    writable.create_group("warp_flux")
    writable.attrs["pixel_scale_deg"] = "small"
    group = open_store_group(str(path))
    with pytest.raises(InvalidStoreError, match="'warp_flux'.*group"):
        zarr_array(group, "warp_flux")
    with pytest.raises(InvalidStoreError, match="pixel_scale_deg"):
        float_attr(group, "pixel_scale_deg", 1.0)
    assert float_attr(group, "no_such_attribute", 2.5) == 2.5
