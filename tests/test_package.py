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
