"""numpydoc validation of the public API: every name in ``ps1dask.__all__`` and the functions
the command line calls.

Enforced numpydoc codes (the rest of numpydoc's style checks are not: summaries that run
over one line, sections such as "See Also" and "Examples", and types in the parameter list,
which the signatures' annotations already give):

- GL08: the object has a docstring;
- PR01: every parameter is documented;
- PR02: no documented parameter that does not exist (also catches prose that slipped into
  a Parameters section and is read as a parameter);
- PR07: every documented parameter has a description;
- PR10: a parameter's type is set off as ``name : type`` (``name: type`` reads as a name);
- RT01: a Returns (or Yields) section wherever the function returns something.

This module is how ``.ci/run`` validates the docstrings: it runs with the rest of pytest.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
from numpydoc.validate import validate

import ps1dask

ENFORCED = ("GL08", "PR01", "PR02", "PR07", "PR10", "RT01")

# The functions and classes the CLI subcommands call (ps1dask/cli/*), beyond ps1dask.__all__.
CLI_FACING = (
    "ps1dask.coadd._core.parse_bins",
    "ps1dask.gallery.write_gallery",
    "ps1dask.positions.reader.read_table_columns",
    "ps1dask.progress.compute_progress",
    "ps1dask.render.bulk.write_images",
    "ps1dask.storage.fits_export.cutout_filename",
    "ps1dask.storage.fits_export.cutout_fits",
    "ps1dask.viewer.app.Viewer",
)


def _public_names() -> list[str]:
    """The import path of each public function and class (PEP 562 lazy names resolved)."""
    names = []
    for name in ps1dask.__all__:
        obj = getattr(ps1dask, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            names.append(f"{obj.__module__}.{obj.__qualname__}")
    return sorted(set(names) | set(CLI_FACING))


def test_public_names_cover_the_api() -> None:
    # every lazy name resolved: a rename that drops one would silently shrink the check
    names = _public_names()
    assert len(names) >= len(CLI_FACING) + 15
    for path in CLI_FACING:
        module, _, attr = path.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr)), path


@pytest.mark.parametrize("name", _public_names())
def test_docstring_follows_numpydoc(name: str) -> None:
    report = validate(name)
    errors = [f"{code}: {message}" for code, message in report["errors"] if code in ENFORCED]
    assert not errors, f"{name} ({report['file']}:{report['file_line']}):\n" + "\n".join(errors)
