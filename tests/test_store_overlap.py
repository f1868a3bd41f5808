"""A new store is made while the units already fetch: a unit writes only once it exists."""

from __future__ import annotations

import dataclasses
import uuid

import distributed
import pytest

from ps1dask.exceptions import OutputLocationError
from ps1dask.execution.tasks import StackTaskSpec, wait_for_store
from ps1dask.planning import ServiceProfile
from ps1dask.storage.location import StoreLocation


def _spec(store: StoreLocation, event: str | None) -> StackTaskSpec:
    from ps1dask.client import PS1Service

    return StackTaskSpec(
        store=store,
        service=PS1Service("http://127.0.0.1:9"),
        filters="r",
        types=("stack",),
        width=8,
        height=8,
        strategy="cutout",
        profile=ServiceProfile(),
        cache_dir=None,
        cache_bytes=None,
        store_event=event,
    )


def test_a_unit_waits_for_the_store_and_refuses_a_missing_one(dask_client, tmp_path):
    import zarr

    name = f"test-store-made-{uuid.uuid4().hex[:8]}"
    made = distributed.Event(name, client=dask_client)
    there, missing = tmp_path / "there.zarr", tmp_path / "missing.zarr"
    spec = _spec(StoreLocation.of(there), name)
    waiting = dask_client.submit(wait_for_store, spec, pure=False)
    with pytest.raises(distributed.TimeoutError):
        waiting.result(timeout=1.0)  # the event is not set: the unit waits
    zarr.open_group(str(there), mode="w")
    made.set()
    assert waiting.result(timeout=60) is None
    # the event set but no store (its creation failed): a clear error, nothing written
    refused = dask_client.submit(
        wait_for_store, dataclasses.replace(spec, store=StoreLocation.of(missing)), pure=False
    )
    with pytest.raises(OutputLocationError, match="was not created"):
        refused.result(timeout=60)
    assert not missing.exists()
    made.clear()
    # no event: the store existed before the units started
    assert (
        dask_client.submit(wait_for_store, _spec(StoreLocation.of(missing), None)).result() is None
    )
