"""Events written straight to a client's socket, past aiohttp's response writer.

The one place that relies on aiohttp internals on the write side. ``StreamResponse.write``
costs three awaited layers per event; a client that keeps up has an empty socket buffer, and
then the producer can write the event's bytes to the transport itself, in the loop step that
parsed it (docs/benchmarks.md: "direct writes"). That is only correct while aiohttp's own
writer holds nothing back and frames nothing we do not: after ``prepare()`` has sent the
headers, with ``Transfer-Encoding: chunked`` (we add the chunk framing, as aiohttp would) or
no framing at all, and no ``Content-Encoding``. Anything else, or an aiohttp this was not
verified on (``VERIFIED``; tests/integration/test_direct_write.py pins it), and
``direct_writer`` declines: every write then goes through aiohttp's writer.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

VERIFIED = ("3.14.",)


class DirectWriter:
    __slots__ = ("chunked", "transport")

    def __init__(self, transport: asyncio.Transport, chunked: bool) -> None:
        self.transport = transport
        self.chunked = chunked

    def write(self, data: bytes) -> bool:
        """Write now if the client keeps up (nothing waiting in its socket buffer); False,
        with nothing written, when it does not or the connection is going away."""
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size():
            return False
        try:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        except (OSError, RuntimeError):
            return False  # the subscriber's own next write reports it
        return True


def direct_writer(request: web.Request, response: web.StreamResponse) -> DirectWriter | None:
    """A direct path to ``request``'s socket for the prepared ``response``, or None."""
    transport = request.transport
    framing = response.headers.get("Transfer-Encoding", "")
    if (
        transport is None
        or not response.prepared
        or not aiohttp.__version__.startswith(VERIFIED)
        or "Content-Encoding" in response.headers
        or framing not in ("", "chunked")
    ):
        return None
    return DirectWriter(transport, framing == "chunked")
