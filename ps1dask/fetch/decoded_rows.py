"""Decoded row tiles of service files, shared by the work units of one worker process.

Neighbouring work units of a dense field cut boxes from the same rows of the same skycell
file: each unit used to fetch and decode its own rows, so rows near the boundary between
two units (a whole box height) were decoded twice, and more often still when units hold
few positions (e.g. 58 positions of a 5-band job). This module keeps the rows a process
decoded, by source and file, so that a row is fetched and decoded once per process while
it is needed: a unit asks for a run of rows and gets back the pieces that cover it, decoding
only the rows no one decoded (or is decoding) yet.

- **Threads**: rows another thread is decoding are waited for, not decoded again.
- **Memory**: the decoded rows kept are bounded (``ps1dask.cache.decoded-rows-bytes`` per
  process, least recently used dropped first); a unit holds references to its own pieces
  while it cuts, so the process's peak is that budget plus the pieces of the units running.
- **Pixels**: a row's decoded values do not depend on which run it was decoded in (row
  tiles are decoded one by one; dithered tiles keep their own random sequence), so the
  pieces give the same pixels as decoding the run at once.

Rows are shared only within a job (:func:`begin_sharing` / :func:`end_sharing`, which the
job calls on every worker), never across jobs, and the runner places consecutive units
(plan order: skycell, then image row) on the same worker
(:func:`ps1dask.execution.runner.run_units`), which is where the sharing happens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dask.config
import numpy as np

from ps1dask import config as _config  # noqa: F401  (registers the ps1dask.* defaults read here)

__all__ = ["DecodedRows", "Piece", "begin_sharing", "end_sharing", "gather", "shared_rows"]

#: A decoded run of rows: (first row, stop row, raw values of rows [first, stop) x columns).
Piece = tuple[int, int, np.ndarray]
#: ``decode(start, stop)``: raw values of rows [start, stop) (one fetch and decode).
Decode = Callable[[int, int], np.ndarray]
#: ``prepare(runs)``: the runs of rows [start, stop) about to be decoded (fetch them now).
Prepare = Callable[[list[tuple[int, int]]], None]


@dataclass
class _Claim:
    """Rows [start, stop) of a file that one thread is decoding; others wait on ``done``."""

    start: int
    stop: int
    done: threading.Event = field(default_factory=threading.Event)


def _subtract(start: int, stop: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, stop) outside every (sorted or not) interval of ``taken``."""
    free: list[tuple[int, int]] = []
    at = start
    for a, b in sorted(taken):
        if b <= at or a >= stop:
            continue
        if a > at:
            free.append((at, a))
        at = max(at, b)
        if at >= stop:
            break
    if at < stop:
        free.append((at, stop))
    return free


