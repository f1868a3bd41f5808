"""The PS1 image service client (layer 4 of ``docs/design.md``).

- :class:`PS1Service`: image lists (one position, one skycell, many positions by POST),
  FITS and JPEG/PNG cutouts, whole-file downloads, HEAD sizes and HTTP byte ranges;
- :class:`RequestThrottle`: the cluster-wide limit of simultaneous requests (a
  ``distributed.Semaphore`` obtained by name on dask, a process-local semaphore otherwise);
- :func:`retry_call` / :class:`RetryPolicy`: the one retry helper (exponential backoff with
  full jitter, Retry-After honoured);
- :class:`RequestStats`: thread-safe, picklable, mergeable request counters;
- :func:`parse_listing` / :func:`format_listing`: the ``ps1filenames.py`` table.
"""

from ps1dask.client.listing import (
    LISTING_COLUMNS,
    assign_positions,
    empty_listing,
    format_listing,
    format_positions,
    parse_listing,
)
from ps1dask.client.retry import RetryPolicy, parse_retry_after, retry_call
from ps1dask.client.service import HTTPSettings, PS1Service, is_retryable, shared_session
from ps1dask.client.stats import RequestStats
from ps1dask.client.throttle import RequestThrottle, lease_timeout_seconds

__all__ = [
    "LISTING_COLUMNS",
    "HTTPSettings",
    "PS1Service",
    "RequestStats",
    "RequestThrottle",
    "RetryPolicy",
    "assign_positions",
    "empty_listing",
    "format_listing",
    "format_positions",
    "is_retryable",
    "lease_timeout_seconds",
    "parse_listing",
    "parse_retry_after",
    "retry_call",
    "shared_session",
]
