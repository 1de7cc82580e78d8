"""Outbound HTTP: one long-lived pooled aiohttp session per provider.

This is the ONLY module that touches aiohttp's client or its exceptions: every aiohttp, socket
and TLS error is mapped here into the ``UpstreamError`` tree (errors.py), with a message we
wrote ourselves (aiohttp's own texts can carry proxy URLs with credentials).

Timeouts per phase (STYLE.md): ``sock_connect`` for the connection, ``sock_read`` for the wait
for response headers; after that the relay's single deadline (first event, first content, idle)
bounds the body. There is never a total deadline on a stream. Bodies are pushed to the relay
as they arrive (``upstream.push``), not read by a task per event.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from ccbalancer.config.schema import ProviderConfig, TimeoutPhase
from ccbalancer.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from ccbalancer.tasks import TaskOwner
from ccbalancer.upstream import push

READ_CHUNK = 2**16
KEEPALIVE = 60.0  # seconds an idle pooled connection is kept
MAX_ERROR_BODY = 64 * 1024


class BodySink(Protocol):
    """The relay's side of a streamed body (``relay.transport.BodySink``)."""

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...


@dataclass(slots=True)
class _Pool:
    """One provider's pooled session, and when a connection last went back to its pool."""

    session: aiohttp.ClientSession
    released_at: float = -KEEPALIVE  # monotonic; none yet

    def may_reuse(self, now: float) -> bool:
        """A connection may have been taken from the pool (one was put back within the
        keep-alive time): only then is a disconnect before any response a stale connection."""
        return now - self.released_at < KEEPALIVE


@dataclass(frozen=True, slots=True)
class _SessionKey:
    name: str
    proxy: str | None


class UpstreamResponse:
    """An open upstream response (``relay.transport.UpstreamCall``): ``stream`` its body to
    a sink, or read an error answer with ``body``; always ``close()``.

    Once the headers are in, aiohttp's ``sock_read`` timer is switched off for this
    response: it re-arms a timer on every chunk the socket delivers. The relay's single
    deadline bounds silence instead.
    """

    __slots__ = ("_pool", "_pump", "_pusher", "_resp", "_tasks", "provider")

    def __init__(
        self, provider: str, resp: aiohttp.ClientResponse, tasks: TaskOwner, pool: _Pool
    ) -> None:
        self.provider = provider
        self._resp = resp
        self._tasks = tasks
        self._pool = pool
        self._pusher: push.Pusher | None = None
        self._pump: asyncio.Task[None] | None = None
        connection = resp.connection
        if connection is not None and connection.protocol is not None:
            # the pool sets it again for the connection's next request
            connection.protocol.read_timeout = None

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(self._resp.headers.items())

    @property
    def content_type(self) -> str:
        return self._resp.headers.get("content-type", "").lower()

    def header(self, name: str) -> str | None:
        return self._resp.headers.get(name)

    def stream(self, sink: BodySink) -> None:
        """Deliver the body to ``sink`` as it arrives: pushed by aiohttp where the hook is
        verified (``upstream.push``), else read by a task of our own."""
        mapped = _MappedSink(self.provider, sink)
        self._pusher = push.attach(self._resp, mapped)
        if self._pusher is None:
            self._pump = self._tasks.spawn(self._read_all(mapped), f"body:{self.provider}")

    async def _read_all(self, sink: push.Sink) -> None:
        read = self._resp.content.readany
        try:
            while chunk := await read():
                sink.data(chunk)
        except Exception as exc:
            sink.failed(exc)
        else:
            sink.end()

    async def body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Up to ``limit`` bytes of the body (error answers); never raises for a short read."""
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                part = await self._resp.content.readany()
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read, else dropped."""
        if self._pusher is not None:
            self._pusher.close()
        if self._pump is not None:
            self._pump.cancel()
        if self._resp.content.at_eof():
            self._resp.release()
            self._pool.released_at = time.monotonic()
        else:
            self._resp.close()


class _MappedSink:
    """Foreign exceptions become ours on their way to the relay's sink."""

    __slots__ = ("_sink", "data", "end", "provider")

    def __init__(self, provider: str, sink: BodySink) -> None:
        self.provider = provider
        self._sink = sink
        self.data = sink.data
        self.end = sink.end

    def failed(self, exc: BaseException) -> None:
        error = exc if isinstance(exc, UpstreamError) else map_error(self.provider, exc)
        if error is not exc:
            error.__cause__ = exc
        self._sink.failed(error)


