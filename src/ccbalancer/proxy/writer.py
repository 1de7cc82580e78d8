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
client whose socket stays full past ``client_write_timeout`` is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from aiohttp import web

from ccbalancer.proxy import respond
from ccbalancer.proxy.direct import DirectWriter, direct_writer
from ccbalancer.sharing.broadcast import Broadcast, Lagged, Reader
from ccbalancer.sse.accumulate import MessageAccumulator
from ccbalancer.sse.event import Event

# Bytes already waiting in the socket buffer mean the client is not keeping up: only then is a
# write wrapped in a timeout (a timer per event would cost more than the write itself). A
# client that reads keeps this at 0, since writes go straight to the socket.
_BACKLOG = 0
# A catch-up write (a late joiner, a cache replay, a client that was behind) carries at most
# this much, so a long answer is not copied whole and a slow client is timed per piece.
_CATCH_UP_BYTES = 64 * 1024


@dataclass(slots=True)
class Delivery:
    """What one streaming subscriber got."""

    response: web.StreamResponse
    prepared: float  # perf_counter() when the headers went out
    events: int = 0
    bytes: int = 0
    lost: str = ""  # why the client stopped receiving early ("" when it got everything)


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
) -> Delivery:
    """Write the committed stream from this subscriber's own cursor."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "text/event-stream"
    await response.prepare(request)
    delivery = Delivery(response, time.perf_counter())
    transport = request.transport
    reader = _ClientReader(direct_writer(request, response), on_event, trace)
    try:
        while True:
            while reader.cursor < broadcast.end:
                start = reader.cursor
                try:
                    stop, data = broadcast.frames(start, broadcast.end, _CATCH_UP_BYTES)
                except Lagged:
                    await response.write(respond.lagged_event())
                    delivery.lost = "fell behind the stream's retained log"
                    return delivery
                if transport is not None and transport.get_write_buffer_size() > _BACKLOG:
                    try:
                        async with asyncio.timeout(write_timeout):
                            await response.write(data)
                    except TimeoutError:
                        transport.close()
                        delivery.lost = f"stopped reading for {write_timeout:g}s"
                        return delivery
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
    finally:
        delivery.events, delivery.bytes = reader.cursor, reader.written
    return delivery


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
