"""Member codes of the work-unit fetchers: every (cell, image type) survives the round trip."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ps1dask.fetch.unit import UnitFetcher


class _Probe(UnitFetcher):
    """Only the member arithmetic; no unit, no engine."""

    def __init__(self, inner: tuple[int, ...], types: tuple[str, ...]) -> None:
        self._dims = (*inner, len(types))
        self.types = types

    def groups(self):  # pragma: no cover - not used
        return []

    def on_cutout(self, cell, image_type, pixels, header):  # pragma: no cover
        pass

    def combine(self):  # pragma: no cover
        pass

    def result(self, strategies, seconds):  # pragma: no cover
        return None


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 70),
    inner=st.lists(st.integers(1, 40), min_size=1, max_size=2),
    n_types=st.integers(1, 6),
    data=st.data(),
)
def test_members_decode_to_their_cell_and_type(n, inner, n_types, data):
    types = tuple(f"t{k}" for k in range(n_types))
    probe = _Probe(tuple(inner), types)
    index = [data.draw(st.integers(0, size - 1)) for size in inner]
    ti = data.draw(st.integers(0, n_types - 1))
    positions = np.arange(n)
    members = probe._encode(positions, *index, ti)
    assert len(set(members.tolist())) == n  # distinct per position
    for i, member in zip(positions.tolist(), members.tolist()):
        assert probe._decode(member) == ((i, *index), types[ti])
    # and distinct across the whole index space
    every = {
        int(probe._encode(np.array([i]), *idx, t)[0])
        for i in range(min(n, 3))
        for idx in np.ndindex(*inner)
        for t in range(n_types)
    }
    assert len(every) == min(n, 3) * int(np.prod(inner)) * n_types


def test_image_arrays_are_made_once_on_first_use_with_fill_values():
    import threading

    from ps1dask.storage.layout import MASK_OFF_IMAGE, WARP_VARIABLES

    probe = _Probe((1, 3), ("warp", "warp.mask"))
    probe._images, probe._images_lock = None, threading.Lock()
    probe.set_images(WARP_VARIABLES, ("warp", "warp.mask"), (2, 1, 3, 4, 5))
    assert probe._images is None  # declared, not made
    seen: list[dict] = []
    threads = [threading.Thread(target=lambda: seen.append(probe.images)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(images is seen[0] for images in seen)  # one set of arrays for every thread
    flux, mask = seen[0]["warp_flux"], seen[0]["warp_mask"]
    assert flux.shape == mask.shape == (2, 1, 3, 4, 5)
    assert flux.dtype == np.float32 and np.isnan(flux).all()
    assert mask.dtype == np.uint16 and (mask == MASK_OFF_IMAGE).all()
