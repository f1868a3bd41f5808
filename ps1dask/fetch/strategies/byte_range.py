"""``range``: only the row tiles the cutouts touch are read, with HTTP Range requests."""

from __future__ import annotations

from ps1dask.exceptions import ServiceError
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies.base import FetchContext, FetchStrategy, FetchTask
from ps1dask.fetch.strategies.tiled import cut_from_tiles, file_index
from ps1dask.planning.cost import (
    GroupWork,
    ServiceProfile,
    decode_seconds,
    receive_seconds,
    row_bytes,
)


class RangeStrategy(FetchStrategy):
    """HTTP Range reads of the header, the tile index and the needed row tiles."""

    name = "range"
    summary = "HTTP Range reads of only the row tiles the cutouts touch"
    preference = 1

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        p = profile
        tile_bytes = work.rows_needed * row_bytes(p)
        slot = (work.index_requests + len(work.runs)) * p.latency_s + tile_bytes / p.bandwidth_bps
        return slot / p.concurrency + decode_seconds(work, p) + receive_seconds(tile_bytes, p)

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        return [lambda: self._fetch(group, context)]

    @staticmethod
    def _fetch(group: ImageGroup, context: FetchContext) -> None:
        def read(a: int, b: int) -> bytes:
            return context.service.read_range(group.filename, a, b)

        try:
            index = file_index(context.service, group.filename, read)
            cut_from_tiles(
                group, index, read, context, source_key=context.service.url, read_pieces=True
            )
        except ServiceError as err:
            context.on_failure(group.members.tolist(), err)
