"""``cutout``: the service cuts and linearises (``fitscut.cgi``), one request per cutout."""

from __future__ import annotations

from functools import partial

import numpy as np

from ps1dask.exceptions import ServiceError
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies.base import FetchContext, FetchStrategy, FetchTask
from ps1dask.planning.cost import GroupWork, ServiceProfile, cutout_answer_bytes, receive_seconds


class CutoutStrategy(FetchStrategy):
    """One ``fitscut.cgi`` FITS request per cutout: few bytes, no local decoding."""

    name = "cutout"
    summary = "server cutouts (fitscut.cgi), one request per cutout"
    preference = 2
    serves_mosaics = False  # fitscut cuts one file around a position, at most 6000 pixels

    def cost(self, work: GroupWork, profile: ServiceProfile) -> float:
        p = profile
        latency = p.latency_s if p.cutout_latency_s is None else p.cutout_latency_s
        slot = latency + cutout_answer_bytes(work) / p.bandwidth_bps
        receive = receive_seconds(work.n_cutouts * cutout_answer_bytes(work), p)
        return work.n_cutouts * slot / p.concurrency + receive

    def tasks(self, group: ImageGroup, context: FetchContext) -> list[FetchTask]:
        return [partial(self._fetch_one, group, k, context) for k in range(len(group.members))]

    @staticmethod
    def _fetch_one(group: ImageGroup, k: int, context: FetchContext) -> None:
        member = int(group.members[k])
        try:
            pixels, header = context.service.cutout_pixels(
                group.filename,
                float(group.ra[k]),
                float(group.dec[k]),
                (context.width, context.height),
            )
        except ServiceError as err:
            context.on_failure([member], err)
            return
        context.on_cutout(member, np.asarray(pixels, dtype=np.float32), header)
