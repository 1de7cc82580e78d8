"""One upstream answer, many readers: an append-only event log with a cursor per subscriber.

An answer's life is an explicit state machine, changed only by the methods below::

    WAITING --commit--> COMMITTED --finish--> FINISHED
       |                    |
       +------fail----------+-----fail-----> FAILED

``commit`` publishes the events held until the answer could be given (the head goes out
with them), ``publish`` appends what one upstream read brought, ``finish`` and ``fail`` end
it. Any other transition is a bug and raises ``IllegalTransition``. Each of the four offers
the new events to the parked readers exactly once.

The producer (the relay, owned by the hub) never awaits a client. A subscriber that has
caught up parks a ``Reader``; each offer hands the new events to every parked reader in the
producer's own step: a reader whose client socket has room writes them then and there (no
task wake-up, so an event reaches the socket in the loop step its bytes arrived in); any
other reader has its future resolved and its own task catches up from the log, with
backpressure and timeouts. A late subscriber starts at cursor 0.

The log keeps each event's frame bytes and receive time compactly (``FrameLog``), not
``Event`` objects; ``get`` parses an event again for the rare reader that needs its JSON.
It is bounded: past ``max_bytes`` its oldest events are dropped and any subscriber still
behind them is cut (``Lagged``), never silently skipped. A trimmed log is no longer joinable
or cacheable.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from ccbalancer.sharing.framelog import FrameLog
from ccbalancer.sharing.outcome import Outcome
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import parse_frame


class State(enum.Enum):
    WAITING = "waiting"  # nothing can be sent yet
    COMMITTED = "committed"  # the head and events are going out
    FINISHED = "finished"  # complete
    FAILED = "failed"  # ended by a failure (before or after the commit)


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


class Lagged(Exception):
    """The subscriber fell behind the log's retained window."""


class IllegalTransition(RuntimeError):
    """A producer bug: the answer cannot go from its state to the one asked for."""


class Reader:
    """A subscriber's place in the log. ``take`` is offered new events while the reader is
    parked; the base class never takes them, so its task is woken instead."""

    __slots__ = ("cursor", "parked")

    def __init__(self) -> None:
        self.cursor = 0  # the next event index this reader will write
        self.parked: asyncio.Future[None] | None = None

    def take(self, broadcast: Broadcast, start: int, events: Sequence[Event]) -> bool:
        """``events`` were just appended at index ``start``. Deliver them now, without
        awaiting, and advance the cursor; or return False (nothing delivered) to have the
        reader's own task woken."""
        return False


