"""Options every command takes (``-q/--quiet``, ``-v/--verbose``, ``--log-level``) and
what they set up: the ``ps1dask`` log level and handler, and progress on or off."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("messages")
    loudness = g.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no Dask dashboard link; only warnings and errors",
    )
    loudness.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more messages on stderr: -v INFO (retries, refusals by the service, each "
        "step), -vv DEBUG",
    )
    g.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help="level of ps1dask's log messages (default WARNING; overrides -v)",
    )


def log_level(args: argparse.Namespace) -> int:
    if args.log_level:
        return int(getattr(logging, args.log_level))
    if args.verbose >= 2:
        return logging.DEBUG
    return logging.INFO if args.verbose == 1 else logging.WARNING


@contextlib.contextmanager
def output_options(args: argparse.Namespace) -> Iterator[None]:
    """While a command runs: ``ps1dask`` log records go to stderr at the chosen level (and
    only there), and ``--quiet`` turns progress bars off (``ps1dask.progress: false``).
    Restored afterwards, for callers of :func:`ps1dask.cli.main` in a longer process."""
    logger = logging.getLogger("ps1dask")
    saved = (logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    logger.setLevel(log_level(args))
    logger.propagate = False  # e.g. the emulator's -v logging on the root: not twice
    logger.addHandler(handler)
    try:
        with contextlib.ExitStack() as stack:
            if args.quiet:
                import dask.config

                stack.enter_context(dask.config.set({"ps1dask.progress": False}))
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def add_scheduler_arguments(p: argparse.ArgumentParser) -> None:
    """Where the Dask work of a store command runs: ``--scheduler`` or ``--threads`` here."""
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", default=None, help="address of a Dask scheduler (default: threads here)"
    )
    where.add_argument(
        "--threads", type=int, default=None, help="threads of the local threaded scheduler"
    )


@contextlib.contextmanager
def scheduler_client(args: argparse.Namespace) -> Iterator[Any]:
    """A client of the ``--scheduler`` address, after printing its dashboard link (where to
    watch: not with ``--quiet``); None without ``--scheduler`` (local threads, with a
    progress bar instead)."""
    if not getattr(args, "scheduler", None):
        yield None
        return
    import distributed

    with distributed.Client(args.scheduler) as client:
        if not args.quiet:
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr, flush=True)
        yield client
