"""The upstream side as the relay sees it: open a call, stream its body to a sink, close.

``upstream.client.UpstreamClient`` is the real transport (pooled aiohttp sessions);
``MemoryTransport`` is an in-memory one the tests drive by hand, so failover, commit,
deadlines and health release run as command sequences without sockets (the mitmproxy
playbook style). Both report only our own ``UpstreamError`` family.

A body is pushed, not pulled: the transport calls the sink from its own callbacks as bytes
arrive, so no task wakes up per event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from ccbalancer.config.schema import ProviderConfig, TimeoutPhase
from ccbalancer.errors import UpstreamError


class BodySink(Protocol):
    """Where a streamed body goes: ``data`` per arrival, then ``end`` or ``failed`` once."""

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...


class UpstreamCall(Protocol):
    """One open upstream response: ``stream`` its body or read an error ``body``; always
    ``close`` (after which the sink hears nothing more)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    @property
    def content_type(self) -> str: ...

    def header(self, name: str) -> str | None: ...

    def stream(self, sink: BodySink) -> None:
        """From now on, deliver the body to ``sink`` (what arrived already first)."""
        ...

    async def body(self, limit: int = 64 * 1024) -> bytes:
        """Up to ``limit`` bytes of an error answer; never raises for a short read."""
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
    """A response the test writes: ``send`` bytes, then ``end`` or ``cut``. Once the relay
    streams it, each of these reaches the relay's sink at once, in the test's own step."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self._status = status
        self._headers = {k.lower(): v for k, v in headers.items()}
        self._pending: list[bytes | UpstreamError | None] = []  # None: the end
        self._sink: BodySink | None = None
        self.closed = False

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
        self._deliver(data)

    def end(self) -> None:
        self._deliver(None)

    def cut(self, error: UpstreamError) -> None:
        self._deliver(error)

    def _deliver(self, item: bytes | UpstreamError | None) -> None:
        sink = self._sink
        if self.closed:
            return
        if sink is None:
            self._pending.append(item)
        elif isinstance(item, bytes):
            sink.data(item)
        elif item is None:
            sink.end()
        else:
            sink.failed(item)

    # the relay's side

    def stream(self, sink: BodySink) -> None:
        self._sink = sink
        pending, self._pending = self._pending, []
        for item in pending:
            self._deliver(item)

    async def body(self, limit: int = 64 * 1024) -> bytes:
        data = b"".join(item for item in self._pending if isinstance(item, bytes))
        self._pending.clear()
        return data[:limit]

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
