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