class DecodedRows:
    """Decoded rows of files, keyed by ``(source, file)``, at most ``max_bytes`` kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        # (key, start) -> piece, least recently used first
        self._pieces: OrderedDict[tuple[object, int], Piece] = OrderedDict()
        self._claims: dict[object, list[_Claim]] = {}
        self._bytes = 0
        #: rows decoded by this process (a measure for tests and benchmarks)
        self.rows_decoded = 0

    @property
    def nbytes(self) -> int:
        """Bytes of decoded rows kept now."""
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._pieces.clear()
            self._bytes = 0

    def rows(self, key: object, start: int, stop: int, decode: Decode) -> list[Piece]:
        """Pieces covering rows [start, stop) of file ``key``, in row order, decoding with
        ``decode`` only the rows no thread of this process has (or is decoding)."""
        return self.runs(key, [(start, stop)], decode)[0]

    def runs(
        self,
        key: object,
        runs: Sequence[tuple[int, int]],
        decode: Decode,
        *,
        prepare: Prepare | None = None,
    ) -> list[list[Piece]]:
        """Pieces covering each run [start, stop) of rows of file ``key`` (as :meth:`rows`).

        ``prepare(claimed)`` is called once, before any ``decode``, with the runs of rows
        this thread has just claimed to decode: the rows no thread had or was decoding,
        and that the others now wait for. A source that fetches ahead (all of a file's
        spans at once) fetches exactly those, and never bytes of rows decoded elsewhere."""
        found: list[list[Piece]] = [[] for _ in runs]
        for _ in range(3):
            with self._lock:
                mine: list[_Claim] = []
                waits: list[_Claim] = []
                for start, stop in runs:
                    pieces = self._overlapping(key, start, stop)
                    others = [
                        c for c in self._claims.get(key, []) if c.start < stop and c.stop > start
                    ]
                    held = [(a, b) for a, b, _ in pieces] + [(c.start, c.stop) for c in others]
                    held += [(c.start, c.stop) for c in mine]
                    mine += [_Claim(a, b) for a, b in _subtract(start, stop, held)]
                    waits += [c for c in others if c not in waits]
                self._claims.setdefault(key, []).extend(mine)
            if mine:
                self._decode_claims(key, mine, decode, prepare)
            for claim in waits:
                claim.done.wait()
            with self._lock:
                found = [self._overlapping(key, a, b) for a, b in runs]
            if all(
                not _subtract(a, b, [(x, y) for x, y, _ in pieces])
                for (a, b), pieces in zip(runs, found)
            ):
                return [self._clip(pieces, a, b) for (a, b), pieces in zip(runs, found)]
            # another thread's decoding failed, or rows were evicted (a budget smaller than
            # the rows of the units running): look again
        # still missing: decode what is missing for this caller alone
        return [
            self._clip(self._fill(pieces, a, b, decode), a, b)
            for (a, b), pieces in zip(runs, found)
        ]

    # -- internals (the caller holds no lock unless said) -------------------------------------

    def _overlapping(self, key: object, start: int, stop: int) -> list[Piece]:
        """Kept pieces of ``key`` that overlap [start, stop), marked used (lock held)."""
        found = []
        for (k, a), piece in self._pieces.items():
            if k == key and a < stop and piece[1] > start:
                found.append(((k, a), piece))
        for item_key, _ in found:
            self._pieces.move_to_end(item_key)
        return sorted((piece for _, piece in found), key=lambda p: p[0])

    def _decode_claims(
        self, key: object, claims: list[_Claim], decode: Decode, prepare: Prepare | None
    ) -> None:
        try:
            if prepare is not None:
                prepare([(c.start, c.stop) for c in claims])
            for claim in claims:
                raw = decode(claim.start, claim.stop)
                with self._lock:
                    self._keep(key, (claim.start, claim.stop, raw))
                    self.rows_decoded += claim.stop - claim.start
                    self._release(key, claim)
        finally:
            with self._lock:
                for claim in claims:
                    if not claim.done.is_set():
                        self._release(key, claim)

    def _release(self, key: object, claim: _Claim) -> None:
        """Drop a claim and wake its waiters (lock held)."""
        claims = self._claims.get(key, [])
        if claim in claims:
            claims.remove(claim)
        if not claims:
            self._claims.pop(key, None)
        claim.done.set()

    def _keep(self, key: object, piece: Piece) -> None:
        """Keep a decoded piece, dropping the least recently used beyond the budget (lock
        held). A piece larger than the whole budget is kept until the next one comes."""
        self._pieces[(key, piece[0])] = piece
        self._bytes += piece[2].nbytes
        while self._bytes > self.max_bytes and len(self._pieces) > 1:
            _, old = self._pieces.popitem(last=False)
            self._bytes -= old[2].nbytes

    def _fill(self, pieces: list[Piece], start: int, stop: int, decode: Decode) -> list[Piece]:
        gaps = _subtract(start, stop, [(a, b) for a, b, _ in pieces])
        extra = [(a, b, decode(a, b)) for a, b in gaps]
        with self._lock:
            self.rows_decoded += sum(b - a for a, b in gaps)
        return sorted(pieces + extra, key=lambda p: p[0])

    @staticmethod
    def _clip(pieces: list[Piece], start: int, stop: int) -> list[Piece]:
        """The pieces cut to [start, stop) (views, no copy)."""
        out = []
        for a, b, raw in pieces:
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                out.append((lo, hi, raw[lo - a : hi - a]))
        return out


def gather(pieces: list[Piece], start: int, stop: int, cols: slice = slice(None)) -> np.ndarray:
    """Rows [start, stop) x ``cols`` from pieces that cover the rows (a view when one piece
    does; else only those columns are copied)."""
    parts = [
        raw[max(start, a) - a : min(stop, b) - a, cols]
        for a, b, raw in pieces
        if a < stop and b > start
    ]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts, axis=0)


_SHARED: DecodedRows | None = None
_JOBS = 0  # jobs running on this process's cluster that share decoded rows
_SHARED_LOCK = threading.Lock()


def begin_sharing(dask_worker: object = None) -> None:
    """A job starts on this process's cluster: share decoded rows until it ends (called on
    every worker with ``Client.run``). Rows are never shared across jobs: a job's requests
    do not depend on what ran before it."""
    global _JOBS, _SHARED
    with _SHARED_LOCK:
        if _JOBS == 0:
            _SHARED = None
        _JOBS += 1


def end_sharing(dask_worker: object = None) -> None:
    """A job ended: when no other job runs, drop the decoded rows (free their memory)."""
    global _JOBS, _SHARED
    with _SHARED_LOCK:
        _JOBS = max(0, _JOBS - 1)
        if _JOBS == 0:
            _SHARED = None


def shared_rows() -> DecodedRows | None:
    """This process's decoded rows while a job runs (sized by
    ``ps1dask.cache.decoded-rows-bytes``), else None: nothing is kept outside jobs."""
    global _SHARED
    with _SHARED_LOCK:
        if _JOBS == 0:
            return None
        if _SHARED is None:
            _SHARED = DecodedRows(int(dask.config.get("ps1dask.cache.decoded-rows-bytes")))
        return _SHARED
