"""``ps1dask cache info|clear``: where the whole-file cache lives, how full it is; empty it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ps1dask.fetch.cache import LocalFileCache


def _cache(args: argparse.Namespace) -> LocalFileCache:
    from ps1dask.fetch.cache import LocalFileCache

    return LocalFileCache(args.cache_dir)


def info(args: argparse.Namespace) -> int:
    print(_cache(args).info())
    return 0


def clear(args: argparse.Namespace) -> int:
    cache = _cache(args)
    result = cache.clear()
    print(f"removed {result.removed} files ({result.freed / 1e9:.3f} GB) from {cache.directory}")
    if result.busy:
        print(f"kept {result.busy} files that running jobs are reading; clear again later")
    return 0


_ACTIONS = {
    "info": (info, "print the cache's directory, number of files, size and budget"),
    "clear": (clear, "delete every cached file that no running job is reading"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="show or empty the whole-file cache of the skycell strategy",
        description=(
            "The skycell strategy (and auto, when it picks it) downloads whole skycell files "
            "once into a local cache shared by every job and worker process of this user on "
            "this machine, and cuts every position from them. The cache lives in "
            "ps1dask.cache.directory if set, else in the user's cache directory "
            "($XDG_CACHE_HOME/ps1dask, by default ~/.cache/ps1dask, on Linux). After each "
            "download the least recently used files that no job is reading are deleted until "
            "it holds at most ps1dask.cache.max-bytes (default 20 GB). The directory must be "
            "yours and writable by nobody else: its files are trusted as PS1 data.\n\n"
            "Examples:\n"
            "  ps1dask cache info                       # where, how many files, how full\n"
            "  ps1dask cache clear                      # delete the files no job is reading\n"
            "  ps1dask cache info --cache-dir /scratch/me/ps1cache\n"
            "  DASK_PS1DASK__CACHE__MAX_BYTES=5e9 ps1dask cutouts ...   # a 5 GB budget"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        choices=tuple(_ACTIONS),
        help="; ".join(f"{name}: {text}" for name, (_, text) in _ACTIONS.items()),
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="the cache directory, as given to 'cutouts --cache-dir' (default: "
        "ps1dask.cache.directory, else the user's cache directory)",
    )
    p.set_defaults(func=lambda args: _ACTIONS[args.action][0](args))
