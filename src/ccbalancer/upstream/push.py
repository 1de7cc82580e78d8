"""An upstream body pushed to its reader as it arrives, without a task per read.

The one place that relies on aiohttp internals on the read side. A response body is an
aiohttp ``StreamReader``: the connection's parser feeds it, and a coroutine awaiting
``readany()`` is woken through the future in its ``_waiter`` slot. Waking a task, running its
step and resuming three coroutine frames cost more per event than everything ccbalancer
does with the event (docs/benchmarks.md). So a ``Pusher`` takes the future's place: aiohttp
calls ``set_result`` on it when data or the end arrives, and ``set_exception`` when the
connection breaks. The pusher then drains the buffer once per loop step (``call_soon``), so
what one socket read brought goes to the sink together, as ``readany`` would have returned it.

A broken HTTP framing (an invalid chunk-size line) is another matter: aiohttp closes the
connection but never tells the body, so ``readany`` would wait until the next idle timeout.
The pusher also watches the connection (``ResponseHandler.closed``): a connection lost before
the body's end is reported as a cut the moment it happens.

Verified against the aiohttp versions in ``VERIFIED`` (tests/integration/test_upstream_push.py
pins it); with any other version ``attach`` declines and the caller reads with a task.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import aiohttp
from aiohttp.streams import StreamReader

VERIFIED = ("3.14.",)


class Sink(Protocol):
    """Where a pushed body goes: ``data`` per arrival, then ``end`` or ``failed`` once."""

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


class Pusher:
    __slots__ = ("_connection", "_content", "_loop", "_lost", "_scheduled", "_sink", "closed")

    def __init__(
        self,
        content: StreamReader,
        sink: Sink,
        loop: asyncio.AbstractEventLoop,
        connection: asyncio.Future[None] | None,
    ) -> None:
        self._content = content
        self._sink = sink
        self._loop = loop
        self._connection = connection  # resolved when the connection is lost
        self._scheduled = False
        self._lost = False
        self.closed = False
        if connection is not None:
            connection.add_done_callback(self._connection_lost)

    # what aiohttp calls on the object in ``StreamReader._waiter`` (helpers.set_result and
    # helpers.set_exception): data, the end of the body, or a broken connection

    def done(self) -> bool:
        return False

    def set_result(self, _: object) -> None:
        self._schedule()

    def set_exception(self, exc: BaseException) -> None:
        self._schedule()  # StreamReader.set_exception has stored it; the drain reports it

    def _connection_lost(self, _: asyncio.Future[None]) -> None:
        self._lost = True
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and not self.closed:
            self._scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Hand the sink everything buffered, then the end or the failure, or wait again."""
        self._scheduled = False
        if self.closed:
            return
        content = self._content
        if content._waiter is self:  # type: ignore[comparison-overlap]
            content._waiter = None  # scheduled by attach, before anything arrived
        failure = content.exception()
        if failure is not None:
            self.closed = True
            self._sink.failed(failure)
            return
        data = content.read_nowait()
        if data:
            # Reading may resume a paused parser, which feeds more bytes in at once (with
            # no waiter to tell): read until nothing is left, or they would sit unread.
            while more := content.read_nowait():
                data += more
            self._sink.data(data)
            if self.closed:  # the sink finished with the response
                return
        if content.is_eof():
            self.closed = True
            self._sink.end()
            return
        if self._lost:  # gone without the body's end (and without telling it)
            self.closed = True
            self._sink.failed(aiohttp.ClientPayloadError("connection closed mid-response"))
            return
        content._waiter = self  # type: ignore[assignment]  # wait for the next arrival

    def close(self) -> None:
        self.closed = True
        if self._content._waiter is self:  # type: ignore[comparison-overlap]
            self._content._waiter = None
        if self._connection is not None:  # a pooled connection outlives this response
            self._connection.remove_done_callback(self._connection_lost)


def attach(response: aiohttp.ClientResponse, sink: Sink) -> Pusher | None:
    """Push ``response``'s body to ``sink`` from now on (what is buffered first), or None when
    this aiohttp is not one the hook was verified on."""
    content = response.content
    if not aiohttp.__version__.startswith(VERIFIED) or content._waiter is not None:
        return None
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    lost = protocol.closed if protocol is not None else None
    pusher = Pusher(content, sink, asyncio.get_running_loop(), lost)
    content._waiter = pusher  # type: ignore[assignment]
    pusher._schedule()  # bytes that came with the headers
    return pusher
