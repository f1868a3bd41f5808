"""``skycell``: each whole file is downloaded once into the host's cache, then the row tiles
the cutouts touch are decoded locally."""

from __future__ import annotations

import os

from ps1dask.exceptions import ServiceError
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies.base import FetchContext, FetchStrategy, FetchTask
from ps1dask.fetch.strategies.tiled import cut_from_tiles, file_index
from ps1dask.planning.cost import GroupWork, ServiceProfile, decode_seconds, receive_seconds


class SkycellStrategy(FetchStrategy):
    """Whole skycell files through the bounded local cache; wins for dense fields."""

    name = "skycell"
    summary = "whole skycell files, downloaded once into the local cache and cut locally"
    needs_file_cache = True
    preference = 0

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        p = profile
        slot = 0.0 if work.cached else p.latency_s + p.file_bytes / p.bandwidth_bps
        receive = receive_seconds(0.0 if work.cached else p.file_bytes, p)
        return slot / p.concurrency + decode_seconds(work, p) + receive

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        return [lambda: self._fetch(group, context)]

    @staticmethod
    def _fetch(group: ImageGroup, context: FetchContext) -> None:
        if context.cache is None:
            raise RuntimeError("the skycell strategy needs a file cache")
        try:
            handle, _ = context.cache.open(group.filename, context.service)
        except ServiceError as err:
            context.on_failure(group.members.tolist(), err)
            return
        with handle:
            fd = handle.fileno()

            def read(a: int, b: int) -> bytes:
                return os.pread(fd, b - a, a)

            index = file_index(context.service, group.filename, read)
            cut_from_tiles(group, index, read, context, source_key=context.service.url)
