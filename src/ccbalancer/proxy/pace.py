"""Judging a streaming client that is behind by the bytes it actually accepts.

A client whose socket buffer is not empty is written to by its own task (``proxy.writer``).
Timing the whole write would call a client that reads slowly but steadily one that "stopped
reading"; instead the write is watched: what is still queued for the client is sampled a few
times per ``client_write_timeout`` window, and each window must see a catch-up piece accepted
(or all that was pending). A window with nothing accepted is "stopped reading", one with less
is "too slow"; either ends the write, and the writer drops the client.

Queued means the transport's buffer plus, on Linux, the kernel's send queue (``SIOCOUTQ``:
bytes the client has not acknowledged). The transport's buffer alone moves in steps of
megabytes: the kernel wakes a writer only once a third of a send buffer autotuned to 4 MB is
free, so a client reading 25 KB/s looked as if it read nothing for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
from collections.abc import Callable

from aiohttp import web

_OUTQ = getattr(termios, "TIOCOUTQ", None)  # == SIOCOUTQ on Linux; absent elsewhere


def _queued(transport: asyncio.Transport) -> Callable[[], int]:
    """Bytes written to ``transport`` that its peer has not taken yet."""
    sock = transport.get_extra_info("socket")
    fd = sock.fileno() if sock is not None else -1

    def buffered() -> int:
        return transport.get_write_buffer_size()

    if _OUTQ is None or fd < 0:
        return buffered

    def queued() -> int:
        with contextlib.suppress(OSError):
            kernel: int = struct.unpack("i", fcntl.ioctl(fd, _OUTQ, b"\0\0\0\0"))[0]
            return buffered() + kernel
        return buffered()

    return queued


class Pacer:
    """Writes to one client, each write watched: the bytes its side accepts are counted, and
    a write ends (through its deadline) once a ``timeout`` window brought too few."""

    __slots__ = (
        "accepted", "deadline", "handle", "interval", "last", "loop", "moved", "need", "piece",
        "queued", "timeout", "transport", "verdict", "window",
    )  # fmt: skip

    def __init__(self, transport: asyncio.Transport, timeout: float, piece: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.queued = _queued(transport)
        self.timeout = timeout
        self.piece = piece
        self.interval = min(1.0, timeout / 8)
        self.deadline: asyncio.Timeout | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.last = self.need = self.accepted = 0
        self.window = self.moved = 0.0
        self.verdict = ""

    async def write(self, response: web.StreamResponse, data: bytes) -> str:
        """Write ``data``: "" once written, else why the client was dropped. In every
        ``timeout`` window it must accept ``piece`` bytes, or all that is pending."""
        self.last = self.queued() + len(data)  # once this write is buffered
        self.need = min(self.piece, self.last)
        self.accepted = 0
        self.window = self.moved = self.loop.time()
        self.verdict = ""
        try:
            async with asyncio.timeout(None) as self.deadline:
                self.handle = self.loop.call_later(self.interval, self._check)
                try:
                    await response.write(data)
                finally:
                    self.handle.cancel()
        except TimeoutError:
            if not self.verdict:
                raise  # not ours: an OS-level timeout of the write itself
            return self.verdict
        return ""

    def abort(self) -> None:
        """Drop the client now: ``close`` would first flush megabytes at its slow pace."""
        self.transport.abort()

    def _check(self) -> None:
        size = self.queued()
        now = self.loop.time()
        if size < self.last:
            self.accepted += self.last - size
            self.moved = now
        self.last = size
        if now - self.window >= self.timeout:
            if self.accepted < self.need:
                # a client that stopped may still have let its kernel take a few KB at first
                stopped = now - self.moved >= self.timeout / 2
                self.verdict = (
                    f"stopped reading for {self.timeout:g}s"
                    if stopped
                    else f"too slow: accepted {self.accepted} bytes in {self.timeout:g}s"
                )
                assert self.deadline is not None
                self.deadline.reschedule(now)
                return
            self.window, self.accepted, self.need = now, 0, min(self.piece, size)
        self.handle = self.loop.call_later(self.interval, self._check)
