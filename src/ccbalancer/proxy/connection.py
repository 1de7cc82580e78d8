"""One inbound connection, before and around the application: what aiohttp leaves open.

``Connection`` extends aiohttp's ``RequestHandler`` and ``Site`` listens with it:

* **Header timeout** (``client_header_timeout``): the request line and headers must arrive
  within it, from the connection's start or from the next request's first byte; else 408 in
  the envelope, and the connection closes. aiohttp has none: a byte a second held it forever.
* **Idle timeout** (``client_idle_timeout``): aiohttp's keep-alive timeout (by default an
  hour), read from the config snapshot when the connection opens.
* **Malformed HTTP** (a bare LF, a smuggling attempt, a bad header byte, an unknown
  ``content-encoding``): aiohttp answered in plain text quoting the raw request and logged a
  traceback quoting it again (a passthrough token among them). Here: the envelope with a fixed
  reason, one INFO line. A refused body that later fails to decode is logged at DEBUG only.
* **Memory after a parser error**: aiohttp feeds a failed parser every later read, and each
  fails again with an error quoting the read, held in a reference cycle (error, traceback,
  frame) that only the cyclic collector frees, which ``cli`` tunes to run rarely: a malformed
  head followed by 4 MB cost 15 MB. Such a connection is not parsed further, and
  ``forget_frames`` clears an error's frames at once.
* **Expect** (``expect_continue``, every route's expect handler, run before any middleware):
  ``100-continue`` is answered here and never forwarded; anything else is 417 in the envelope
  (aiohttp's default answered in plain text, and with a 500 for a non-UTF-8 value).

These rely on ``RequestHandler`` internals of aiohttp 3.14 (``_request_count``, ``_messages``,
``_request_in_progress``); a test pins the version, and the socket tests in
tests/integration/test_hostile_*.py exercise every hook.
"""

from __future__ import annotations

import asyncio
import traceback
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler
from structlog.stdlib import BoundLogger

from ccbalancer.errors import error_type_for_status
from ccbalancer.proxy.respond import envelope
from ccbalancer.runtime import Runtime

# What the client is told for each parser error: fixed texts, never the request's own bytes.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (LineTooLong, "request line or header too long"),
    (BadHttpMethod, "unknown request method"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid request URL"),
    (InvalidHeader, "invalid header"),
    (ContentEncodingError, "request body could not be decoded (content-encoding)"),
    (TransferEncodingError, "invalid chunked framing"),
    (ContentLengthError, "invalid content-length framing"),
    (HttpProcessingError, "malformed HTTP request"),
)


def _reason(exc: BaseException | None) -> str:
    for kind, text in _REASONS:
        if isinstance(exc, kind):
            return text
    return "malformed HTTP request"


async def expect_continue(request: web.Request) -> None:
    """aiohttp's default expect handler, refusing in the envelope."""
    if request.version != (1, 1):
        return
    if request.headers.get("expect", "").lower() != "100-continue":
        text = envelope("invalid_request_error", "only 'expect: 100-continue' is supported")
        raise web.HTTPExpectationFailed(text=text.decode(), content_type="application/json")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the interim answer is not the response's start


def forget_frames(exc: BaseException | None) -> None:
    """Release what the frames of ``exc``'s traceback (and its causes') hold."""
    seen = 0
    while exc is not None and seen < 8:
        if exc.__traceback__ is not None:
            traceback.clear_frames(exc.__traceback__)
            exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
        seen += 1


class Connection(RequestHandler):
    __slots__ = ("_head_timer", "_header_timeout", "_log", "_refused")

    def __init__(
        self, manager: web.Server, *, loop: asyncio.AbstractEventLoop, runtime: Runtime
    ) -> None:
        settings = runtime.config.settings  # the snapshot when the connection opens
        super().__init__(
            manager,
            loop=loop,
            access_log=None,  # type: ignore[arg-type]  # None turns it off (aiohttp checks)
            keepalive_timeout=settings.client_idle_timeout,
        )
        self._header_timeout = settings.client_header_timeout
        self._log: BoundLogger = runtime.log
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # The parser failed on this connection, which closes once that is answered. Fed
            # more, it fails again on every read, each error quoting the bytes read (4 MB of
            # body made 15 MB of error messages): the rest is not parsed.
            return
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()  # a complete request head arrived (or the parser gave up)
            for message, _ in list(self._messages)[parsed - self._request_count :]:
                error = getattr(message, "exc", None)
                if error is not None:
                    self._refused = True
                    forget_frames(error)
        elif self._head_timer is None and not self._request_in_progress and not self._messages:
            self._arm()  # the first bytes of the next request on a kept-alive connection

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self._header_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._request_in_progress or self._messages:
            return  # a request is being served; its own deadlines apply
        self._log.info("client_header_timeout", peer=self.peername_text)
        body = envelope(
            "timeout_error",
            f"request headers not received within {self._header_timeout:g}s",
        )
        transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        self.force_close()

    @property
    def peername_text(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else ""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request the parser rejected (or, 500, an exception that escaped the app)."""
        if status >= 500:
            self._log.error("internal_error", path="<server>", exc_info=exc)
            error_type, text = "api_error", "internal error in the balancer"
        else:
            text = _reason(exc)
            self._log.info("bad_http_request", peer=self.peername_text, reason=text)
            error_type = error_type_for_status(status)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        response = web.Response(
            status=status, body=envelope(error_type, text), content_type="application/json"
        )
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError | HttpProcessingError):
            # the rest of a body the application already refused, failing to decode: the
            # client got its answer; nothing here is the balancer's fault
            self._log.debug("client_payload_error", peer=self.peername_text)
            forget_frames(exc)
            return
        super().log_exception(*args, **kw)


class Site(web.TCPSite):
    """``TCPSite`` whose connections are ``Connection``s, configured from ``runtime``."""

    __slots__ = ("_runtime",)

    def __init__(
        self, runner: web.AppRunner, runtime: Runtime, host: str, port: int, **kwargs: Any
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._runtime = runtime

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        runtime = self._runtime

        def connection() -> Connection:
            return Connection(server, loop=loop, runtime=runtime)

        self._server = await loop.create_server(
            connection,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
