"""The interface every fetch strategy implements, and what the engine hands it."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from ps1dask.client import PS1Service
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.group import Destination, ImageGroup, OnCutout, OnFailure
from ps1dask.planning.cost import GroupWork, ServiceProfile

#: A unit of work the engine runs on one of its threads.
FetchTask = Callable[[], None]


@dataclass(frozen=True)
class FetchContext:
    """What a strategy may use while fetching one work unit's groups.

    ``width`` and ``height`` are the cutout size (pixels); ``cache`` is the host's whole-file
    cache, or None unless a strategy of the job declares ``needs_file_cache``. Report every
    member of a group exactly once: ``on_cutout(member, pixels, header)`` with linear float32
    pixels (NaN off the image) from :func:`ps1dask.conventions.cut` /
    :func:`~ps1dask.conventions.linear_pixels`, or ``on_failure(members, error)`` with a
    :class:`~ps1dask.exceptions.ServiceError` (404 means "no data", anything else "failed").

    ``destination(member)``, when given, is the ``(height, width)`` float32 array where the
    member's pixels end up (a view of the work unit's own array), or None for a member
    stored otherwise: a strategy that cuts locally may fill it in place
    (:func:`ps1dask.conventions.cut_into`) and report that same array, which spares a new
    array and a copy per cutout.
    """

    width: int
    height: int
    service: PS1Service
    cache: LocalFileCache | None
    profile: ServiceProfile
    on_cutout: OnCutout
    on_failure: OnFailure
    destination: Destination | None = None


class FetchStrategy(abc.ABC):
    """A way to get cutout pixels for groups of cutouts (one group per service image).

    Subclasses set the class attributes and implement :meth:`tasks`, and :meth:`cost` to
    take part in ``strategy="auto"``; then ``register_strategy(TheClass)`` makes the name
    valid everywhere (API, CLI ``--strategy``, the engine, the cost model). Instances travel
    to the Dask workers inside each task, so they must pickle (keep them stateless).
    """

    #: The name users pass as ``strategy=`` / ``--strategy``.
    name: ClassVar[str]
    #: One line for the CLI help and docs.
    summary: ClassVar[str] = ""
    #: Whether the job must give it the host's whole-file cache (``FetchContext.cache``).
    needs_file_cache: ClassVar[bool] = False
    #: Whether ``auto`` may choose it (its :meth:`cost` is then required).
    in_auto: ClassVar[bool] = True
    #: Ties of ``auto`` go to the lowest preference (fewest requests first).
    preference: ClassVar[int] = 100
    #: Strategies with the same pool name share one thread pool per work unit; ``service``
    #: is the pool of everything that takes the service's request slots. A source with its
    #: own limits (e.g. the public S3 copy) names its own pool and sizes it in
    #: :meth:`workers`.
    pool: ClassVar[str] = "service"
    #: Whether it can fetch any box of a file (``context.width``/``height`` per group, any
    #: size): mosaics (:mod:`ps1dask.mosaic`) use only such strategies.
    serves_mosaics: ClassVar[bool] = True

    def workers(self, profile: ServiceProfile) -> int:
        """Threads of this strategy's pool in one work unit (default: the request slots)."""
        return profile.concurrency

    def for_job(self, *, named: bool) -> FetchStrategy | None:
        """The strategy a job starting now uses (called once per job, in the client).

        A strategy that reads settings or a source of its own resolves them here and returns
        a configured copy (it travels to the workers, whose config may differ). ``named``:
        the user chose it by name (then raise a clear error if it cannot work); otherwise
        it is an ``auto`` candidate, and None leaves it out of this job. Default: itself.
        """
        return self

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        """Estimated wall seconds this strategy adds for one group (see
        :mod:`ps1dask.planning.cost`); pure arithmetic, no I/O. Infinite by default."""
        return math.inf

    @abc.abstractmethod
    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        """The callables that fetch ``group`` (run concurrently on the strategy's pool);
        together they report every member through ``context``."""

    def __repr__(self) -> str:
        return f"<fetch strategy {self.name!r}>"
