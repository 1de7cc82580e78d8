"""``GET /dashboard``: the one self-contained page, what it shows (``/dashboard/data``, polled
every two seconds) and one recent request's detail (``/dashboard/request/{request_id}``).

The page itself holds no data, so it is served without a key; its data endpoints sit behind
inbound auth like every other path (``auth.guard``). With ``clients`` configured, a client's
key sees its own part only (``auth.sees_everyone``): its requests in flight and recent, its
totals, sessions and usage, its requests' details; the providers' figures (states, in flight,
TTFT, the charts) stay whole, and the refused keys are the admin's. Nothing here reveals a
secret: records carry ids, names, timings and scrubbed error text, never a key or a body.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from ccbalancer.proxy import respond
from ccbalancer.proxy.auth import CLIENT, sees_everyone
from ccbalancer.proxy.clients import record_sessions
from ccbalancer.proxy.info import providers_view, usable
from ccbalancer.runtime import RUNTIME, Runtime


def _json(value: object) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


@functools.cache
def _page() -> bytes:
    return resources.files("ccbalancer.observe").joinpath("dashboard.html").read_bytes()


async def page(request: web.Request) -> web.Response:
    return web.Response(body=_page(), content_type="text/html", charset="utf-8")


def _scope(request: web.Request, runtime: Runtime) -> str | None:
    """None: this request sees every client's part; else the one client whose part it sees
    ("" when the path was exempted from auth and no key says who: no client's part)."""
    if sees_everyone(request, runtime):
        return None
    client = request.get(CLIENT)
    return "" if client is None else client.name


async def data(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    recent = runtime.recent
    scope = _scope(request, runtime)
    usage = await runtime.accounts.view()
    return _json(
        {
            "scope": scope,  # the client whose requests these are, None: every client's
            "providers": providers_view(runtime),
            "providers_available": usable(runtime),
            # upstream calls (a shared answer is one): every client's, so the admin's
            "active_streams": runtime.hub.live if scope is None else None,
            # client requests, oldest first
            "in_flight": runtime.inflight.rows(time.time(), client=scope),
            "in_flight_count": len(runtime.inflight)
            if scope is None
            else runtime.inflight.count(scope),
            "totals": recent.totals(scope),
            "auth_failures": None
            if scope is not None
            else {
                "recent": runtime.refusals.recent(),
                "window_s": runtime.refusals.window,
                "total": runtime.refusals.total,
            },
            "recent": recent.rows(client=scope),
            "series": {"ttft": recent.ttft_series(), "throughput": recent.throughput_series()},
            "usage": [row for row in usage if scope in (None, row["client"])],
            "sessions": sessions_view(
                runtime.sessions.rows(client=scope),
                runtime.planner.warmth.rows(limit=None),
                record_sessions(runtime.config),
            ),
        }
    )


async def request_detail(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    request_id = request.match_info["request_id"]
    found = runtime.recent.detail(request_id)
    scope = _scope(request, runtime)
    if found is None or scope not in (None, found["client"]):  # another's: as if gone
        return respond.error_response(
            404, "not_found_error", "no such recent request (only the last few hundred are kept)"
        )
    return _json(found)


def sessions_view(
    costs: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    session_of: Callable[[str], str],
) -> list[dict[str, Any]]:
    """One row per session: what it cost (``observe.sessions``, most recent first) joined with
    where its prompt cache is and how it moved (``balance.warmth``, kept per route under the
    sticky key that ``session_of`` turns into the record's session). ``provider`` is where the
    most recently answered route of the session is now; ``last_move`` is the move of the most
    recently answered route that moved."""
    routes: dict[str, list[dict[str, Any]]] = {}
    for row in warm:  # the most recently answered first
        routes.setdefault(session_of(row["session"]), []).append(row)
    out = []
    for cost in costs:
        mine = routes.get(cost["session"], [])
        moved = next((r for r in mine if "last_move" in r), None)
        out.append(
            cost
            | {
                "provider": mine[0]["provider"] if mine else cost["provider"],
                "moves": sum(r["moves"] for r in mine),
                "last_move": moved["last_move"] | {"route": moved["route"]} if moved else None,
                "routes": mine,
            }
        )
    return out
