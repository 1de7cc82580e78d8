"""The upstream side as the relay sees it: open a call, read chunks, close.

``upstream.client.UpstreamClient`` is the real transport (pooled aiohttp sessions);
``MemoryTransport`` is an in-memory one the tests drive by hand, so failover, commit,
deadlines and health release run as command sequences without sockets (the mitmproxy
playbook style). Both raise only our own ``UpstreamError`` family.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ccbalancer.config.schema import ProviderConfig, TimeoutPhase
from ccbalancer.errors import UpstreamError


class UpstreamCall(Protocol):
    """One open upstream response. Read with ``chunk()`` until it returns b''; always close."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    @property
    def content_type(self) -> str: ...

    def header(self, name: str) -> str | None: ...

    async def chunk(self) -> bytes:
        """The next bytes available, b'' at a clean end; raises ``UpstreamError``."""
        ...

    async def body(self, limit: int = 64 * 1024) -> bytes:
        """Up to ``limit`` bytes of an error answer; never raises for a short read."""
        ...

    def abort(self, error: UpstreamError) -> None:
        """Make the pending (or next) ``chunk()`` raise ``error`` (a deadline passed)."""
        ...

    def close(self) -> None: ...


class UpstreamTransport(Protocol):
    async def open(
        self,
        provider: ProviderConfig,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: TimeoutPhase,
    ) -> UpstreamCall:
        """Send the request; returns once the status line and headers arrived."""
        ...


# -- the in-memory fake ------------------------------------------------------------------


@dataclass
class Sent:
    """What one ``open`` sent, for the test to look at."""

    provider: str
    url: str
    headers: dict[str, str]
    body: bytes


class MemoryCall:
    """A response the test writes: ``send`` bytes, then ``end`` or ``cut``."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._buffer: deque[bytes] = deque()
        self._eof = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.aborted: UpstreamError | None = None

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(self._headers.items())

    @property
    def content_type(self) -> str:
        return self._headers.get("content-type", "text/event-stream")

    def header(self, name: str) -> str | None:
        return self._headers.get(name.lower())

    # the test's side

    def send(self, data: bytes) -> None:
        self._buffer.append(data)
        self._wake()

    def end(self) -> None:
        self._eof = True
        self._wake()

    def cut(self, error: UpstreamError) -> None:
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # the relay's side

    async def chunk(self) -> bytes:
        while True:
            if self._error is not None:
                raise self._error
            if self._buffer:
                return self._buffer.popleft()
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    async def body(self, limit: int = 64 * 1024) -> bytes:
        parts = b"".join(self._buffer)
        self._buffer.clear()
        return parts[:limit]

    def abort(self, error: UpstreamError) -> None:
        self.aborted = error
        self.cut(error)

    def close(self) -> None:
        self.closed = True


@dataclass
class _Planned:
    call: MemoryCall | None
    error: UpstreamError | None


@dataclass
class MemoryTransport:
    """Answers ``open`` per provider from what the test planned (``respond`` / ``refuse``),
    in order; an unplanned open gets a fresh 200 event stream the test feeds through
    ``calls``. Every open is recorded in ``sent``."""

    sent: list[Sent] = field(default_factory=list)
    calls: list[MemoryCall] = field(default_factory=list)
    _plans: dict[str, deque[_Planned]] = field(default_factory=dict)
    _opened: asyncio.Queue[MemoryCall] | None = None

    def respond(
        self, provider: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> MemoryCall:
        call = MemoryCall(status, headers or {"content-type": "text/event-stream"})
        self._plans.setdefault(provider, deque()).append(_Planned(call, None))
        return call

    def refuse(self, provider: str, error: UpstreamError) -> None:
        """The next open to ``provider`` fails before any response (connect error...)."""
        self._plans.setdefault(provider, deque()).append(_Planned(None, error))

    async def opened(self) -> MemoryCall:
        """The next call opened (waits for it)."""
        if self._opened is None:
            self._opened = asyncio.Queue()
        return await self._opened.get()

    async def open(
        self,
        provider: ProviderConfig,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: TimeoutPhase,
    ) -> MemoryCall:
        self.sent.append(Sent(provider.name, url, headers, body))
        await asyncio.sleep(0)  # a real open always yields to the loop
        plans = self._plans.get(provider.name)
        planned = plans.popleft() if plans else _Planned(MemoryCall(200, {}), None)
        if planned.error is not None:
            raise planned.error
        assert planned.call is not None
        self.calls.append(planned.call)
        if self._opened is None:
            self._opened = asyncio.Queue()
        self._opened.put_nowait(planned.call)
        return planned.call
