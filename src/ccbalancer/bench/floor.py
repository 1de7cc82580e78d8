"""``--reference aiohttp``: the floor of the stack DESIGN.md section 1 prescribes.

The thinnest proxy that can be built on that stack: an ``aiohttp.web`` server on uvloop that
sends each request's body to the mock with one pooled ``ClientSession`` and writes each chunk
it reads back to its client as it arrives, or the whole body for a non-streaming answer. No
validation, no SSE framing, no failover, no sharing, no accounting: whatever ccbalancer costs
above this run, measured in the same invocation, is the cost of its own work; what this run
costs above nginx is the stack's. The nginx ratio targets are stated against nginx, so the
report shows, beside each one, where this floor stands against it.

Run by the bench as a child process like the mock and the balancer
(``python -m ccbalancer.bench.floor --upstream URL --port P``), stopped by its PID.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from ccbalancer.bench.procs import Child, free_port
from ccbalancer.bench.scenarios import PROVIDER

READY_PATH = "/health"
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


def app(upstream: str) -> web.Application:
    """The floor proxy: ``/v1/...`` here is ``upstream/v1/...`` (``upstream`` is the mock's
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ccbalancer.bench.floor")
    parser.add_argument("--upstream", required=True, help="provider root, http://127.0.0.1:P/x")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; the balancer uses it too
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None,
        loop=loop_factory() if loop_factory else None,
    )  # fmt: skip


def floor_child(mock_url: str, logs: Path) -> Child:
    """The floor proxy (not started yet) in front of the mock's bench provider."""
    port = free_port()
    command = [sys.executable, "-m", "ccbalancer.bench.floor",
               "--upstream", f"{mock_url}/{PROVIDER}", "--port", str(port)]  # fmt: skip
    return Child("aiohttp-floor", command, port, READY_PATH, logs)


if __name__ == "__main__":
    main()
