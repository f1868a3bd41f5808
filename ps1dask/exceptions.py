"""Every exception and warning ps1dask raises, in one place.

All errors derive from :class:`PS1DaskError`; errors about user input also derive from
``ValueError`` so that generic code catching ``ValueError`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class PS1DaskError(Exception):
    """Base class of every ps1dask error."""


class InvalidPositionError(PS1DaskError, ValueError):
    """One or more input positions are unusable; ``rows`` lists their 0-based indices."""

    def __init__(self, message: str, rows: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.rows = list(rows)


class InvalidSkycellError(PS1DaskError, ValueError):
    """A skycell id that is malformed or not part of the PS1 tessellation."""


class InvalidParameterError(PS1DaskError, ValueError):
    """A request parameter (size, filters, image type, ...) that the service cannot honour."""


class ServiceError(PS1DaskError):
    """The PS1 image service (or the emulator) could not give a usable answer."""

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message if url is None else f"{message} [{url}]")
        self.url = url


class ServiceHTTPError(ServiceError):
    """An HTTP error status that retrying did not cure (or that is not worth retrying)."""

    def __init__(self, message: str, status: int, url: str | None = None) -> None:
        super().__init__(message, url)
        self.status = status


class NotFoundError(ServiceHTTPError):
    """HTTP 404: the file or image does not exist on the service."""


class BadRequestError(ServiceHTTPError):
    """HTTP 400: the service rejected the parameters (e.g. an invalid skycell)."""


class ServiceUnavailableError(ServiceHTTPError):
    """The service kept answering 503/429 (overloaded or throttling us) after every retry."""


class TruncatedResponseError(ServiceError):
    """The body ended before the length the server announced."""


class BadFITSError(ServiceError):
    """The service answered, but the body is not a readable FITS file."""


class OutputLocationError(PS1DaskError, OSError):
    """The output location cannot take the store: not a directory, not writable, full, or a
    write to it failed during the job (the store stays consistent; fix and rerun)."""


class StoreMismatchError(PS1DaskError, ValueError):
    """An existing store was made for a different request."""


class JobAbortedError(PS1DaskError):
    """The job stopped early (e.g. the service kept refusing requests); resumable."""


class InvalidStoreError(PS1DaskError, ValueError):
    """A store declares sizes no ps1dask store has (a dimension beyond its cap, lengths that
    disagree, a chunk grid too large, coordinates missing): damaged or hostile; nothing is
    read from it."""


class UnfinishedStoreError(InvalidStoreError):
    """The store's creation never finished (the job making it stopped before any of its parts
    was complete): nothing was fetched into it; rerun the job, which makes it anew."""


class FileCacheError(PS1DaskError, OSError):
    """The whole-file cache directory is unsafe to trust (a symlink, another user's, writable
    by others) or failed (e.g. full): the message names it; ``ps1dask cache info|clear``."""


class PS1DaskWarning(UserWarning):
    """Base class of ps1dask warnings."""


class RetryWarning(PS1DaskWarning):
    """A request failed transiently and is being retried."""


# --- service client (ps1dask.client) -------------------------------------------------------


class ServiceConnectionError(ServiceError):
    """The connection to the service failed or was reset before a complete answer arrived."""


class ServiceTimeoutError(ServiceError):
    """The service did not connect, or stopped sending, within the configured timeouts."""


class BadResponseError(ServiceError):
    """The service answered 2xx but the body or headers are not what the request implies
    (an unparsable listing, a Content-Range that does not match the requested range, ...)."""


class BadImageError(ServiceError):
    """The service answered, but the body is not the JPEG/PNG image that was asked for."""


class RangeNotSupportedError(ServiceError):
    """The server ignored an HTTP Range request (answered 200 with the whole file)."""


class SchedulerLostError(PS1DaskError):
    """No request slot: the work runs on a Dask cluster whose scheduler this process lost
    (or its worker is closing), so no live scheduler can grant a lease. The request is not
    sent and the work unit counts as not done; a rerun on a working cluster resumes it."""


class LeaseTimeoutWarning(PS1DaskWarning):
    """The request timeouts are too long for ``distributed.scheduler.locks.lease-timeout``:
    a stalled request could outlive its semaphore lease and break the global request limit
    if lease refreshes stop (e.g. a worker's event loop is blocked)."""


class UnknownStrategyError(InvalidParameterError):
    """A fetch strategy name that no registered strategy has (see ``ps1dask.fetch.strategies``)."""


class StrategyPluginWarning(PS1DaskWarning):
    """A fetch strategy advertised by an installed package (entry point) could not be loaded."""


class S3SourceError(InvalidParameterError):
    """The S3 copy of the PS1 images (``ps1dask.s3.*``, ``--s3-endpoint``) cannot be used:
    a malformed ``s3://`` URL, an endpoint that does not answer, or a bucket it does not have.
    Raised when a job starts, before any work is submitted."""


class HTTPFailure(Exception):
    """Ends a request to the emulator with an HTTP error status and a plain-text message
    (raised by the emulator's handlers, turned into the answer by its middleware)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = dict(headers or {})
