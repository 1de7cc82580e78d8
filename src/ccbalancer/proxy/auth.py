"""Inbound authentication and the envelope for everything that goes wrong at the door.

Keys are compared in constant time (``hmac.compare_digest``; client keys as SHA-256 digests,
``accounting.clients``); a refused key is reported to the runtime (counted, logged at a bounded
rate, never the key itself). Inbound auth is on with ``settings.auth.enabled`` or with
``clients:`` configured; the client a key belongs to is kept on the request (``CLIENT``) for
the handler's admission. Admin endpoints need the admin key whenever auth is on and one is
configured, and are refused to non-loopback callers otherwise; the admin key also opens what
an operator looks at (``OBSERVING``), and decides who sees every client's part of the
dashboard (``sees_everyone``). Unknown paths and unexpected
exceptions still answer in the Anthropic envelope, never a stack trace.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from ccbalancer.accounting import Client
from ccbalancer.proxy import respond
from ccbalancer.runtime import RUNTIME, Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_PATHS = ("/providers/reload", "/admin/")
# Claude Code probes HEAD / without credentials; the dashboard page holds no data (its data
# endpoint is protected) and asks the user for the key.
ALWAYS_OPEN = ("/", "/dashboard")
# What an operator looks at: the admin key opens these too, though it is no client's key.
OBSERVING = ("/dashboard/", "/providers", "/metrics")
CLIENT = web.RequestKey("client", Client)  # who presented the request's key (auth on only)


def bearer(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer`` header, or ""."""
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def presented_key(headers: Mapping[str, str]) -> str:
    """The key a request presents: ``x-api-key``, else ``Authorization: Bearer``."""
    return headers.get("x-api-key") or bearer(headers)


def _matches(presented: str, keys: tuple[str, ...]) -> bool:
    ok = False
    for key in keys:  # no early exit: time does not reveal which key matched
        # surrogateescape: a header with non-UTF-8 bytes is a wrong key, not a 500
        ok |= hmac.compare_digest(presented.encode(errors="surrogateescape"), key.encode())
    return ok


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def sees_everyone(request: web.Request, runtime: Runtime) -> bool:
    """Whether this request may see every client's part of the observation endpoints (the
    dashboard's data and request details): no ``clients`` are configured (one party), or it
    presents the admin key, or — no admin key being set — it comes from this machine, the
    rule of the admin endpoints. Any other client key sees only its own requests."""
    if not runtime.config.clients:
        return True
    admin_keys = runtime.config.settings.admin_keys
    if admin_keys:
        return _matches(presented_key(request.headers), admin_keys)
    return _loopback(request)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    runtime: Runtime = request.app[RUNTIME]
    auth = runtime.config.settings.auth
    clients = runtime.accounts.book
    path = request.path
    admin = path.startswith(ADMIN_PATHS)
    if admin:
        admin_keys = runtime.config.settings.admin_keys
        if clients.enabled and admin_keys:
            key = presented_key(request.headers)
            if not _matches(key, admin_keys):
                runtime.rejected_key(key, path, request.remote, admin=True)
                return respond.error_response(401, "authentication_error", "admin key required")
        elif not _loopback(request):
            return respond.error_response(
                403,
                "permission_error",
                "admin endpoints are loopback-only while auth is off (or no admin key is set)",
            )
    elif clients.enabled and path not in ALWAYS_OPEN and path not in auth.exempt_paths:
        presented = presented_key(request.headers)
        client = clients.identify(presented)
        if client is not None:
            request[CLIENT] = client
        elif not (
            path.startswith(OBSERVING)
            and runtime.config.settings.admin_keys
            and _matches(presented, runtime.config.settings.admin_keys)
        ):
            runtime.rejected_key(presented, path, request.remote, admin=False)
            return respond.error_response(401, "authentication_error", "invalid x-api-key")
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return respond.error_response(
                404, "not_found_error", f"no such endpoint: {request.method} {path}"
            )
        if exc.status == 405:
            return respond.error_response(
                405, "invalid_request_error", f"method {request.method} not allowed on {path}"
            )
        if exc.status < 400:
            raise
        return respond.error_response(exc.status, "invalid_request_error", exc.reason)
    except Exception:
        runtime.log.exception("internal_error", path=path)
        return respond.error_response(500, "api_error", "internal error in the balancer")