class Broadcast:
    __slots__ = (
        "_log",
        "_loop",
        "_readers",
        "_waiters",
        "bytes",
        "created",
        "failure",
        "head",
        "key",
        "max_bytes",
        "outcome",
        "state",
        "subscribers",
        "trimmed",
    )

    def __init__(
        self, key: str | None, max_bytes: int, created: float, outcome: Outcome | None = None
    ) -> None:
        self.key = key
        self.max_bytes = max_bytes
        self.created = created
        self.outcome = outcome if outcome is not None else Outcome()
        self.state = State.WAITING
        self.head: Head | None = None
        self.failure: Failure | None = None
        self._log = FrameLog()  # each event's exact bytes, framing included
        # one future per waiting subscriber, resolved by the next offer: a cancelled
        # subscriber cancels only its own (no shield, no shared future to protect)
        self._waiters: list[asyncio.Future[None]] = []
        self._readers: list[Reader] = []  # parked at the end of the log
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bytes = 0
        self.trimmed = False
        self.subscribers = 0

    # -- the producer's side: the only places that change the state -----------------------

    def commit(self, head: Head, events: Sequence[Event]) -> None:
        self._expect(State.WAITING, "commit")
        self.head = head
        self.state = State.COMMITTED
        self._offer(events)

    def publish(self, events: Sequence[Event]) -> None:
        """Append what arrived together (one upstream read): offered once, one write per
        caught-up client."""
        if self.state is not State.COMMITTED:
            self._expect(State.COMMITTED, "publish")
        if events:
            self._offer(events)

    def finish(self, events: Sequence[Event] = ()) -> None:
        self._expect(State.COMMITTED, "finish")
        self.state = State.FINISHED
        self._offer(events)

    def fail(self, failure: Failure, events: Sequence[Event] = ()) -> None:
        """End the answer. ``events`` (a committed stream's ``event: error`` frame) go out
        first; a stream that just stopped would read as 'cut off' to Claude Code."""
        if self.state is not State.COMMITTED:
            self._expect(State.WAITING, "fail")
            events = ()  # nothing was sent: the client gets a status, not frames
        self.failure = failure
        self.state = State.FAILED
        self._offer(events)

    def _expect(self, state: State, action: str) -> None:
        if self.state is not state:
            raise IllegalTransition(f"cannot {action} an answer that is {self.state.value}")

    def _offer(self, events: Sequence[Event]) -> None:
        log = self._log
        start = log.end
        size = self.bytes
        for event in events:
            size += log.append(event.raw, event.received)
        self.bytes = size
        if size > self.max_bytes:
            self._trim()
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        readers = self._readers
        if readers:
            # Every parked reader at the offer's start may take the events now (a client that
            # keeps up gets them in this step, the end of the answer included); at the end,
            # every reader's own task is woken to finish its response.
            live = self.state is State.COMMITTED
            base = log.base
            kept: list[Reader] = []
            for reader in readers:
                parked = reader.parked
                if parked is None or parked.done():
                    continue  # its task was cancelled (the client left)
                if events and reader.cursor == start >= base:
                    try:
                        took = reader.take(self, start, events)
                    except Exception:
                        # one reader's failure is its own task's to meet, never the
                        # producer's (and so every other subscriber's)
                        took = False
                    if took and live:
                        kept.append(reader)
                        continue
                parked.set_result(None)
            self._readers = kept

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

    # -- the subscribers' side -------------------------------------------------------------

    @property
    def end(self) -> int:
        return self._log.end

    @property
    def ready(self) -> bool:
        """The client can be answered: committed, or ended before committing."""
        return self.state is not State.WAITING

    @property
    def done(self) -> bool:
        return self.state is State.FINISHED or self.state is State.FAILED

    @property
    def succeeded(self) -> bool:
        return self.state is State.FINISHED

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

    def gaps(self) -> tuple[int, float | None, float | None]:
        """How the answer's events were spaced as they arrived: ``FrameLog.gaps``."""
        return self._log.gaps()

    def get(self, index: int) -> Event:
        """Event ``index``, parsed again from its frame. Raises ``Lagged`` if trimmed."""
        log = self._log
        if index < log.base:
            raise Lagged
        event = parse_frame(log.frame(index), log.received(index))
        assert event is not None  # only frames with data are logged
        return event

    async def wait(self) -> None:
        """Until the next offer (commit, publish or end)."""
        waiter = self._future()
        self._waiters.append(waiter)
        await waiter

    async def park(self, reader: Reader) -> None:
        """Until ``reader`` cannot take an offer itself, or the answer ends."""
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


def abandon(broadcast: Broadcast, status: int, uncommitted_type: str, message: str) -> None:
    """End an answer that is given up on (by the hub, or by a follower of another instance).
    A committed stream gets an ``event: error`` (a stream that just stops reads as 'cut off'
    to Claude Code, which then sends continuation requests instead of retrying); a client
    still waiting for the head gets an error status."""
    if broadcast.state is State.COMMITTED:
        error = {"type": "api_error", "message": message}
        frame = encode_event("error", {"type": "error", "error": error})
        broadcast.fail(Failure(status, "api_error", message, True), [frame])
    elif broadcast.state is State.WAITING:
        broadcast.fail(Failure(status, uncommitted_type, message, False))
