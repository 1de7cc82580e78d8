"""One inbound connection, before and around the application: what aiohttp leaves open.

aiohttp's ``RequestHandler`` (public, ``aiohttp.web_protocol``) is extended at three documented
hooks, and the ``Site`` that listens builds it (aiohttp's ``TCPSite`` passes its own class):

* **Header timeout** (``client_header_timeout``): a request line and headers must be complete
  within it, from the connection's start or from the first byte of the next request on a
  kept-alive connection; else 408 in the Anthropic envelope, and the connection closes. aiohttp
  itself has none, so headers sent a byte a second held a connection forever.
* **Idle timeout** (``client_idle_timeout``): aiohttp's keep-alive timeout (its default is an
  hour), read from the config snapshot when the connection opens.
* **Malformed HTTP** (a bare LF, a smuggling attempt, a bad header byte, an undecodable
  ``content-encoding``): aiohttp answers in plain text, quoting the raw request bytes, and logs
  a traceback that quotes them again (a passthrough token among them). Here the answer is the
  Anthropic envelope with a fixed reason, and the log gets one INFO line naming the reason.
  A body that fails to decode after the application answered is logged at DEBUG only.

The hooks are tied to aiohttp 3.14's ``RequestHandler``; tests/integration/test_hostile.py
exercises each of them through real sockets, so an aiohttp upgrade that moves them fails there.
"""

from __future__ import annotations

import asyncio
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


class Connection(RequestHandler):
    __slots__ = ("_head_timer", "_header_timeout", "_log")

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

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm()  # a complete request head arrived
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
