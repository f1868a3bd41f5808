"""What every work-unit fetcher shares: member codes, outcomes, failures, the engine run.

A unit's cutouts are cells of an index space, ``(position, filter[, epoch], image type)``;
each cutout handed to the :class:`~ps1dask.fetch.engine.CutoutEngine` carries its cell as
one integer (a "member"), which comes back with the pixels or the error.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ps1dask.client import PS1Service
from ps1dask.exceptions import NotFoundError, ServiceError, ServiceUnavailableError
from ps1dask.fetch.cache import LocalFileCache
from ps1dask.fetch.engine import CutoutEngine
from ps1dask.fetch.group import ImageGroup
from ps1dask.fetch.strategies import FetchStrategy
from ps1dask.planning.cost import ServiceProfile
from ps1dask.planning.plan import WorkUnit
from ps1dask.storage.layout import MASK_OFF_IMAGE, STATUS


def to_store_dtype(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """Linear float pixels to a store variable's dtype (masks: NaN -> the BLANK bit)."""
    if dtype == "uint16":
        return np.where(np.isnan(pixels), MASK_OFF_IMAGE, pixels).astype(np.uint16)
    return pixels


def store_pixels(target: np.ndarray, pixels: np.ndarray, dtype: str) -> None:
    """Put a cutout's pixels into its place ``target`` in a unit's array, unless the
    strategy already cut them there (:attr:`FetchContext.destination`)."""
    if pixels.dtype == target.dtype and _same_memory(pixels, target):
        return
    target[...] = to_store_dtype(pixels, dtype)


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are the same view of the same memory."""
    return (
        a.shape == b.shape
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def empty_images(
    variables: dict[str, tuple[str, str, str, str]], types: tuple[str, ...], shape: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Arrays of a unit's images, filled as the store's fill values."""
    out = {}
    for t in types:
        name, dtype, _, _ = variables[t]
        out[name] = np.full(shape, MASK_OFF_IMAGE if dtype == "uint16" else np.nan, dtype=dtype)
    return out


