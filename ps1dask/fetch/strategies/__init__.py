"""Fetch strategies as plug-ins: how the pixels of a group of cutouts are obtained.

A strategy is one :class:`FetchStrategy` subclass in one module: its ``name``, whether it
``needs_file_cache``, its ``cost`` for ``auto`` (built from the terms of
:mod:`ps1dask.planning.cost`), its thread ``pool``, and its ``tasks`` (the fetch). The
registry below is the one list every layer reads: the API and CLI choices
(:func:`strategy_choices`), the cost model (:func:`auto_candidates`), the task set-up
(:func:`strategies_for`, which also says whether a job needs the file cache) and the engine
(:func:`get_strategy`). An unknown name is an :class:`~ps1dask.exceptions.UnknownStrategyError`
everywhere.

Built in:

- ``cutout`` (:mod:`.cutout`): the service cuts and linearises, one request per cutout;
- ``skycell`` (:mod:`.skycell`): whole files through the local cache, decoded locally;
- ``range`` (:mod:`.byte_range`): HTTP Range reads of only the needed row tiles;
- ``s3`` (:mod:`.s3`): the same row tiles by byte ranges from the public S3 copy.

Adding one (walk-through in ``docs/strategies.md``)::

    from ps1dask.fetch.strategies import FetchStrategy, register_strategy

    class MyStrategy(FetchStrategy):
        name = "mine"
        in_auto = False            # or implement cost(work, profile)

        def tasks(self, group, context):
            return [lambda: ...]   # report every member via context.on_cutout/on_failure

    register_strategy(MyStrategy)  # or a "ps1dask.strategies" entry point
"""

from ps1dask.fetch.strategies.base import FetchContext, FetchStrategy, FetchTask
from ps1dask.fetch.strategies.byte_range import RangeStrategy
from ps1dask.fetch.strategies.cutout import CutoutStrategy
from ps1dask.fetch.strategies.registry import (
    AUTO,
    ENTRY_POINT_GROUP,
    auto_candidates,
    get_strategy,
    job_strategies,
    register_strategy,
    strategies_for,
    strategy_choices,
    strategy_help,
    strategy_names,
    unregister_strategy,
)
from ps1dask.fetch.strategies.s3 import S3Strategy
from ps1dask.fetch.strategies.skycell import SkycellStrategy
from ps1dask.fetch.strategies.tiled import cut_from_tiles, file_index, has_file_index

for _builtin in (CutoutStrategy, SkycellStrategy, RangeStrategy, S3Strategy):
    register_strategy(_builtin)

__all__ = [
    "AUTO",
    "ENTRY_POINT_GROUP",
    "CutoutStrategy",
    "FetchContext",
    "FetchStrategy",
    "FetchTask",
    "RangeStrategy",
    "S3Strategy",
    "SkycellStrategy",
    "auto_candidates",
    "cut_from_tiles",
    "file_index",
    "get_strategy",
    "has_file_index",
    "job_strategies",
    "register_strategy",
    "strategies_for",
    "strategy_choices",
    "strategy_help",
    "strategy_names",
    "unregister_strategy",
]
