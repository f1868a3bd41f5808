"""Checks of the output location, before a job touches it.

A job must fail with a clear message *before* it changes anything when its store cannot be
written: a path under a file, a read-only directory or filesystem, a store whose arrays are
read-only. (A disk that fills up during the job is reported by the runner: each unit writes
its status last, so the store stays consistent and a rerun resumes.)
"""

from __future__ import annotations

import os
from pathlib import Path

from ps1dask.exceptions import OutputLocationError

__all__ = ["check_output_location"]


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        try:
            if candidate.exists() or candidate.is_symlink():
                return candidate
        except OSError:
            continue
    return Path(path.anchor or ".")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _refuse(message: str) -> OutputLocationError:
    return OutputLocationError(message)


def check_output_location(
    path: str | os.PathLike[str], *, replace: bool = False, write: bool = False
) -> None:
    """Raise :class:`~ps1dask.exceptions.OutputLocationError` if a store cannot go at ``path``.

    Always: every existing ancestor must be a directory, and a path that does not exist yet
    must be creatable (its nearest existing ancestor writable). ``replace=True`` (the store
    will be deleted and made anew): the store's directory tree and its parent must be
    writable, so that deleting it cannot stop half-way. ``write=True`` (units are about to
    write their chunks): the store and its array directories must be writable.
    """
    p = Path(path).expanduser()
    try:
        p = p.absolute()
        existing = _nearest_existing(p)
        if existing != p:
            if not existing.is_dir():
                raise _refuse(
                    f"cannot create the store {str(p)!r}: {str(existing)!r} is a file, not a directory"
                )
            if not _writable(existing):
                raise _refuse(
                    f"cannot create the store {str(p)!r}: {str(existing)!r} is not writable "
                    "(permission denied or a read-only filesystem)"
                )
            return
        if not p.is_dir():
            return  # an existing file: the job's own check says it is not a store
        if replace:
            if not _writable(p.parent):
                raise _refuse(
                    f"cannot replace the store {str(p)!r}: {str(p.parent)!r} is not writable "
                    "(permission denied or a read-only filesystem); nothing was deleted"
                )
            for root, dirs, _files in os.walk(p):
                for d in (root, *(os.path.join(root, name) for name in dirs)):
                    if not _writable(Path(d)):
                        raise _refuse(
                            f"cannot replace the store {str(p)!r}: {d!r} is not writable; "
                            "nothing was deleted"
                        )
        if write:
            targets = [p, *(child for child in p.iterdir() if child.is_dir())]
            for target in targets:
                if not _writable(target):
                    raise _refuse(
                        f"the store {str(p)!r} is not writable ({str(target)!r}: permission "
                        "denied or a read-only filesystem)"
                    )
    except OutputLocationError:
        raise
    except OSError as err:
        raise _refuse(f"cannot use {str(p)!r} as the output store: {err}") from None