class FailureLog:
    """Errors of a unit (first few kept) and whether the service kept refusing us."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.unavailable = False
        self._lock = threading.Lock()

    def outcome(self, what: str, err: ServiceError) -> int:
        """The status an error gives: ``no_data`` for 404, else ``failed`` (logged)."""
        if isinstance(err, NotFoundError):
            return STATUS["no_data"]
        with self._lock:
            if len(self.errors) < 20:
                self.errors.append(f"{what}: {err}")
            if isinstance(err, ServiceUnavailableError):
                self.unavailable = True
        return STATUS["failed"]


@dataclass
class UnitResult:
    """What a unit fetched, ready to be written to its chunks."""

    images: dict[str, np.ndarray]  # the part's image variables, by store name
    status: npt.NDArray[np.uint8]
    meta: dict[str, np.ndarray]  # the part's per-cell variables (zero points, times...)
    strategies: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    unavailable: bool = False
    seconds: float = 0.0


#: A cutout's cell without its image type: (position in unit, filter index[, epoch index]).
Cell = tuple[int, ...]


class UnitFetcher(abc.ABC):
    """Base of the stack and warp fetchers (one instance per Dask task).

    Subclasses give the cell dimensions between position and image type (``inner``), build
    the :class:`ImageGroup` s, store each cutout, and combine outcomes into statuses, in
    the arrays they set up: ``images`` (declared with :meth:`set_images`, made on first
    use), ``status`` and ``meta`` (what :meth:`result` gives).
    ``variables`` are the store's image variables by image type (name, dtype, ...): float32
    ones are offered to the strategies to cut into in place (:meth:`destination`).
    """

    status: npt.NDArray[np.uint8]
    meta: dict[str, np.ndarray]
    variables: Mapping[str, tuple[str, str, str, str]]

    def __init__(
        self,
        unit: WorkUnit,
        *,
        inner: tuple[int, ...],
        filters: str,
        types: tuple[str, ...],
        width: int,
        height: int,
        strategy: str,
        service: PS1Service,
        cache: LocalFileCache | None,
        profile: ServiceProfile,
        strategies: Mapping[str, FetchStrategy] | None = None,
    ) -> None:
        self.unit = unit
        self.filters = filters
        self.types = types
        self.strategy = strategy
        self._dims = (*inner, len(types))
        self.log = FailureLog()
        self._outcome: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()
        self._images: dict[str, np.ndarray] | None = None
        self._images_spec: tuple[Any, ...] | None = None
        self._images_lock = threading.Lock()
        self.engine = CutoutEngine(
            width=width,
            height=height,
            service=service,
            cache=cache,
            profile=profile,
            on_cutout=self._store_cutout,
            on_failure=self._on_failure,
            strategies=strategies,
            destination=self.destination,
        )

    def set_images(
        self,
        variables: dict[str, tuple[str, str, str, str]],
        types: tuple[str, ...],
        shape: tuple[int, ...],
    ) -> None:
        """Declare the unit's image arrays (:func:`empty_images`); they are made on first
        use. Why: filling megabytes of fill values took a unit about 20 ms of CPU before its
        first request (more while the job's other units start on the same cores), and the
        first cutout arrives a latency later."""
        self._images_spec = (variables, types, shape)

    @property
    def images(self) -> dict[str, np.ndarray]:
        """The part's image variables by store name, filled with fill values until cut."""
        if self._images is None:
            with self._images_lock:
                if self._images is None:
                    assert self._images_spec is not None, "set_images() was not called"
                    self._images = empty_images(*self._images_spec)
        return self._images

    # -- members: a cell and an image type in one integer ---------------------------------

    def _encode(self, positions: np.ndarray, *index: int) -> np.ndarray:
        """Members of ``positions`` (unit indices) at inner ``index`` + type index."""
        code = np.asarray(positions, dtype=np.int64)
        for k, size in zip(index, self._dims):
            code = code * size + k
        return code

    def _decode(self, member: int) -> tuple[Cell, str]:
        index = []
        for size in reversed(self._dims):
            member, k = divmod(member, size)
            index.append(k)
        *inner, ti = reversed(index)
        return (member, *inner), self.types[ti]

    def _group(self, filename: str, members: np.ndarray, *index: int) -> ImageGroup:
        """The group of unit positions ``members`` in one image, at inner ``index`` + type."""
        group = ImageGroup.for_unit(self.unit, filename, members, self._encode(members, *index))
        group.strategy = self.engine.choose(group, self.strategy)
        return group

    def describe(self, cell: Cell) -> str:
        """A cell for error messages: the position and filter."""
        i, bi = cell[0], cell[1]
        return f"ra={self.unit.ra[i]:.6f} dec={self.unit.dec[i]:.6f} {self.filters[bi]}"

    # -- engine callbacks -------------------------------------------------------------------

    def destination(self, member: int) -> np.ndarray | None:
        """Where a member's float32 pixels go in the unit's arrays (a ``(height, width)``
        view), or None for a type stored otherwise (masks). Each member is one cell of one
        image type, filled by one strategy task: the writes in place never overlap."""
        cell, image_type = self._decode(member)
        name, dtype, _, _ = self.variables[image_type]
        if dtype != "float32":
            return None
        return self.images[name][cell]  # type: ignore[no-any-return]

    def _store_cutout(self, member: int, pixels: np.ndarray, header: Any) -> None:
        cell, image_type = self._decode(member)
        with self._lock:
            self.on_cutout(cell, image_type, pixels, header)
            self._outcome[(*cell, image_type)] = STATUS["ok"]

    def _on_failure(self, members: Sequence[int], err: ServiceError) -> None:
        for member in members:
            cell, image_type = self._decode(int(member))
            outcome = self.log.outcome(f"{self.describe(cell)} {image_type}", err)
            with self._lock:
                self._outcome[(*cell, image_type)] = outcome

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> UnitResult:
        """Fetch every group, combine outcomes into statuses; the subclass's result."""
        t0 = time.perf_counter()
        strategies = self.engine.run(self.groups())
        self.combine()
        return self.result(strategies, time.perf_counter() - t0)

    @abc.abstractmethod
    def groups(self) -> list[ImageGroup]:
        """One :class:`ImageGroup` per service image the unit needs, strategy chosen."""

    @abc.abstractmethod
    def on_cutout(self, cell: Cell, image_type: str, pixels: np.ndarray, header: Any) -> None:
        """Store one cutout (called under the fetcher's lock)."""

    @abc.abstractmethod
    def combine(self) -> None:
        """Turn the outcomes of a cell's image types into its status."""

    def result(self, strategies: dict[str, int], seconds: float) -> UnitResult:
        """What the task writes and reports."""
        return UnitResult(
            images=self.images,
            status=self.status,
            meta=self.meta,
            strategies=strategies,
            errors=self.log.errors,
            unavailable=self.log.unavailable,
            seconds=seconds,
        )
