"""The daemon-thread aiohttp server shared by the emulator and the viewer."""

from __future__ import annotations

import pytest
import requests
from aiohttp import web

from ps1dask.background_server import BackgroundServer, bind_socket


def _hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    return app


def test_serves_until_stopped_then_refuses():
    sock = bind_socket("127.0.0.1", 0, backlog=16)
    port = sock.getsockname()[1]
    server = BackgroundServer("test-server")
    server.start(sock, _hello_app)
    assert server.running and server.loop is not None and server.loop.is_running()
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "hello"
    server.start(sock, _hello_app)  # already running: nothing happens
    server.stop()
    assert not server.running and server.loop is None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
    server.join()  # returns at once once stopped


def test_a_failing_application_is_reported_in_the_caller():
    sock = bind_socket("127.0.0.1", 0, backlog=16)

    def broken() -> web.Application:
        raise ValueError("no app today")

    server = BackgroundServer("test-server")
    with pytest.raises(RuntimeError, match="test-server failed to start.*no app today"):
        server.start(sock, broken)
    assert not server.running
    assert sock.fileno() == -1  # closed
