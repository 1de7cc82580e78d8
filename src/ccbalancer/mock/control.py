"""The mock's control API: script and inspect providers over HTTP.

For users in another process — the benchmark and ``ccbalancer demo`` drive a mock started by
``ccbalancer mock`` — the same operations as ``MockServer``'s methods:

    POST /_mock/{name}/configure   JSON object of Script fields -> the provider's default
    POST /_mock/{name}/enqueue     JSON list of such objects    -> one-shot scripts, in order
    GET  /_mock/{name}/requests    {"count", "requests": [{path, query, headers, body}]}
    POST /_mock/reset              forget scripts, queues, records
    GET  /_mock/stats              {"active_streams", "requests_total", "providers"}

Bad input is answered 400 ``{"error": "..."}`` naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from ccbalancer.mock.script import script_from_json

if TYPE_CHECKING:
    from ccbalancer.mock.server import MockServer


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


async def _read(request: web.Request) -> Any:
    """The JSON body (empty: ``{}``). Raises ``ValueError`` when it is not JSON."""
    return orjson.loads(await request.read() or b"{}")


def add_routes(app: web.Application, server: MockServer) -> None:
    async def configure(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            server.configure(name, script_from_json(await _read(request)))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": True, "provider": name})

    async def enqueue(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            value = await _read(request)
            items = value if isinstance(value, list) else [value]
            scripts = [script_from_json(item) for item in items]
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        server.enqueue(name, *scripts)
        return _json({"ok": True, "provider": name, "enqueued": len(scripts)})

    async def requests(request: web.Request) -> web.Response:
        records = server.requests(request.match_info["name"])
        listing = [
            {"path": r.path, "query": r.query, "headers": r.headers, "body": r.body}
            for r in records
        ]
        return _json({"count": len(listing), "requests": listing})

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return _json({"ok": True})

    async def stats(request: web.Request) -> web.Response:
        return _json(server.stats())

    app.router.add_post("/_mock/{name}/configure", configure)
    app.router.add_post("/_mock/{name}/enqueue", enqueue)
    app.router.add_get("/_mock/{name}/requests", requests)
    app.router.add_post("/_mock/reset", reset)
    app.router.add_get("/_mock/stats", stats)
