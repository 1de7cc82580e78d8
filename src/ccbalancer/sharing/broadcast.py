"""One upstream answer, many readers: an append-only event log with a cursor per subscriber.

The producer (the upstream attempt, owned by the hub) appends; it never awaits a client. Each
subscriber reads from its own cursor in its own task and waits on a shared future that the
next append resolves — one wake-up per event for all waiters, no polling. A late subscriber
starts at cursor 0 and catches up from the log.

The log is bounded: past ``max_bytes`` its oldest events are dropped and any subscriber still
behind them is cut (``Lagged``), never silently skipped. A trimmed log is no longer joinable or
cacheable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ccbalancer.sse.event import EVENT_OVERHEAD, Event


@dataclass(slots=True)
class Head:
    """What the client gets before the body once an attempt commits."""

    provider: str
    headers: dict[str, str]  # upstream headers to return (request-id, rate limits)


@dataclass(slots=True)
class Failure:
    """How the answer failed. ``committed``: events were already published."""

    status: int
    error_type: str
    message: str
    committed: bool
    provider: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # an upstream client-error body returned as is
    content_type: str = "application/json"


class Lagged(Exception):
    """The subscriber fell behind the log's retained window."""


class Broadcast:
    __slots__ = (
        "_base",
        "_events",
        "_loop",
        "_waiters",
        "bytes",
        "created",
        "cursors",
        "done",
        "failure",
        "head",
        "key",
        "max_bytes",
        "meta",
        "subscribers",
        "trimmed",
    )

    def __init__(self, key: str | None, max_bytes: int, created: float) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.created = created
        self._events: list[Event] = []
        self._base = 0  # absolute index of _events[0]
        # one future per waiting subscriber, resolved by the next append: a cancelled
        # subscriber cancels only its own (no shield, no shared future to protect)
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes = 0
        self.head: Head | None = None
        self.failure: Failure | None = None
        self.done = False
        self.trimmed = False
        self.subscribers = 0
        # subscriber id -> events written so far (for inspection; trimming cuts laggards anyway)
        self.cursors: dict[int, int] = {}
        self.meta: Any = None  # what the producer learns (proxy.job.Outcome), for the records

    # -- producer side ---------------------------------------------------------------------

    def commit(self, head: Head, held: list[Event]) -> None:
        self.head = head
        for event in held:
            self._push(event)
        self._wake()

    def append(self, event: Event) -> None:
        self._push(event)
        self._wake()

    def _push(self, event: Event) -> None:
        self._events.append(event)
        self.bytes += len(event.raw) + EVENT_OVERHEAD
        if self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest half of the retained bytes; readers behind it will be cut."""
        target = self.max_bytes // 2
        dropped = 0
        while self._events and self.bytes > target:
            self.bytes -= len(self._events[dropped].raw) + EVENT_OVERHEAD
            dropped += 1
            if dropped == len(self._events):
                break
        del self._events[:dropped]
        self._base += dropped
        self.trimmed = True

    def finish(self) -> None:
        self.done = True
        self._wake()

    def fail(self, failure: Failure) -> None:
        self.failure = failure
        self.done = True
        self._wake()

    def _wake(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- subscriber side -------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._base + len(self._events)

    @property
    def ready(self) -> bool:
        """The client can be answered: committed, or failed before committing."""
        return self.head is not None or self.done

    def get(self, index: int) -> Event:
        if index < self._base:
            raise Lagged
        return self._events[index - self._base]

    def events(self) -> list[Event]:
        """All events (only meaningful for an untrimmed log)."""
        return list(self._events)

    async def wait(self) -> None:
        """Until the next append, commit or end."""
        loop = self._loop
        if loop is None:  # looked up once: get_running_loop() costs a getpid() on 3.11
            loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        await waiter

    @property
    def succeeded(self) -> bool:
        return self.done and self.failure is None and self.head is not None
