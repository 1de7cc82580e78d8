"""``--reference aiohttp`` and ``--reference python``: two floors beside nginx.

The relay issue's targets are ratios to nginx. Two questions stand behind any ratio we miss:
how much of it is the HTTP stack DESIGN.md section 1 prescribes, and how much is CPython
itself. Each floor answers one, measured in the same invocation as everything else:

- ``aiohttp``: the thinnest proxy that can be built on the prescribed stack. An ``aiohttp.web``
  server on uvloop sends each request's body to the mock with one pooled ``ClientSession`` and
  writes each chunk it reads back to its client as it arrives (the whole body for a
  non-streaming answer). No validation, no SSE framing, no failover, no sharing, no accounting.
- ``python``: the thinnest proxy CPython and uvloop can run with no HTTP library at all. Each
  client connection gets its own upstream connection; a request's head is rewritten (path,
  host) and the response bytes are relayed verbatim, framing and all. It is not an HTTP
  implementation — it knows only what the bench's own requests look like (a ``content-length``
  body, no pipelining beyond complete requests, no back-pressure) — and the bench's
  completeness checks are what prove it delivered every event of every run.

Both run as child processes like the mock and the balancer
(``python -m ccbalancer.bench.floor KIND --upstream URL --port P``), stopped by their PID. Both
send a non-streaming request to the mock as it came (``stream: false``); ccbalancer always
streams from upstream (DESIGN.md section 5) and accumulates, which is work the floors skip.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from ccbalancer.bench.compare import FLOORS
from ccbalancer.bench.procs import Child, free_port
from ccbalancer.bench.scenarios import PROVIDER

READY_PATH = "/health"


# -- the aiohttp floor -----------------------------------------------------------------------

# framing and connection headers are the hop's own; everything else goes through as sent
_HOP = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive"})
_SESSION = web.AppKey("session", aiohttp.ClientSession)
_UPSTREAM = web.AppKey("upstream", str)


async def _forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    url = request.app[_UPSTREAM] + request.path_qs
    async with request.app[_SESSION].post(url, data=body, headers=headers) as upstream:
        kind = upstream.headers.get("content-type", "application/octet-stream")
        if not kind.startswith("text/event-stream"):
            data = await upstream.read()
            return web.Response(status=upstream.status, body=data, headers={"content-type": kind})
        response = web.StreamResponse(status=upstream.status, headers={"content-type": kind})
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({})


def aiohttp_app(upstream: str) -> web.Application:
    """The aiohttp floor: ``/v1/...`` here is ``upstream/v1/...`` (``upstream`` is the mock's
    provider root, the same URL the balancer calls)."""
    application = web.Application()
    application[_UPSTREAM] = upstream.rstrip("/")

    async def session(application: web.Application) -> AsyncIterator[None]:
        # no connection limit (1,000 streams hold 1,000 upstream connections), keep-alive
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
            application[_SESSION] = client
            yield

    application.cleanup_ctx.append(session)
    application.router.add_get(READY_PATH, _ready)
    application.router.add_post("/v1/{tail:.*}", _forward)
    return application


# -- the python floor: no HTTP library ---------------------------------------------------------

_READY = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_MAX_HEAD = 64 * 1024


class _Back(asyncio.Protocol):
    """The upstream side of one client connection: every byte read goes to the client."""

    def __init__(self, front: _Front) -> None:
        self.front = front

    def data_received(self, data: bytes) -> None:
        self.front.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.transport.close()


class _Front(asyncio.Protocol):
    """One client connection: complete requests are rewritten for the upstream and written to
    this connection's own upstream connection (opened on the first request)."""

    transport: asyncio.Transport

    def __init__(self, host: str, port: int, prefix: bytes) -> None:
        self._host, self._port, self._prefix = host, port, prefix
        self._buffer = b""
        self._back: asyncio.Transport | None = None
        self._waiting: list[bytes] | None = None  # requests written once connected
        self._connecting: asyncio.Task[None] | None = None  # held: the loop keeps weak refs

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (request := self._take()) is not None:
            if request == _READY:
                self.transport.write(_READY)
            elif self._back is not None:
                self._back.write(request)
            elif self._waiting is not None:
                self._waiting.append(request)
            else:
                self._waiting = [request]
                self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def _take(self) -> bytes | None:
        """The next complete request from the buffer, rewritten (``_READY`` for the ready
        check), or None when it is not all here yet."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD:
                self.transport.close()
            return None
        lines = self._buffer[:end].split(b"\r\n")
        length = 0
        for line in lines[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(self._buffer) < end + 4 + length:
            return None
        body = self._buffer[end + 4 : end + 4 + length]
        self._buffer = self._buffer[end + 4 + length :]
        method, path, version = lines[0].split(b" ", 2)
        if path == READY_PATH.encode():
            return _READY
        host = b"host: %s:%d" % (self._host.encode(), self._port)
        head = [b"%s %s%s %s" % (method, self._prefix, path, version)]
        head += [host if line[:5].lower() == b"host:" else line for line in lines[1:]]
        return b"\r\n".join(head) + b"\r\n\r\n" + body

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            back, _ = await loop.create_connection(lambda: _Back(self), self._host, self._port)
        except OSError:
            self.transport.close()
            return
        self._back = back
        waiting, self._waiting = self._waiting or [], None
        for request in waiting:
            back.write(request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._back is not None:
            self._back.close()


async def _serve_python(upstream: str, port: int) -> None:
    parts = urlsplit(upstream)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"the upstream URL needs a host and a port: {upstream!r}")
    host, up_port, prefix = parts.hostname, parts.port, parts.path.rstrip("/").encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Front(host, up_port, prefix), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


# -- running one -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ccbalancer.bench.floor")
    parser.add_argument("kind", choices=sorted(FLOORS))
    parser.add_argument("--upstream", required=True, help="provider root, http://127.0.0.1:P/x")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    import uvloop  # a dependency: the balancer runs on it too

    if args.kind == "python":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_python(args.upstream, args.port))
        return
    web.run_app(
        aiohttp_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None,
        print=None, loop=uvloop.new_event_loop(),
    )  # fmt: skip


def floor_child(kind: str, mock_url: str, logs: Path) -> Child:
    """The ``kind`` floor (not started yet) in front of the mock's bench provider."""
    port = free_port()
    command = [sys.executable, "-m", "ccbalancer.bench.floor", kind,
               "--upstream", f"{mock_url}/{PROVIDER}", "--port", str(port)]  # fmt: skip
    return Child(f"{kind}-floor", command, port, READY_PATH, logs)


if __name__ == "__main__":
    main()
