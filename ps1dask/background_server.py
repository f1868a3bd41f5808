"""An aiohttp application served from a daemon thread (the emulator and the viewer).

Both run in the caller's process next to blocking code (tests, notebooks, a Dask client), so
each gets a thread with an event loop of its own; :meth:`BackgroundServer.start` returns once
the socket accepts connections and re-raises in the caller what made the start fail.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

from aiohttp import web

__all__ = ["BackgroundServer", "bind_socket"]


def bind_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    return sock


class BackgroundServer:
    """Serve ``make_app()`` on an already bound, non-blocking socket from a daemon thread."""

    def __init__(self, name: str, *, shutdown_timeout: float = 0.5, backlog: int = 128) -> None:
        self.name = name
        self.shutdown_timeout = shutdown_timeout
        self.backlog = backlog
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def start(self, sock: socket.socket, make_app: Callable[[], web.Application]) -> None:
        """Serve until :meth:`stop`; ``make_app`` runs in the server thread, on its loop.

        Raises RuntimeError (from the original error) when the application cannot start;
        the socket is closed then.
        """
        if self.running:
            return
        self._ready.clear()
        self._error = None
        self.thread = threading.Thread(
            target=self._serve, args=(sock, make_app), name=self.name, daemon=True
        )
        self.thread.start()
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self.thread.join(timeout=5)
            self.thread = None
            raise RuntimeError(f"the {self.name} failed to start: {error!r}") from error

    def _serve(self, sock: socket.socket, make_app: Callable[[], web.Application]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        try:
            runner = web.AppRunner(
                make_app(), shutdown_timeout=self.shutdown_timeout, access_log=None
            )
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock, backlog=self.backlog).start())
        except BaseException as err:  # noqa: BLE001 - any start-up failure is re-raised by start()
            self._error = err
            sock.close()
            self.loop = None
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(runner.cleanup())
                # handlers still waiting (e.g. on a slow client) must not outlive the loop
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def join(self) -> None:
        """Wait for the server thread to end (after :meth:`stop`, or a failure of its loop)."""
        thread = self.thread
        if thread is not None:
            thread.join()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop, clean up the application and wait for the thread."""
        thread, loop = self.thread, self.loop
        if thread is not None and loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=timeout)
        self.thread = None
        self.loop = None
