"""Where a store lives (a local directory or an object-store URL), and checks of it before a
job touches it.

:class:`StoreLocation` is the one place where a user's ``store`` argument (a path, a
``file://``, ``s3://``, ``gs://``, ``az://``/``abfs://``, ``memory://`` ... URL) and its
``storage_options`` (the pandas/xarray convention: fsspec's keyword arguments, e.g.
``endpoint_url``, ``key``, ``secret``, ``anon``, ``client_kwargs``) become the object Zarr
opens. Every writer and reader of a store goes through it, so local and remote stores share
one code path: the same chunk writes, status written last, resume and request checks.

Remote stores are opened with zarr's :class:`zarr.storage.FsspecStore` (s3fs, gcsfs,
adlfs). Measured against ``zarr.storage.ObjectStore`` (obstore 0.12, Rust) on moto's server
in its own process over loopback, a store of 2,000 positions x 5 filters of 120x120 float32
(576 MB, chunks of 58 positions written unit by unit as the jobs do, image then status), three
rounds on a loaded 2-core machine: writing 680-1,280 cutouts/s with fsspec and 730-1,530
with obstore (the same within the noise: moto's writes bound both); reading chunk by chunk
100-290 MB/s vs 320-440 MB/s, and opening one array (a small GET) 29-54 ms vs 10-17 ms:
obstore reads 1.5-3x faster. fsspec is kept for the store all the same: jobs write (where the
two tie), and s3fs takes the storage options users already pass to pandas, xarray and dask
as they are (no mapping, no option left unsupported), finds a bucket's region by itself,
reads credentials through botocore's whole chain (``AWS_*`` variables, profiles, SSO,
instance and pod roles), and the same code serves gs://, az:// and memory://. A switch
would happen in :meth:`StoreLocation.zarr_store` alone; see docs/design.md and
docs/measurements/store_backends.py (the measurement).

A job must fail with a clear message *before* it changes anything when its store cannot be
written: a path under a file, a read-only directory or filesystem, a store whose arrays are
read-only; for a URL, a missing bucket, refused credentials or an unreachable endpoint. (A
disk that fills up during the job is reported by the runner: each unit writes its status
last, so the store stays consistent and a rerun resumes.)
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ps1dask.exceptions import InvalidParameterError, OutputLocationError, PS1DaskError

__all__ = [
    "StoreLike",
    "StoreLocation",
    "check_output_location",
    "parse_storage_options",
]

_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$")
#: Protocols whose data live only in one process (fsspec's in-memory filesystem).
IN_PROCESS_PROTOCOLS = frozenset({"memory"})


@dataclass(frozen=True)
class StoreLocation:
    """A store's location: ``url`` (an absolute local path, or ``protocol://...``) and the
    ``storage_options`` of a URL. Small and picklable: it travels inside every task.

    Build it with :meth:`of`; :meth:`zarr_store` gives what Zarr and xarray open.
    """

    url: str
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        store: str | os.PathLike[str] | StoreLocation,
        storage_options: Mapping[str, Any] | None = None,
    ) -> StoreLocation:
        """Normalise a user's ``store`` (and ``storage_options``) into a location.

        Plain paths and ``file://`` URLs are local directories (no storage options allowed,
        as in pandas); any other ``protocol://`` URL must name a protocol fsspec knows, with
        its package installed (``gs://`` needs gcsfs, ``az://`` adlfs).
        """
        if isinstance(store, StoreLocation):
            if storage_options and dict(storage_options) != dict(store.storage_options):
                return cls(store.url, dict(storage_options))
            return store
        if not isinstance(store, str | os.PathLike):
            raise InvalidParameterError(
                f"store must be a path or a URL, not {type(store).__name__}"
            )
        options = dict(storage_options or {})
        text = os.fspath(store)
        match = _URL.match(text) if isinstance(text, str) else None
        if match is None or match["protocol"].lower() in ("file", "local"):
            local = match["rest"] if match is not None else text
            if not local:
                raise InvalidParameterError(f"store {text!r}: empty path")
            if options:
                raise InvalidParameterError(
                    f"storage_options are for object-store URLs (s3://, gs://, ...), not the "
                    f"local path {text!r}"
                )
            return cls(str(Path(local).expanduser().absolute()))
        protocol = match["protocol"].lower()
        rest = match["rest"].strip("/")
        if not rest and protocol not in IN_PROCESS_PROTOCOLS:
            raise InvalidParameterError(f"store {text!r}: the URL names no bucket or container")
        _filesystem_class(protocol, text)
        return cls(f"{protocol}://{rest}", options)

    # -- what it is ------------------------------------------------------------------

    @property
    def is_local(self) -> bool:
        """True for a directory on this machine's file system."""
        return _URL.match(self.url) is None

    @property
    def protocol(self) -> str:
        """``file`` for local stores, else the URL's scheme (``s3``, ``gs``, ``memory`` ...)."""
        match = _URL.match(self.url)
        return "file" if match is None else match["protocol"]

    @property
    def in_process(self) -> bool:
        """True when the store exists only in this process (``memory://``)."""
        return self.protocol in IN_PROCESS_PROTOCOLS

    @property
    def path(self) -> Path:
        """The local directory (only for :attr:`is_local` locations)."""
        if not self.is_local:
            raise InvalidParameterError(f"{self.url} is not a local directory")
        return Path(self.url)

    def __str__(self) -> str:
        # never the storage options: they may hold secrets
        return self.url

    def __repr__(self) -> str:
        # option names only: values may be secrets, and Dask logs the arguments of failed tasks
        names = ", ".join(sorted(self.storage_options))
        return f"StoreLocation({self.url!r}, storage_options=<{names or 'none'}>)"

    def child(self, *parts: str) -> str:
        """The key (local path or URL) of ``parts`` inside the store."""
        return "/".join([self.url.rstrip("/"), *parts])

    # -- opening --------------------------------------------------------------------

    def zarr_store(self) -> Any:
        """What :func:`zarr.open_group` / :func:`xarray.open_zarr` take for this store:
        the local path itself (Zarr makes its ``LocalStore``), or a writable
        :class:`zarr.storage.FsspecStore` (opened read-only by Zarr in mode ``"r"``)."""
        if self.is_local:
            return self.url
        return _fsspec_store(self.url, self.storage_options)

    def filesystem(self) -> Any:
        """The fsspec filesystem of a URL (for listing and deleting)."""
        import fsspec

        fs, _ = fsspec.core.url_to_fs(self.url, **_uncached(self.storage_options))
        return fs

    def has(self, key: str) -> bool:
        """True if ``key`` (e.g. ``"zarr.json"``, ``"ra/c/0"``) exists in the store."""
        if self.is_local:
            return (Path(self.url) / key).exists()
        with self.errors("read"):
            return bool(self.filesystem().exists(self.child(key)))

    def exists(self) -> bool:
        """True if a Zarr store (its root ``zarr.json``) is there."""
        return self.has("zarr.json")

    def occupied(self) -> bool:
        """True if anything at all is at the location (a store or other files)."""
        if self.is_local:
            p = Path(self.url)
            return p.exists() and (not p.is_dir() or any(p.iterdir()))
        with self.errors("read"):
            fs = self.filesystem()
            return bool(fs.exists(self.url)) and (not fs.isdir(self.url) or bool(fs.ls(self.url)))

    def remove(self) -> None:
        """Delete the store (only if it looks like a Zarr store)."""
        if self.is_local:
            p = Path(self.url)
            if not p.exists():
                return
            if not (p / "zarr.json").exists():
                raise InvalidParameterError(f"refusing to delete {p}: it is not a Zarr store")
            import shutil

            shutil.rmtree(p)
            return
        if not self.exists():
            if self.occupied():
                raise InvalidParameterError(
                    f"refusing to delete {self.url}: it is not a Zarr store"
                )
            return
        with self.errors("delete"):
            self.filesystem().rm(self.url, recursive=True)

    # -- checks and errors -------------------------------------------------------------

    def check(self, *, replace: bool = False, write: bool = False) -> None:
        """Raise :class:`~ps1dask.exceptions.OutputLocationError` if a store cannot go here
        (see :func:`check_output_location`). For a URL: the bucket (or container) must
        exist and the credentials be accepted; ``memory://`` always passes."""
        if self.is_local:
            check_output_location(self.url, replace=replace, write=write)
            return
        if self.in_process:
            return
        with self.errors("reach"):
            fs = self.filesystem()
            bucket = self.url.split("://", 1)[1].split("/", 1)[0]
            # a HEAD of the bucket proves it exists and that the credentials are accepted
            # (read-only credentials pass here and are refused at the first write, in one
            # line as well)
            fs.info(f"{self.protocol}://{bucket}")

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn what an object store raises (botocore/aiohttp errors, fsspec's
        ``FileNotFoundError``/``PermissionError``) into one line naming the URL."""
        if self.is_local:
            yield
            return
        try:
            yield
        except PS1DaskError:
            raise
        except Exception as err:  # noqa: BLE001 - every backend raises its own classes
            raise OutputLocationError(
                f"cannot {action} the store {self.url}: {_describe(err)}"
            ) from None


StoreLike = str | os.PathLike[str] | StoreLocation


def _describe(err: BaseException) -> str:
    """A one-line account of an object-store error (the innermost useful message)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    name = type(err).__name__
    if isinstance(err, FileNotFoundError):
        return f"not found (no such bucket or key?){': ' + text if text else ''}"
    if isinstance(err, PermissionError):
        return f"access denied (credentials?){': ' + text if text else ''}"
    return f"{name}: {text}" if text else name


def _filesystem_class(protocol: str, url: str) -> Any:
    import fsspec

    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as err:
        raise InvalidParameterError(f"store {url}: {err}") from None
    except ValueError:
        raise InvalidParameterError(
            f"store {url}: unknown protocol {protocol!r} (use a path, or a URL such as "
            "s3://bucket/path.zarr, gs://, az://, memory://, file://)"
        ) from None


def _uncached(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with fsspec's listings cache off: workers write objects this process did
    not, and a cached listing would then answer "no such key" for a store that exists."""
    return {**options, "use_listings_cache": False}


_STORES: dict[tuple[str, str], Any] = {}
_STORES_LOCK = threading.Lock()


def _fsspec_store(url: str, options: Mapping[str, Any]) -> Any:
    """One FsspecStore per (URL, options) and process: opening is cheap, but each open
    makes a new client session (s3fs caches its filesystems, zarr's store does not)."""
    from zarr.storage import FsspecStore

    key = (url, json.dumps(dict(options), sort_keys=True, default=repr))
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = FsspecStore.from_url(url, storage_options=_uncached(options), read_only=False)
            _STORES[key] = store
        return store


def parse_storage_options(
    items: list[str] | None, flag: str = "--storage-option"
) -> dict[str, Any]:
    """``KEY=VALUE`` strings (a repeatable CLI flag) as storage options.

    A value that reads as JSON is taken as such (``anon=true``, ``client_kwargs={"region_name":
    "us-east-1"}``, numbers); anything else is a string (``endpoint_url=http://...``).
    """
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidParameterError(f"{flag} {item!r}: expected KEY=VALUE")
        if key in options:
            raise InvalidParameterError(f"{flag} {key!r} given twice")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


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
