"""The small endpoints: probes, health, providers, models, metrics, reload, count_tokens (the
dashboard's are in ``dashboard.py``).

None of them reveals a secret: providers are shown by name, type and state only (no URL
credentials, no keys, no proxy).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import orjson
from aiohttp import web

from ccbalancer.config.schema import Config
from ccbalancer.dialects.estimate import estimate_input_tokens
from ccbalancer.errors import ClientError, ConfigError, UpstreamError
from ccbalancer.proxy import clients, respond
from ccbalancer.proxy.auth import presented_key
from ccbalancer.proxy.body import check_headers, read_json_body
from ccbalancer.proxy.handler import MAX_MODEL_CHARS, passthrough_credential
from ccbalancer.relay.failures import Redaction
from ccbalancer.runtime import RUNTIME, Runtime
from ccbalancer.sharing.calls import Answer
from ccbalancer.sharing.key import coalescing_key

# Well-known Claude model ids offered for glob routes in /v1/models (exact keys are listed as
# written); a glob itself is not a model id a client could pick.
KNOWN_MODELS = (
    "claude-opus-5-5", "claude-opus-4-8", "claude-opus-4-5", "claude-sonnet-4-6",
    "claude-sonnet-4-5", "claude-haiku-4-5",
)  # fmt: skip


def _json(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(value), content_type="application/json", headers=headers
    )


async def unknown(request: web.Request) -> web.Response:
    """Every path and method no other route takes (``proxy.auth`` words the 404 and 405)."""
    allowed = {
        route.method
        for route in request.app.router.routes()
        if route.method != "*"
        and route.resource is not None
        and route.resource.canonical == request.path
    }
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def root(request: web.Request) -> web.Response:
    return _json({"name": "ccbalancer", "status": "ok"})


def providers_view(runtime: Runtime) -> list[dict[str, object]]:
    now = runtime.clock()
    out: list[dict[str, object]] = []
    for provider in runtime.config.providers:
        snapshot = runtime.health.get(provider.name).snapshot(now)
        out.append(
            {
                "name": provider.name,
                "type": provider.type,
                "enabled": provider.enabled,
                **snapshot,
                # the room its rate-limit headers report (None: it reported none yet)
                "rate_limit": runtime.ratelimits.snapshot(provider.name, now),
            }
        )
    return out


def usable(runtime: Runtime) -> int:
    """Providers enabled and available now."""
    now = runtime.clock()
    return sum(
        1
        for p in runtime.config.providers
        if p.enabled and runtime.health.get(p.name).available(now)
    )


async def health(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    available = usable(runtime)
    body = {
        "status": "ok" if available else "unavailable",
        "providers_available": available,
        "providers_total": len(runtime.config.providers),
        "uptime_s": round(time.time() - runtime.started, 1),
        "active_streams": runtime.hub.live,
    }
    return _json(body, 200 if available else 503)


async def providers(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    hub = runtime.hub
    return _json(
        {
            "providers": providers_view(runtime),
            "sharing": {
                "in_flight": len(hub.inflight),
                "cached": len(hub.cache),
                "cache_bytes": hub.cache.bytes,
                "served_by_role": runtime.metrics.shared_counts(),
            },
            "strategy": runtime.config.settings.selection_strategy,
            "reloads": runtime.reloads,
        }
    )


def model_ids(config: Config) -> list[str]:
    ids: list[str] = []
    for key in config.model_routes:
        if "*" in key or "?" in key:
            for model in KNOWN_MODELS:
                route = config.route_for(model)
                if route is not None and route[0] == key:
                    ids.append(model)
        else:
            ids.append(key)
    return list(dict.fromkeys(ids))


async def models(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in model_ids(runtime.config)
    ]
    return _json(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    body, content_type = runtime.metrics.render()
    response = web.Response(body=body)
    response.headers["content-type"] = content_type
    return response


async def reload(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[RUNTIME]
    try:
        config = runtime.reload("POST /providers/reload")
    except ConfigError as error:
        return respond.error_response(
            422, "invalid_request_error", f"config rejected, old config kept: {error}"
        )
    return _json({"status": "reloaded", "providers": [p.name for p in config.providers]})


async def count_tokens(request: web.Request) -> web.Response:
    """Forwarded to the first available Anthropic provider of the route; else estimated.
    Identical requests (keyed like request sharing) share one upstream call and, for a
    minute, its answer (issue 15, item 10)."""
    runtime: Runtime = request.app[RUNTIME]
    config = runtime.config
    settings = config.settings
    lease = runtime.bodies.lease()
    try:
        check_headers(request)
        body, _ = await read_json_body(request, settings, lease)
        model = body.get("model")
        if not isinstance(model, str) or not model or len(model) > MAX_MODEL_CHARS:
            raise ClientError(400, "model: field required (a non-empty string, at most 256)")
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = request.query_string
        own = settings.auth.keys + settings.admin_keys + clients.own_keys(request)
        forwarded = passthrough_credential(headers, own) if config.passthrough else ""
        # also the check that the body can be forwarded at all (orjson's depth limit: 400)
        key = coalescing_key(presented_key(headers), body, headers, False, query, forwarded)
        answer = await runtime.counts.get(
            key, functools.partial(_count, runtime, config, model, body, headers, query, own)
        )
    except ClientError as error:
        return respond.client_error_response(error)
    finally:
        lease.release()
    return web.Response(
        status=answer.status, body=answer.body, content_type="application/json",
        headers=answer.headers,
    )  # fmt: skip


async def _count(
    runtime: Runtime,
    config: Config,
    model: str,
    body: dict[str, Any],
    headers: dict[str, str],
    query: str,
    own: tuple[str, ...],
) -> Answer:
    """The upstream count, or the local estimate. Failures here never count against a
    provider's health: count_tokens is advisory, and a provider that cannot count (or
    hiccups) still serves messages."""
    route = config.route_for(model)
    now = runtime.clock()
    for entry in route[1] if route else ():
        provider = config.providers_by_name[entry.provider]
        if provider.type != "anthropic" or not provider.enabled:
            continue
        if not runtime.health.get(provider.name).available(now):
            continue
        dialect = runtime.dialects["anthropic"]
        upstream = dict(body)
        upstream.pop("provider", None)
        upstream["model"] = model if entry.model == "passthrough" else entry.model
        credential = (
            passthrough_credential(headers, own)
            if provider.passthrough_auth
            else provider.auth_value
        )
        out_headers = dialect.headers(
            headers, credential, provider.auth_type, provider.header_options
        )
        out_headers.update(provider.headers)
        url = provider.base_url + "/v1/messages/count_tokens"
        if query:
            url += "?" + query
        try:
            resp = await runtime.client.open(
                provider,
                url,
                out_headers,
                orjson.dumps(upstream),
                config.settings.timeouts.non_streaming,
            )
        except UpstreamError:
            continue
        try:
            answer = await resp.body()
            status = resp.status
        finally:
            resp.close()
        if status == 200:
            return Answer(200, answer, {"x-provider-used": provider.name})
        if 400 <= status < 500 and status not in config.settings.unhealthy_http_codes:
            error_type, message = dialect.error(status, answer)
            told = Redaction(runtime.redactor.scrub, credential).text(message)
            return Answer(
                status, respond.envelope(error_type, told), {"x-provider-used": provider.name}
            )
    estimate = orjson.dumps({"input_tokens": estimate_input_tokens(body)})
    return Answer(200, estimate, {"x-ccbalancer-estimated": "true"})
