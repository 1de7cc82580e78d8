"""One subscriber: from the broadcast log to one client connection.

Each subscriber runs in its own request task with its own cursor, so a slow client only slows
itself (STYLE.md: the producer never awaits a client). One ``write`` per event — that is the
flush. The request task is cancelled by aiohttp when the client disconnects
(``handler_cancellation``), which ends the subscriber even while it waits for the next event.
A client whose socket stays full past ``client_write_timeout`` is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from ccbalancer.proxy import respond
from ccbalancer.sharing.broadcast import Broadcast, Lagged
from ccbalancer.sse.accumulate import MessageAccumulator

# Bytes already waiting in the socket buffer mean the client is not keeping up: only then is a
# write wrapped in a timeout (a timer per event would cost more than the write itself). A
# client that reads keeps this at 0, since writes go straight to the socket.
_BACKLOG = 0


@dataclass(slots=True)
class Delivery:
    """What one streaming subscriber got."""

    response: web.StreamResponse
    prepared: float  # perf_counter() when the headers went out
    events: int = 0
    bytes: int = 0
    lost: str = ""  # why the client stopped receiving early ("" when it got everything)


async def wait_ready(broadcast: Broadcast) -> None:
    while not broadcast.ready:
        await broadcast.wait()


async def stream_to(
    request: web.Request,
    broadcast: Broadcast,
    headers: dict[str, str],
    sub_id: int,
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
    cursors = broadcast.cursors
    cursor = 0
    written = 0
    try:
        while True:
            end = broadcast.end
            while cursor < end:
                try:
                    event = broadcast.get(cursor)
                except Lagged:
                    await response.write(respond.lagged_event())
                    delivery.lost = "fell behind the stream's retained log"
                    return delivery
                raw = event.raw
                if transport is not None and transport.get_write_buffer_size() > _BACKLOG:
                    try:
                        async with asyncio.timeout(write_timeout):
                            await response.write(raw)
                    except TimeoutError:
                        transport.close()
                        delivery.lost = f"stopped reading for {write_timeout:g}s"
                        return delivery
                else:
                    await response.write(raw)
                cursor += 1
                written += len(raw)
                if event.received:
                    now = time.perf_counter()
                    if on_event is not None:
                        on_event(now - event.received)
                    if trace is not None:
                        trace(cursor, event.received, now)
            cursors[sub_id] = cursor
            if cursor < broadcast.end:
                continue  # more arrived while this client's writes were blocked
            if broadcast.done:
                break
            await broadcast.wait()
        await response.write_eof()
    except ConnectionResetError:
        delivery.lost = "disconnected"
    finally:
        delivery.events, delivery.bytes = cursor, written
    return delivery


async def accumulate(broadcast: Broadcast, sub_id: int) -> MessageAccumulator:
    """Follow the log to its end, building the Message (non-streaming clients); the
    accumulator's ``events`` counts what it consumed."""
    accumulator = MessageAccumulator()
    cursor = 0
    while True:
        end = broadcast.end
        while cursor < end:
            accumulator.add(broadcast.get(cursor))
            cursor += 1
        broadcast.cursors[sub_id] = cursor
        if broadcast.done:
            return accumulator
        await broadcast.wait()


def message_response(accumulator: MessageAccumulator, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=200,
        body=orjson.dumps(accumulator.result()),
        headers=headers,
        content_type="application/json",
    )
