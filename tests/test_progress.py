"""When progress shows (ps1dask.progress): explicit argument, configuration, or who watches."""

from __future__ import annotations

import io
import sys

import dask
import dask.bag as db
import pytest

from ps1dask.progress import compute_progress, in_notebook, progress_bar, progress_wanted


def test_explicit_argument_wins_over_configuration():
    with dask.config.set({"ps1dask.progress": False}):
        assert progress_wanted(True) is True
        assert progress_wanted(None) is False
    with dask.config.set({"ps1dask.progress": True}):
        assert progress_wanted(False) is False
        assert progress_wanted(None) is True


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "shown"), [(io.StringIO(), False), (_Terminal(), True)])
def test_default_follows_who_watches(monkeypatch, stream, shown):
    assert not in_notebook()  # pytest is no Jupyter kernel
    monkeypatch.setattr(sys, "stderr", stream)
    with dask.config.set({"ps1dask.progress": None}):
        assert progress_wanted() is shown
        bar = progress_bar(3, desc="job", unit="pos")
        bar.update(3)
        bar.close()
    assert ("job: 100%" in stream.getvalue()) is shown


def test_compute_progress_counts_the_tasks_of_a_local_computation(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    bag = db.from_sequence(range(12), npartitions=4).map(lambda v: v * 2)
    with compute_progress("pictures", progress=True):
        total = sum(bag.compute(scheduler="threads"))
    assert total == 132
    text = stream.getvalue()
    assert "pictures: 100%" in text
    with compute_progress("pictures", progress=False):
        bag.compute(scheduler="threads")
    assert stream.getvalue() == text  # nothing more written
