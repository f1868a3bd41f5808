"""``s3``: the row tiles the cutouts touch, read by byte ranges from the public S3 copy.

The same reads as ``range`` (header and tile index, then the merged tile spans of each run
of rows), sent to the bucket (:class:`~ps1dask.client.s3.S3Source`) instead of the service,
all of a group's spans at once (but not those of rows another thread of the process has
or is decoding), and decoded by the same code: the pixels equal the service's for the
same file. S3 requests never take the service's request slots.

File names are the service's, derived from the tessellation (stacks) or listed by the
service (warps); a file the bucket lacks is found by the 404 of its first read, remembered
per process, and then:

- a warp (the service listed it, so it exists there) is read from the service (``range``,
  within the 10-slot limit);
- a stack gets status ``no_data``, or with ``ps1dask.s3.fallback-to-service`` (CLI
  ``--s3-fallback``) is read from the service too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace

import dask.config

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)
from ps1dask.client.s3 import S3Source
from ps1dask.conventions import parse_filename
from ps1dask.exceptions import InvalidParameterError, NotFoundError, S3SourceError, ServiceError
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies.base import FetchContext, FetchStrategy, FetchTask
from ps1dask.fetch.strategies.byte_range import RangeStrategy
from ps1dask.fetch.strategies.tiled import cut_from_tiles, file_index
from ps1dask.planning.cost import (
    RANGE_INDEX_REQUESTS,
    GroupWork,
    ServiceProfile,
    decode_seconds,
    receive_seconds,
    row_bytes,
    s3_read_seconds,
)

logger = logging.getLogger("ps1dask")


@dataclass(frozen=True, eq=False)
class S3Strategy(FetchStrategy):
    """Byte-range reads of row tiles from the S3 copy; ``source`` is set per job
    (:meth:`for_job`), None in the registry."""

    name = "s3"
    summary = "byte ranges of the row tiles from the public S3 copy (ps1dask.s3.*)"
    preference = 1
    pool = "s3"

    source: S3Source | None = None

    def for_job(self, *, named: bool) -> S3Strategy | None:
        """A copy with the configured source, probed (reachable, measured). Named: an
        unusable source is an :class:`~ps1dask.exceptions.S3SourceError`. In ``auto``: only
        when an endpoint is configured or ``ps1dask.s3.auto`` is true, and it answers."""
        source = S3Source.from_config()  # a malformed setting is an error in any case
        if not named and source.endpoint is None and not dask.config.get("ps1dask.s3.auto"):
            return None  # the real default: offline users must not wait on AWS
        try:
            return replace(self, source=replace(source.probe(), job=uuid.uuid4().hex))
        except S3SourceError as err:
            if named:
                raise
            logger.warning("auto leaves out the s3 strategy: %s", err)
            return None

    def _source(self) -> S3Source:
        return self.source if self.source is not None else S3Source.from_config()

    def workers(self, profile: ServiceProfile) -> int:
        return self._source().max_concurrency

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        if self.source is None:
            return float("inf")  # not configured for this job
        s = self.source
        tile_bytes = work.rows_needed * row_bytes(profile)
        requests = RANGE_INDEX_REQUESTS + len(work.runs)
        reads = s3_read_seconds(
            requests, tile_bytes, s.latency_s, s.bandwidth_bps, s.max_concurrency
        )
        return reads + decode_seconds(work, profile) + receive_seconds(tile_bytes, profile)

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        return [lambda: self._fetch(group, context)]

    def _fetch(self, group: ImageGroup, context: FetchContext) -> None:
        source = self._source()
        if source.known_missing(group.filename):
            self._missing(group, context, source, None)
            return
        stats = context.service.stats

        def read_one(a: int, b: int) -> memoryview:
            return source.read_range(group.filename, a, b, stats)

        try:
            index = file_index(source.ident, group.filename, read_one)
            # all the spans of the rows this thread will decode, requested at once (no gap
            # is read: requests are cheap here); rows this process already has, or another
            # of its threads is decoding, are not fetched (cut_from_tiles takes them from
            # memory)
            fetched: dict[tuple[int, int], memoryview] = {}

            def fetch_ahead(runs: list[tuple[int, int]]) -> None:
                spans = [
                    span for a, b in runs for span in index.row_byte_ranges(slice(a, b), max_gap=0)
                ]
                fetched.update(zip(spans, source.read_ranges(group.filename, spans, stats)))

            def read(a: int, b: int) -> memoryview:
                found = fetched.get((a, b))
                if found is not None:
                    return found
                # a part of a span (a view: tile bytes are not copied)
                for (sa, sb), data in fetched.items():
                    if sa <= a and b <= sb:
                        return data[a - sa : b - sa]
                # rows shared from another thread and dropped since (evicted, or its
                # decoding failed): decoded here after all
                return read_one(a, b)

            cut_from_tiles(
                group,
                index,
                read,
                context,
                source_key=source.ident,
                gap_rows=0,
                gap_bytes=0,
                fetch_ahead=fetch_ahead,
            )
        except NotFoundError as err:
            source.mark_missing(group.filename)
            self._missing(group, context, source, err)
        except ServiceError as err:
            context.on_failure(group.members.tolist(), err)

    @staticmethod
    def _missing(
        group: ImageGroup, context: FetchContext, source: S3Source, err: NotFoundError | None
    ) -> None:
        """A file the bucket lacks: from the service (warps, or stacks when asked), or
        no_data."""
        try:
            is_warp = parse_filename(group.filename).is_warp
        except InvalidParameterError:
            is_warp = False
        if is_warp or source.fallback_to_service:
            RangeStrategy._fetch(group, context)
            return
        context.on_failure(
            group.members.tolist(),
            err
            or NotFoundError(
                f"S3: {source.address(group.filename)} is not in the bucket", 404, None
            ),
        )
