"""Answers of the emulated service and what it does to connections.

A handler returns a :class:`Reply` (or raises :class:`HTTPFailure`); the middleware sends it
throttled and possibly faulted. The emulator's own ``/_emulator/*`` endpoints answer JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from aiohttp import web


@dataclass
class Reply:
    """A service answer, sent by the middleware (throttled, maybe truncated).

    The body is ``body`` bytes, ``length`` bytes of an open ``file`` from ``offset`` (the
    reply owns the file and :meth:`close` closes it), or a ``stream`` of chunks of unknown
    total size (sent with chunked transfer encoding, so a large answer never sits in memory).
    ``close_connection`` ends the connection after the answer (e.g. a body never read);
    ``head_only`` answers a HEAD: ``length`` announced, nothing sent.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    file: BinaryIO | None = None
    offset: int = 0
    length: int = 0
    stream: AsyncIterator[bytes] | None = None
    close_connection: bool = False
    #: an answer to HEAD: ``length`` bytes announced, none sent
    head_only: bool = False

    @property
    def size(self) -> int | None:
        """Body size in bytes; None for a stream."""
        if self.stream is not None:
            return None
        return self.length if self.file is not None or self.head_only else len(self.body)

    async def pieces(self, limit: int | None, chunk: int) -> AsyncIterator[bytes]:
        """The body in chunks: the first ``limit`` bytes (None: all of it)."""
        if self.stream is not None:
            async for piece in self.stream:
                if limit is not None:
                    if limit <= 0:
                        return
                    piece = piece[:limit]
                    limit -= len(piece)
                if piece:
                    yield piece
            return
        left = self.size if limit is None else min(limit, self.size or 0)
        if self.head_only:
            return
        if self.file is None:
            view = memoryview(self.body)[:left]
            for start in range(0, len(view), chunk):
                yield bytes(view[start : start + chunk])
            return
        self.file.seek(self.offset)
        while left and left > 0:
            data = self.file.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data

    def close(self) -> None:
        """Release the open file, if any (the middleware calls this once sent)."""
        if self.file is not None:
            self.file.close()


def text_reply(
    text: str,
    status: int = 200,
    content_type: str = "text/plain",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    hdrs = {"Content-Type": f"{content_type}; charset=utf-8", **(headers or {})}
    return Reply(status, hdrs, text.encode("utf-8"))


def error_reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return text_reply(message.rstrip("\n") + "\n", status, headers=headers)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _strict(value: Any) -> Any:
    """JSON has no NaN/Infinity: non-finite floats become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        return _strict(value.item())
    return value


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(_strict(data), default=_json_default, allow_nan=False),
        status=status,
        content_type="application/json",
    )


async def hold(request: web.BaseRequest, seconds: float) -> bool:
    """Wait ``seconds``; False as soon as the client has hung up."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        remaining = end - loop.time()
        if remaining <= 0:
            return True
        await asyncio.sleep(min(remaining, 0.05))


def reset_connection(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed front end would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover
            pass
    transport.abort()
