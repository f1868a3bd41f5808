"""Progress reporting shared by every job and command: when to show it, and how.

Progress is on by default where someone is watching: a terminal (stderr is a TTY) or a
Jupyter kernel (whose stderr is a pipe to the notebook, not a TTY: the reason a plain
``isatty`` test showed notebooks nothing). It is off for plain pipes and files (batch logs
stay clean) unless asked for. ``ps1dask.progress`` in dask.config (``--quiet`` sets it to
false) or a function's ``progress=`` argument decide explicitly.

In a notebook the bar is a widget when ipywidgets is installed, else text on stderr (shown
by the notebook under the cell). Nothing heavy is imported here at module level: the command
line imports this module to build its parser.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)

__all__ = ["compute_progress", "in_notebook", "progress_bar", "progress_wanted"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython) kernel."""
    if "ipykernel" not in sys.modules:  # cheap test first: IPython is never imported here
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipykernel always brings IPython
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_wanted(progress: bool | None = None) -> bool:
    """Whether to show progress: ``progress`` if given, else ``ps1dask.progress`` from
    dask.config if set, else on for a terminal or a notebook and off otherwise."""
    if progress is not None:
        return bool(progress)
    configured = _configured_progress()
    if configured is not None:
        return configured
    return in_notebook() or _stderr_is_tty()


def _configured_progress() -> bool | None:
    if "dask" not in sys.modules:  # nothing can have been configured without dask
        return None
    import dask.config

    value = dask.config.get("ps1dask.progress", None)
    return None if value is None else bool(value)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stderr
        return False


def _tqdm_class() -> Any:
    # The widget bar needs ipywidgets; without it tqdm.auto would fall back to text with a
    # warning, so choose the text bar ourselves.
    if in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def progress_bar(
    total: int, *, desc: str = "ps1dask", unit: str = "it", progress: bool | None = None
) -> Any:
    """A tqdm bar (disabled when :func:`progress_wanted` says no), writing to stderr."""
    enabled = progress_wanted(progress)
    return _tqdm_class()(
        total=total,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def compute_progress(desc: str, progress: bool | None = None) -> Iterator[None]:
    """A task progress bar for the Dask computations run inside (local schedulers: the
    threaded and synchronous ones; on a distributed cluster follow the dashboard).

    Parameters
    ----------
    desc : str
        The bar's label.
    progress : bool, optional
        Show the bar: True, False, or None for the default (:func:`progress_wanted`).

    Yields
    ------
    None
        Inside the block the bar follows every local Dask computation.
    """
    if not progress_wanted(progress):
        yield
        return
    with warnings.catch_warnings():
        # tqdm.dask imports tqdm.auto, which warns in a notebook without ipywidgets; the bar
        # class is chosen here anyway
        warnings.simplefilter("ignore")
        from tqdm.dask import TqdmCallback

    with TqdmCallback(tqdm_class=_tqdm_class(), desc=desc, unit="task", file=sys.stderr):
        yield
