"""Package defaults (``ps1dask.yaml``), registered with dask.config on import.

Read settings with ``dask.config.get("ps1dask.http.max-concurrency")``; the helpers below
only add validation where a wrong value would be dangerous.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

import dask.config
import yaml

from ps1dask.exceptions import InvalidParameterError

#: The most simultaneous requests STScI accepts from one user.
STSCI_MAX_CONCURRENCY = 10
STSCI_HOSTS = frozenset({"ps1images.stsci.edu"})


def _load_defaults() -> None:
    text = resources.files("ps1dask").joinpath("ps1dask.yaml").read_text()
    defaults = yaml.safe_load(text)
    dask.config.update_defaults(defaults)


_load_defaults()


def service_url(url: str | None = None) -> str:
    """The service base URL: ``url`` if given, else ``ps1dask.service.url``; no trailing /."""
    base = url if url is not None else str(dask.config.get("ps1dask.service.url"))
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidParameterError(f"service URL {base!r} is not an http(s) URL")
    return base.rstrip("/")


def max_concurrency(url: str | None = None) -> int:
    """Configured request limit, never above 10 for the STScI host."""
    limit = int(dask.config.get("ps1dask.http.max-concurrency"))
    if limit < 1:
        raise InvalidParameterError(f"ps1dask.http.max-concurrency must be >= 1, got {limit}")
    host = urlsplit(service_url(url)).hostname or ""
    if host in STSCI_HOSTS and limit > STSCI_MAX_CONCURRENCY:
        raise InvalidParameterError(
            f"ps1dask.http.max-concurrency={limit} exceeds STScI's limit of "
            f"{STSCI_MAX_CONCURRENCY} simultaneous requests for {host}"
        )
    return limit
