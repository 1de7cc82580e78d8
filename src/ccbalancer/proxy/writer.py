"""One subscriber: from the broadcast log to one client connection.

A client that keeps up is written to by the producer itself: its ``_ClientReader`` is parked on
the log, and each offer writes the new events straight to the client's socket
(``proxy.direct``), in the same loop step that parsed them (no task wake-up per event;
STYLE.md's rule that the producer never awaits a client holds, since it only writes to a
socket with an empty buffer).
Otherwise the subscriber's own request task writes from its cursor, several events per write
when it is behind, so a slow client only slows itself. Either way each event is written as soon
as it is available — that is the flush. The request task is cancelled by aiohttp when the client
disconnects (``handler_cancellation``), which ends the subscriber even while it is parked. A
client that is behind is judged by the bytes it actually accepts (``proxy.pace``): in every
``client_write_timeout`` it must take a catch-up piece (64 KB, or all that is pending); one that
took nothing "stopped reading", one that took less is "too slow", and either is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from ccbalancer.proxy import respond
from ccbalancer.proxy.direct import DirectWriter, direct_writer
from ccbalancer.proxy.pace import Pacer
from ccbalancer.sharing.broadcast import Broadcast, Lagged, Reader
from ccbalancer.sse.accumulate import MessageAccumulator
from ccbalancer.sse.event import Event

# A catch-up write (a late joiner, a cache replay, a client that was behind) carries at most
# this much, so a long answer is not copied whole; a client must accept this much (or all that
# is pending) in every client_write_timeout (proxy.pace). A client that keeps up is written to
# by the producer directly and never pays for the watch.
_CATCH_UP_BYTES = 64 * 1024


@dataclass(slots=True)
class Delivery:
    """What one streaming subscriber got, kept up to date as it goes: the request record is
    filled from it even when the client disconnects and the writer is cancelled."""

    response: web.StreamResponse | None = None
    prepared: float | None = None  # perf_counter() when the headers went out
    lost: str = ""  # why the client stopped receiving early ("" when it got everything)
    reader: _ClientReader | None = None

    @property
    def events(self) -> int:
        return self.reader.cursor if self.reader is not None else 0

    @property
    def bytes(self) -> int:
        return self.reader.written if self.reader is not None else 0


class _ClientReader(Reader):
    """One streaming client's cursor, and the direct path to its socket."""

    __slots__ = ("direct", "on_event", "trace", "written")

    def __init__(
        self,
        direct: DirectWriter | None,
        on_event: Callable[[float], None] | None,
        trace: Callable[[int, float, float], None] | None,
    ) -> None:
        super().__init__()
        self.direct = direct  # None: aiohttp's writer does it all
        self.on_event = on_event
        self.trace = trace
        self.written = 0

    def take(self, broadcast: Broadcast, start: int, events: Sequence[Event]) -> bool:
        # Only once this subscriber's task has written what came before (cursor > 0): a
        # client that is behind is served, and timed, by its own task.
        direct = self.direct
        if direct is None or not self.cursor:
            return False
        data = events[0].raw if len(events) == 1 else b"".join([e.raw for e in events])
        if not direct.write(data):
            return False
        self.cursor = start + len(events)
        self.written += len(data)
        if self.on_event is not None or self.trace is not None:
            self._timed(start, events)
        return True

    def _timed(self, start: int, events: Sequence[Event]) -> None:
        now = time.perf_counter()
        on_event, trace = self.on_event, self.trace
        for offset, event in enumerate(events):
            if event.received:
                if on_event is not None:
                    on_event(now - event.received)
                if trace is not None:
                    trace(start + offset + 1, event.received, now)

    def delivered(self, broadcast: Broadcast, start: int, stop: int, size: int) -> None:
        self.cursor = stop
        self.written += size
        on_event, trace = self.on_event, self.trace
        if on_event is None and trace is None:
            return
        now = time.perf_counter()
        for index in range(start, stop):
            received = broadcast.received(index)
            if received:
                if on_event is not None:
                    on_event(now - received)
                if trace is not None:
                    trace(index + 1, received, now)


async def wait_ready(broadcast: Broadcast) -> None:
    while not broadcast.ready:
        await broadcast.wait()


async def stream_to(
    request: web.Request,
    broadcast: Broadcast,
    headers: dict[str, str],
    write_timeout: float,
    on_event: Callable[[float], None] | None,
    trace: Callable[[int, float, float], None] | None,
    delivery: Delivery,
) -> web.StreamResponse:
    """Write the committed stream from this subscriber's own cursor; ``delivery`` says how far
    it got (also when this is cancelled because the client left)."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    delivery.response = response
    await response.prepare(request)
    delivery.prepared = time.perf_counter()
    transport = request.transport
    reader = _ClientReader(direct_writer(request, response), on_event, trace)
    delivery.reader = reader
    # catch-up writes (a late joiner, a client that fell behind): each is watched
    pacer = Pacer(transport, write_timeout, _CATCH_UP_BYTES) if transport is not None else None
    try:
        while True:
            while reader.cursor < broadcast.end:
                start = reader.cursor
                try:
                    stop, data = broadcast.frames(start, broadcast.end, _CATCH_UP_BYTES)
                except Lagged:
                    await response.write(respond.lagged_event())
                    delivery.lost = "too slow: fell behind the stream's retained log"
                    return response
                if pacer is not None:
                    lost = await pacer.write(response, data)
                    if lost:  # dropped: what is still queued for it is thrown away too
                        pacer.abort()
                        delivery.lost = lost
                        return response
                else:
                    await response.write(data)
                reader.delivered(broadcast, start, stop, len(data))
                del data  # not kept alive while parked
            if broadcast.done:
                break
            await broadcast.park(reader)
        await response.write_eof()
    except ConnectionResetError:
        delivery.lost = "disconnected"
    return response


class _Accumulating(Reader):
    """A non-streaming client: the producer adds the new events to its Message directly."""

    __slots__ = ("accumulator",)

    def __init__(self, accumulator: MessageAccumulator) -> None:
        super().__init__()
        self.accumulator = accumulator

    def take(self, broadcast: Broadcast, start: int, events: Sequence[Event]) -> bool:
        for event in events:  # should one raise, the broadcast wakes this client's task
            self.accumulator.add(event)
            self.cursor += 1
        return True


async def accumulate(broadcast: Broadcast) -> MessageAccumulator:
    """Follow the log to its end, building the Message (non-streaming clients); the
    accumulator's ``events`` counts what it consumed."""
    accumulator = MessageAccumulator()
    reader = _Accumulating(accumulator)
    while True:
        while reader.cursor < broadcast.end:
            accumulator.add(broadcast.get(reader.cursor))
            reader.cursor += 1
        if broadcast.done:
            return accumulator
        await broadcast.park(reader)


def message_response(accumulator: MessageAccumulator, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=200,
        body=orjson.dumps(accumulator.result()),
        headers=headers,
        content_type="application/json",
    )