class UpstreamClient:
    """Owns the sessions. Sessions survive reload for unchanged (name, proxy) pairs."""

    def __init__(self) -> None:
        self._pools: dict[_SessionKey, _Pool] = {}
        self._stale: list[aiohttp.ClientSession] = []
        self._tasks = TaskOwner("upstream")  # body readers where aiohttp cannot push

    def _pool(self, provider: ProviderConfig) -> _Pool:
        key = _SessionKey(provider.name, provider.proxy)
        pool = self._pools.get(key)
        if pool is None or pool.session.closed:
            connector: aiohttp.BaseConnector
            if provider.proxy and provider.proxy.startswith("socks"):
                # imported only when a provider needs it (~30 modules most users never use)
                from aiohttp_socks import ProxyConnector

                connector = ProxyConnector.from_url(
                    provider.proxy, limit=0, keepalive_timeout=KEEPALIVE
                )
            else:
                connector = aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=KEEPALIVE, ttl_dns_cache=300
                )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                read_bufsize=READ_CHUNK,
            )
            pool = self._pools[key] = _Pool(session)
        return pool

    def reconcile(self, providers: tuple[ProviderConfig, ...]) -> None:
        """After a reload: sessions of removed/changed providers are closed at shutdown, not
        now, so streams that started on the old config finish on their connections."""
        wanted = {_SessionKey(p.name, p.proxy) for p in providers}
        for key in [k for k in self._pools if k not in wanted]:
            self._stale.append(self._pools.pop(key).session)

    async def open(
        self,
        provider: ProviderConfig,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: TimeoutPhase,
    ) -> UpstreamResponse:
        """Send the request; returns once the status line and headers arrived."""
        pool = self._pool(provider)
        http_proxy = (
            provider.proxy if provider.proxy and provider.proxy.startswith("http") else None
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.pool_timeout + timeouts.connect_timeout,
            sock_connect=timeouts.connect_timeout,
            sock_read=timeouts.read_timeout,
        )
        for attempt in (1, 2):
            may_reuse = pool.may_reuse(time.monotonic())
            try:
                resp = await pool.session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    proxy=http_proxy,
                    allow_redirects=False,
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the upstream had already closed: nothing of
                # ours reached a client, so one more try on a fresh connection is safe. (Told
                # by the pool's history, not a per-request trace: aiohttp builds a handful of
                # trace objects for every request once any trace is configured.)
                if attempt == 1 and may_reuse:
                    pool.released_at = -KEEPALIVE  # the next try opens a fresh connection
                    continue
                raise map_error(provider.name, exc) from exc
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
                phase = "connect" if connecting else "response"
                seconds = timeouts.connect_timeout if connecting else timeouts.read_timeout
                raise UpstreamTimeout(provider.name, phase, seconds) from exc
            except Exception as exc:
                raise map_error(provider.name, exc) from exc
        return UpstreamResponse(provider.name, resp, self._tasks, pool)

    async def close(self) -> None:
        await self._tasks.close()
        sessions = [pool.session for pool in self._pools.values()] + self._stale
        self._pools.clear()
        self._stale.clear()
        for session in sessions:
            await session.close()


def _connector(provider: str, exc: BaseException) -> UpstreamError:
    assert isinstance(exc, aiohttp.ClientConnectorError)
    why = exc.os_error.strerror or type(exc.os_error).__name__
    return UpstreamConnectError(provider, f"connection to {exc.host}:{exc.port} failed: {why}")


def _os(provider: str, exc: BaseException) -> UpstreamError:
    assert isinstance(exc, OSError)
    return UpstreamConnectError(provider, f"network error: {exc.strerror or type(exc).__name__}")


def _invalid(provider: str, exc: BaseException) -> UpstreamError:
    assert isinstance(exc, aiohttp.ClientResponseError)
    return UpstreamProtocolError(provider, f"invalid HTTP response ({exc.status})")


def _connect(message: str) -> Callable[[str, BaseException], UpstreamError]:
    return lambda provider, exc: UpstreamConnectError(provider, message)


def _unnamed(provider: str, exc: BaseException) -> UpstreamError:
    return UpstreamConnectError(provider, f"connection error ({type(exc).__name__})")


_TLS = _connect("TLS/SSL handshake failed (ssl)")

# Foreign exception -> ours, first match wins (subclasses before their bases). The messages
# are written here: aiohttp's own texts can carry proxy URLs with credentials. Callers keep
# the cause chained (``raise ... from exc``) for DEBUG logs; it never reaches a client.
_ERRORS: tuple[tuple[type[BaseException], Callable[[str, BaseException], UpstreamError]], ...] = (
    (aiohttp.ClientConnectorCertificateError, _TLS),
    (aiohttp.ClientSSLError, _TLS),
    (ssl.SSLError, _TLS),
    (aiohttp.ClientProxyConnectionError, _connect("cannot connect to the configured proxy")),
    (aiohttp.ClientConnectorDNSError, _connect("DNS lookup failed (network)")),
    (aiohttp.ClientConnectorError, _connector),
    (aiohttp.ServerDisconnectedError, _connect("connection closed by upstream before a response")),
    (aiohttp.ClientPayloadError, _connect("connection closed mid-response")),
    (aiohttp.ClientResponseError, _invalid),
    (aiohttp.InvalidURL, _connect("invalid upstream URL")),
    (TimeoutError, lambda provider, exc: UpstreamTimeout(provider, "read")),
    (ConnectionResetError, _connect("connection reset by upstream")),
    (OSError, _os),
    (aiohttp.ClientError, _unnamed),
    (ValueError, _unnamed),  # aiohttp's URL and header checks
)
# aiohttp_socks and python_socks raise their own families (imported only for SOCKS providers).
_SOCKS_MODULES = ("aiohttp_socks", "python_socks")


def map_error(provider: str, exc: BaseException) -> UpstreamError:
    """A foreign exception from the upstream side -> ours. Anything else is re-raised: it is
    a bug, never to be hidden as a provider's fault."""
    for kind, make in _ERRORS:
        if isinstance(exc, kind):
            return make(provider, exc)
    if type(exc).__module__.startswith(_SOCKS_MODULES):
        return UpstreamConnectError(provider, "proxy connection failed")
    raise exc
