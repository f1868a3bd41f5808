"""The emulated service's front door: accounting, the concurrency limit, faults, latency and
bandwidth, around every service and S3-mode request (``/_emulator/*`` passes straight
through). S3 requests get the same latency, bandwidth and faults (answered in S3's XML), are
counted apart and are never refused by the per-address limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from ps1dask.emulator.faults import Knobs, format_retry_after
from ps1dask.emulator.metrics import S3_ENDPOINT, ServiceState, endpoint_of
from ps1dask.emulator.replies import Reply, error_reply, hold, reset_connection
from ps1dask.emulator.s3 import s3_error_reply
from ps1dask.exceptions import HTTPFailure, InvalidParameterError, PS1DaskError, ServiceHTTPError

log = logging.getLogger("ps1dask.emulator")


class ServiceMiddleware:
    """aiohttp middleware of one emulator (:attr:`middleware`), around its :class:`ServiceState`."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        endpoint = endpoint_of(request.path)
        if endpoint is None:
            return await handler(request)
        state = self.state
        s3 = endpoint == S3_ENDPOINT
        if request.method == "POST" and not s3:
            # The body first, with a deadline: a request counts as in flight (and against the
            # concurrency limit) only once it has arrived, so stalled uploads cannot lock
            # other clients out.
            unread = await self._read_body(request)
            if unread is not None:
                return await self._transmit(request, unread, None, state.knobs)
        flight = state.enter(request, endpoint)  # before any further await
        reply: Reply | None = None
        try:
            knobs = state.knobs
            if flight.refused:
                reply = error_reply(
                    503,
                    f"too many simultaneous requests from {flight.address} (limit "
                    f"{knobs.max_concurrency}); slow down",
                    {"Retry-After": format_retry_after(knobs.retry_after)},
                )
                return await self._transmit(request, reply, None, knobs)
            fault = state.faults.draw(knobs.fault_rate, knobs.fault_kinds)
            # The service works on the answer while the latency runs: latency is the time to
            # the first byte, server work included (work longer than it adds to it).
            working = None
            if fault not in ("503", "429", "500", "reset"):
                working = asyncio.ensure_future(self._reply(request, handler, s3))
            if knobs.latency > 0 and not await hold(request, knobs.latency):
                if working is not None:
                    working.cancel()
                return web.Response()  # the client hung up; nothing to send
            if fault in ("503", "429", "500"):
                state.metrics.fault(fault, s3=s3)
                reply = _fault_reply(fault, s3, knobs)
                return await self._transmit(request, reply, None, knobs, s3)
            if fault == "reset":
                state.metrics.fault(fault, s3=s3)
                reset_connection(request)
                return web.Response()
            if fault == "stall":
                state.metrics.fault(fault, s3=s3)
                if not await hold(request, knobs.stall_seconds):
                    if working is not None:
                        working.cancel()
                    return web.Response()
            assert working is not None
            reply = await working
            if fault == "truncate":
                size = reply.size
                if (size is not None and size < 2) or request.method == "HEAD":
                    fault = "reset"  # nothing to cut short: reset instead
                    state.metrics.fault(fault, s3=s3)
                    reset_connection(request)
                    return web.Response()
                state.metrics.fault(fault, s3=s3)
            return await self._transmit(request, reply, fault, knobs, s3)
        finally:
            if reply is not None:
                reply.close()
            state.leave(flight)

    async def _read_body(self, request: web.Request) -> Reply | None:
        """Read and parse a POST body within ``body_timeout``; an error answer if it fails.

        aiohttp keeps the parsed form, so the handler's ``request.post()`` reuses it.
        """
        timeout = self.state.knobs.body_timeout
        try:
            await asyncio.wait_for(request.post(), timeout)
        except TimeoutError:
            reply = error_reply(408, f"the request body did not arrive within {timeout:g} s")
        except web.HTTPRequestEntityTooLarge as exc:
            reply = error_reply(413, exc.text or "request body too large")
        except web.HTTPException as exc:
            reply = error_reply(exc.status, exc.text or exc.reason)
        except (ValueError, UnicodeDecodeError, AssertionError) as err:
            reply = error_reply(400, f"unreadable request body: {err}")
        else:
            return None
        reply.close_connection = True  # the rest of the body must not read as a request
        return reply

    async def _reply(self, request: web.Request, handler: Callable, s3: bool = False) -> Reply:
        if s3:
            try:
                result = await handler(request)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # pragma: no cover - a bug; still answer like S3
                log.exception("emulator error on %s", request.path_qs)
                return s3_error_reply(500, "InternalError", f"emulator error: {err!r}")
            if isinstance(result, Reply):
                return result
            raise TypeError(f"S3 handler returned {type(result).__name__}")  # pragma: no cover
        try:
            result = await handler(request)
        except HTTPFailure as err:
            return error_reply(err.status, str(err), err.headers)
        except web.HTTPException as exc:
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "location")}
            return error_reply(exc.status, exc.text or exc.reason, headers)
        except ServiceHTTPError as err:  # e.g. the sky's NotFoundError for a missing warp
            return error_reply(err.status, str(err))
        except (InvalidParameterError, PS1DaskError, ValueError) as err:
            return error_reply(400, str(err))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # pragma: no cover - a bug; still answer like a server
            log.exception("emulator error on %s", request.path_qs)
            return error_reply(500, f"internal error in the emulator: {err!r}")
        if isinstance(result, Reply):
            return result
        raise TypeError(f"service handler returned {type(result).__name__}")  # pragma: no cover

    async def _transmit(
        self,
        request: web.Request,
        reply: Reply,
        fault: str | None,
        knobs: Knobs,
        s3: bool = False,
    ) -> web.StreamResponse:
        metrics = self.state.metrics
        metrics.status(reply.status, s3=s3)
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        total = reply.size
        if total is None:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = total
        if reply.close_connection:
            resp.force_close()
        try:
            await resp.prepare(request)
            if request.method == "HEAD":
                await resp.write_eof()
                return resp
            limit = None
            if fault == "truncate":
                # half the body; a stream of unknown size is cut in its first chunk
                limit = total // 2 if total is not None else 1
            bandwidth = knobs.bandwidth
            transport = request.transport
            if (
                reply.file is not None
                and limit is None
                and not bandwidth
                and transport is not None
                and not transport.is_closing()
            ):
                # A file's bytes at full speed: the kernel copies them (sendfile), not this
                # process, whose CPU would otherwise compete with the clients it serves on a
                # small machine (a dense S3 job reads gigabytes).
                await asyncio.get_running_loop().sendfile(
                    transport, reply.file, reply.offset, reply.length
                )
                metrics.add("bytes_sent", reply.length, s3=s3)
                await resp.write_eof()
                return resp
            chunk = 256 * 1024
            if bandwidth:
                chunk = int(min(256 * 1024, max(4096, bandwidth * 1e6 * 0.02)))
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            sent = 0
            async for piece in reply.pieces(limit, chunk):
                await resp.write(piece)
                sent += len(piece)
                metrics.add("bytes_sent", len(piece), s3=s3)
                if bandwidth:
                    delay = t0 + sent / (bandwidth * 1e6) - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
            if fault == "truncate":
                transport = request.transport
                if transport is not None:
                    transport.close()  # flushes what was written, then FIN
                return resp
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away mid-answer
        return resp


def _fault_reply(fault: str, s3: bool, knobs: Knobs) -> Reply:
    """The answer of an error fault: the service's text, or S3's XML (S3 has no 429: it
    throttles with 503 SlowDown)."""
    if s3:
        if fault == "500":
            return s3_error_reply(
                500, "InternalError", "We encountered an internal error. Please try again."
            )
        return s3_error_reply(503, "SlowDown", "Please reduce your request rate.")
    if fault == "500":
        return error_reply(500, "internal server error (emulated fault)")
    message = "service temporarily unavailable" if fault == "503" else "too many requests"
    return error_reply(
        int(fault),
        f"{message} (emulated fault)",
        {"Retry-After": format_retry_after(knobs.retry_after)},
    )
