"""Package hygiene: importing ps1dask changes nothing process-wide."""

from __future__ import annotations

import json
import subprocess
import sys

# Third-party modules that install warning filters of their own when imported (aiohttp.web,
# scipy.sparse, scipy.special): imported first, so that only ps1dask's own changes show.
_PROBE = """
import json, warnings
import numpy, pandas, xarray, zarr, dask, distributed, astropy.io.fits, astropy.wcs
import requests, aiohttp.web, scipy.sparse, scipy.special
before = [repr(f) for f in warnings.filters]
import ps1dask, ps1dask.cli, ps1dask.storage, ps1dask.fetch.strategies, ps1dask.gallery
import ps1dask.render.bulk, ps1dask.viewer.app
print(json.dumps([repr(f) for f in warnings.filters if repr(f) not in before]))
"""


def test_import_installs_no_global_warning_filter():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_package_defaults_have_no_duplicate_keys():
    """A key written twice in ps1dask.yaml silently drops the first (YAML keeps the last):
    two sections of one name once hid a whole group of defaults."""
    from importlib.resources import files

    import yaml

    class _Strict(yaml.SafeLoader):
        pass

    def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        keys = [loader.construct_object(k) for k, _ in node.value]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        assert not duplicated, f"ps1dask.yaml line {node.start_mark.line + 1}: {duplicated}"
        return loader.construct_mapping(node)

    _Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    defaults = yaml.load(files("ps1dask").joinpath("ps1dask.yaml").read_text(), Loader=_Strict)
    assert defaults["ps1dask"]["cluster"]["dashboard-address"] == "127.0.0.1:0"
