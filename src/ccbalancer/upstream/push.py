"""An upstream body pushed to its reader as it arrives, without a task per read.

The one place that relies on aiohttp internals on the read side. A response body is an aiohttp
``StreamReader`` that the connection's C parser feeds (``feed_data`` per HTTP chunk, wrapped in
``begin/end_http_chunk_receiving``; ``feed_eof``; ``set_exception``), and that a coroutine
normally drains with ``readany()``: a future, a task step and three coroutine frames per
event, plus the reader's flow-control bookkeeping — more than everything ccbalancer does with
the event (docs/benchmarks.md).

``attach`` switches the response's reader to ``PushedReader``, a subclass that adds no state
(so ``__class__`` can be switched on the live object), whose feeds only queue the bytes and
ask its ``Pusher`` (kept in the reader's ``_waiter`` slot, which no coroutine uses any more)
to drain once per loop step (``call_soon``): what one socket read brought goes to the sink
together, as ``readany`` would have returned it. Flow control is not needed: the buffer is
drained every loop step, and the relay never waits for a client.

A broken HTTP framing (an invalid chunk-size line) is another matter: aiohttp closes the
connection but never tells the body, so ``readany`` would wait until the next idle timeout.
The pusher also watches the connection (``ResponseHandler.closed``): a connection lost before
the body's end is reported as a cut the moment it happens.

Verified against the aiohttp versions in ``VERIFIED`` (tests/integration/test_upstream_push.py
pins it); with any other version ``attach`` declines and the caller reads with a task.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import aiohttp
from aiohttp.streams import StreamReader

VERIFIED = ("3.14.",)


class Sink(Protocol):
    """Where a pushed body goes: ``data`` per arrival, then ``end`` or ``failed`` once."""

    def data(self, chunk: bytes) -> None: ...

    def end(self) -> None: ...

    def failed(self, exc: BaseException) -> None: ...


class PushedReader(StreamReader):
    """What the parser feeds once ``attach`` switched the class: queue, and tell the pusher."""

    __slots__ = ()

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        if data:
            self._buffer.append(data)
            self._waiter.schedule()  # type: ignore[union-attr]
        return False

    def begin_http_chunk_receiving(self) -> None:
        pass  # chunk boundaries mean nothing to SSE: events carry their own framing

    def end_http_chunk_receiving(self) -> None:
        pass

    def feed_eof(self) -> None:
        self._eof = True
        self._waiter.schedule()  # type: ignore[union-attr]
        callbacks, self._eof_callbacks = self._eof_callbacks, []
        for callback in callbacks:  # the response releases its connection here
            with contextlib.suppress(Exception):
                callback()

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        self._exception = exc
        self._eof_callbacks.clear()
        self._waiter.schedule()  # type: ignore[union-attr]


class Pusher:
    __slots__ = ("_connection", "_content", "_loop", "_lost", "_sink", "closed", "scheduled")

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
        self._lost = False
        self.scheduled = False
        self.closed = False
        if connection is not None:
            connection.add_done_callback(self._connection_lost)

    def _connection_lost(self, _: asyncio.Future[None]) -> None:
        self._lost = True
        self.schedule()

    def schedule(self) -> None:
        if not self.scheduled and not self.closed:
            self.scheduled = True
            self._loop.call_soon(self.drain)

    def drain(self) -> None:
        """Hand the sink everything buffered, then the end or the failure, or wait again."""
        self.scheduled = False
        if self.closed:
            return
        content = self._content
        buffer = content._buffer
        if buffer:
            data = buffer[0] if len(buffer) == 1 else b"".join(buffer)
            buffer.clear()
            self._sink.data(data)
            if self.closed:  # the sink finished with the response
                return
        failure = content._exception
        if failure is not None:
            self.closed = True
            self._sink.failed(failure)
        elif content._eof:
            self.closed = True
            self._sink.end()
        elif self._lost:  # gone without the body's end (and without telling it)
            self.closed = True
            self._sink.failed(aiohttp.ClientPayloadError("connection closed mid-response"))

    def close(self) -> None:
        """Stop pushing, and give the reader back to aiohttp as it was."""
        self.closed = True
        content = self._content
        if type(content) is PushedReader:
            content._waiter = None
            content.__class__ = StreamReader  # type: ignore[assignment]
        if self._connection is not None:  # a pooled connection outlives this response
            self._connection.remove_done_callback(self._connection_lost)


def attach(response: aiohttp.ClientResponse, sink: Sink) -> Pusher | None:
    """Push ``response``'s body to ``sink`` from now on (what is buffered first), or None when
    this aiohttp is not one the hook was verified on."""
    content = response.content
    if (
        not aiohttp.__version__.startswith(VERIFIED)
        or type(content) is not StreamReader
        or content._waiter is not None
    ):
        return None
    connection = response.connection
    protocol = connection.protocol if connection is not None else None
    lost = protocol.closed if protocol is not None else None
    pusher = Pusher(content, sink, asyncio.get_running_loop(), lost)
    content._waiter = pusher  # type: ignore[assignment]
    content.__class__ = PushedReader
    pusher.schedule()  # bytes (or the end) that came with the headers
    return pusher
