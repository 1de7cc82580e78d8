"""Outbound HTTP: one long-lived pooled aiohttp session per provider.

This is the ONLY module that touches aiohttp's client or its exceptions: every aiohttp, socket
and TLS error is mapped here into the ``UpstreamError`` tree (errors.py), with a message we
wrote ourselves (aiohttp's own texts can carry proxy URLs with credentials).

Timeouts per phase (STYLE.md): ``sock_connect`` for the connection, ``sock_read`` for the wait
for response headers, then ``UpstreamResponse``'s own idle watchdog between body reads, and the
caller adds the first-event deadline. There is never a total deadline on a stream.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import urlsplit

import aiohttp

from ccbalancer.config.schema import ProviderConfig, TimeoutPhase
from ccbalancer.errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

READ_CHUNK = 2**16
MAX_ERROR_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class _SessionKey:
    name: str
    proxy: str | None


class UpstreamResponse:
    """An open upstream response. Read with ``chunk()`` until it returns b''; always ``close()``.

    Once the headers are in, the idle limit between reads is ours, not aiohttp's ``sock_read``:
    that re-arms a timer on every chunk the socket delivers (a timer object per event). Here
    one timer per stream checks, when it fires, how long ago the last chunk came, and either
    ends the read with a timeout or re-arms itself for the remaining time.
    """

    __slots__ = ("_loop", "_read", "_resp", "_seen", "_watch", "provider", "read_timeout")

    def __init__(self, provider: str, resp: aiohttp.ClientResponse, read_timeout: float) -> None:
        self.provider = provider
        self._resp = resp
        self._read = resp.content.readany
        self.read_timeout = read_timeout
        self._loop = asyncio.get_running_loop()
        self._seen = self._loop.time()
        self._watch: asyncio.TimerHandle | None = None
        connection = resp.connection
        if read_timeout > 0 and connection is not None and connection.protocol is not None:
            # the pool sets it again for the connection's next request
            connection.protocol.read_timeout = None
            self._watch = self._loop.call_at(self._seen + read_timeout, self._check_idle)

    def _check_idle(self) -> None:
        due = self._seen + self.read_timeout
        if self._loop.time() >= due:
            self._watch = None
            self._resp.content.set_exception(aiohttp.SocketTimeoutError("idle upstream"))
        else:
            self._watch = self._loop.call_at(due, self._check_idle)

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

    async def chunk(self) -> bytes:
        """The next bytes available (b'' at a clean EOF). Idle gaps are bounded by
        ``read_timeout``."""
        try:
            data = await self._read()
            self._seen = self._loop.time()
            return data
        except aiohttp.ClientPayloadError:
            raise UpstreamConnectError(self.provider, "connection closed mid-response") from None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(self.provider, "idle", self.read_timeout) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _map(self.provider, exc) from None

    async def body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """Up to ``limit`` bytes of the body (error answers); never raises for a short read."""
        parts: list[bytes] = []
        size = 0
        try:
            while size < limit:
                part = await self._read()
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return b"".join(parts)[:limit]

    def close(self) -> None:
        """Release the connection: back to the pool if the body was read, else dropped."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self._resp.release() if self._resp.content.at_eof() else self._resp.close()


class UpstreamClient:
    """Owns the sessions. Sessions survive reload for unchanged (name, proxy) pairs."""

    def __init__(self) -> None:
        self._sessions: dict[_SessionKey, aiohttp.ClientSession] = {}
        self._stale: list[aiohttp.ClientSession] = []

    def _session(self, provider: ProviderConfig) -> aiohttp.ClientSession:
        key = _SessionKey(provider.name, provider.proxy)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector: aiohttp.BaseConnector
            if provider.proxy and provider.proxy.startswith("socks"):
                # imported only when a provider needs it (~30 modules most users never use)
                from aiohttp_socks import ProxyConnector

                connector = ProxyConnector.from_url(provider.proxy, limit=0, keepalive_timeout=60)
            else:
                connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[_REUSE_TRACE],
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
                read_bufsize=READ_CHUNK,
            )
            self._sessions[key] = session
        return session

    def reconcile(self, providers: tuple[ProviderConfig, ...]) -> None:
        """After a reload: sessions of removed/changed providers are closed at shutdown, not
        now, so streams that started on the old config finish on their connections."""
        wanted = {_SessionKey(p.name, p.proxy) for p in providers}
        for key in [k for k in self._sessions if k not in wanted]:
            self._stale.append(self._sessions.pop(key))

    async def open(
        self,
        provider: ProviderConfig,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: TimeoutPhase,
    ) -> UpstreamResponse:
        """Send the request; returns once the status line and headers arrived."""
        session = self._session(provider)
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
            reuse = {"reused": False}
            try:
                resp = await session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=timeout,
                    proxy=http_proxy,
                    allow_redirects=False,
                    trace_request_ctx=reuse,
                )
                break
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # A pooled keep-alive connection the upstream had already closed: nothing of
                # ours reached a client, so one more try on a fresh connection is safe.
                if attempt == 1 and reuse["reused"]:
                    continue
                raise _map(provider.name, exc) from None
            except asyncio.CancelledError:
                raise
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                connecting = isinstance(exc, aiohttp.ConnectionTimeoutError)
                phase = "connect" if connecting else "response"
                seconds = timeouts.connect_timeout if connecting else timeouts.read_timeout
                raise UpstreamTimeout(provider.name, phase, seconds) from None
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise _map(provider.name, exc) from None
            except Exception as exc:  # aiohttp_socks raises its own ProxyError family
                if type(exc).__module__.startswith(("aiohttp_socks", "python_socks")):
                    raise UpstreamConnectError(provider.name, "proxy connection failed") from None
                raise
        return UpstreamResponse(provider.name, resp, timeouts.read_timeout)

    async def close(self) -> None:
        sessions = [*self._sessions.values(), *self._stale]
        self._sessions.clear()
        self._stale.clear()
        for session in sessions:
            await session.close()


async def _on_reuse(
    session: aiohttp.ClientSession,
    ctx: SimpleNamespace,
    params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    if isinstance(ctx.trace_request_ctx, dict):
        ctx.trace_request_ctx["reused"] = True


_REUSE_TRACE = aiohttp.TraceConfig()
_REUSE_TRACE.on_connection_reuseconn.append(_on_reuse)
_REUSE_TRACE.freeze()


def _map(provider: str, exc: BaseException) -> UpstreamError:
    """aiohttp/OS exception -> ours, with a message that carries no URL or credential."""
    if isinstance(
        exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError
    ):
        return UpstreamConnectError(provider, "TLS/SSL handshake failed (ssl)")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return UpstreamConnectError(provider, "cannot connect to the configured proxy")
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return UpstreamConnectError(provider, "DNS lookup failed (network)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        host = f"{exc.host}:{exc.port}"
        why = exc.os_error.strerror or type(exc.os_error).__name__
        return UpstreamConnectError(provider, f"connection to {host} failed: {why}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamConnectError(provider, "connection closed by upstream before a response")
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamProtocolError(provider, f"invalid HTTP response ({exc.status})")
    if isinstance(exc, aiohttp.InvalidURL):
        return UpstreamConnectError(provider, "invalid upstream URL")
    if isinstance(exc, ConnectionResetError):
        return UpstreamConnectError(provider, "connection reset by upstream")
    if isinstance(exc, OSError):
        return UpstreamConnectError(
            provider, f"network error: {exc.strerror or type(exc).__name__}"
        )
    return UpstreamConnectError(provider, f"connection error ({type(exc).__name__})")


def host_of(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1]
