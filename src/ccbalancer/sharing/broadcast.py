"""One upstream answer, many readers: an append-only event log with a cursor per subscriber.

The producer (the upstream attempt, owned by the hub) appends; it never awaits a client. A
subscriber that has caught up parks a ``Reader`` on the log. The next append hands the new
frames to every parked reader in the producer's own step: a reader whose client socket has
room writes them then and there (no task wake-up, so an event reaches the socket one loop
step after its bytes arrived); any other reader has its future resolved and its own task
catches up, with backpressure and timeouts. A late subscriber starts at cursor 0 and catches
up from the log.

The log keeps each event's frame bytes and receive time compactly (``FrameLog``), not
``Event`` objects; ``get`` parses an event again for the rare reader that needs its JSON
(non-streaming clients).

The log is bounded: past ``max_bytes`` its oldest events are dropped and any subscriber still
behind them is cut (``Lagged``), never silently skipped. A trimmed log is no longer joinable or
cacheable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ccbalancer.sharing.framelog import FrameLog
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import parse_frame


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


class Reader:
    """A subscriber's place in the log. ``take`` is offered the new events while the reader is
    parked; the base class never takes them, so its task is woken instead."""

    __slots__ = ("cursor", "parked")

    def __init__(self) -> None:
        self.cursor = 0  # the next event index this reader will write
        self.parked: asyncio.Future[None] | None = None

    def take(self, broadcast: Broadcast, end: int) -> bool:
        """Write events ``cursor..end`` now, without awaiting, and advance; or return False
        (nothing written) to have the reader's own task woken."""
        return False


class Broadcast:
    __slots__ = (
        "_log",
        "_loop",
        "_readers",
        "_waiters",
        "bytes",
        "created",
        "cursors",
        "done",
        "failure",
        "fresh",
        "head",
        "key",
        "max_bytes",
        "meta",
        "remote",
        "subscribers",
        "trimmed",
    )

    def __init__(self, key: str | None, max_bytes: int, created: float) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.created = created
        self._log = FrameLog()  # each event's exact bytes, framing included
        # one future per waiting subscriber, resolved by the next append: a cancelled
        # subscriber cancels only its own (no shield, no shared future to protect)
        self._waiters: list[asyncio.Future[None]] = []
        self._readers: list[Reader] = []  # parked at the end of the log
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
        self.remote = False  # followed from another instance's call (sharing.remote)
        # the events added since readers were last offered any (a reader that needs the
        # events themselves, not their bytes, takes them from here instead of parsing frames)
        self.fresh: list[Event] = []

    # -- producer side ---------------------------------------------------------------------

    def commit(self, head: Head, held: list[Event]) -> None:
        self.head = head
        for event in held:
            self._push(event)
        self._wake()

    def append(self, event: Event) -> None:
        self._push(event)
        self._wake()

    def add(self, event: Event) -> None:
        """Append without telling the readers yet: events that arrived together (one upstream
        read) are then offered together by ``publish``, one write per reader."""
        self._push(event)

    def publish(self) -> None:
        """Offer what ``add`` appended since the last offer."""
        if self.fresh:
            self._wake()

    def _push(self, event: Event) -> None:
        self.fresh.append(event)
        self.bytes += self._log.append(event.raw, event.received)
        if self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest half of the retained bytes; readers behind it will be cut."""
        target = self.max_bytes // 2
        log = self._log
        index, newest = log.base, log.end - 1
        while index < newest and self.bytes > target:
            self.bytes -= log.size(index)
            index += 1
        log.drop_oldest(index - log.base)
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
        readers = self._readers
        if readers:
            # At the end, every reader's own task finishes its response; before it, a reader
            # that takes the new events stays parked for the next ones.
            end = self._log.end
            base = self._log.base
            kept: list[Reader] = []
            for reader in readers:
                parked = reader.parked
                if parked is None or parked.done():
                    continue  # its task was cancelled (the client left)
                if not self.done and reader.cursor >= base and _took(reader, self, end):
                    kept.append(reader)
                else:
                    parked.set_result(None)
            self._readers = kept
        self.fresh.clear()

    # -- subscriber side -------------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._log.end

    @property
    def ready(self) -> bool:
        """The client can be answered: committed, or failed before committing."""
        return self.head is not None or self.done

    def frames(self, start: int, stop: int, limit: int = 1 << 62) -> tuple[int, bytes]:
        """Events ``start..stop`` as one byte string, cut after ``limit`` bytes (at least one
        event): the index reached, and the bytes. Raises ``Lagged`` if ``start`` was trimmed."""
        log = self._log
        if start < log.base:
            raise Lagged
        if stop == log.end and stop - start == 1:  # a caught-up reader: the newest frame
            return stop, log.last
        parts: list[bytes] = []
        size = 0
        index = start
        while index < stop and (size < limit or index == start):
            frame = log.frame(index)
            parts.append(frame)
            size += len(frame)
            index += 1
        return index, b"".join(parts)

    def received(self, index: int) -> float:
        """When event ``index`` arrived from the upstream (0.0 for synthesised events, and for
        events trimmed meanwhile)."""
        return self._log.received(index)

    def get(self, index: int) -> Event:
        """Event ``index``, parsed again from its frame. Raises ``Lagged`` if trimmed."""
        log = self._log
        if index < log.base:
            raise Lagged
        event = parse_frame(log.frame(index), log.received(index))
        assert event is not None  # only frames with data are logged
        return event

    def events(self) -> list[Event]:
        """All retained events (only meaningful for an untrimmed log)."""
        return [self.get(index) for index in range(self._log.base, self.end)]

    async def wait(self) -> None:
        """Until the next append, commit or end."""
        waiter = self._future()
        self._waiters.append(waiter)
        await waiter

    async def park(self, reader: Reader) -> None:
        """Until ``reader`` cannot take an append itself, or the answer ends."""
        reader.parked = parked = self._future()
        self._readers.append(reader)
        try:
            await parked
        finally:
            reader.parked = None
            if not parked.done() or parked.cancelled():  # the client left while parked
                self._forget(reader)

    def _forget(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)

    def _future(self) -> asyncio.Future[None]:
        loop = self._loop
        if loop is None:  # looked up once: get_running_loop() costs a getpid() on 3.11
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    @property
    def succeeded(self) -> bool:
        return self.done and self.failure is None and self.head is not None


def _took(reader: Reader, broadcast: Broadcast, end: int) -> bool:
    """One reader's failure is its own task's to meet, never the producer's (and so every
    other subscriber's)."""
    try:
        return reader.take(broadcast, end)
    except Exception:
        return False


def abandon(broadcast: Broadcast, status: int, uncommitted_type: str, message: str) -> None:
    """End an answer that is given up on (by the hub, or by a follower of another instance).
    A committed stream gets an ``event: error`` (a stream that just stops reads as 'cut off'
    to Claude Code, which then sends continuation requests instead of retrying); a client
    still waiting for the head gets an error status."""
    if broadcast.head is not None:
        error = {"type": "api_error", "message": message}
        broadcast.append(encode_event("error", {"type": "error", "error": error}))
        broadcast.fail(Failure(status, "api_error", message, True))
    else:
        broadcast.fail(Failure(status, uncommitted_type, message, False))
