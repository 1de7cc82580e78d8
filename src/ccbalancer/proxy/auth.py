"""Inbound authentication and the envelope for everything that goes wrong at the door.

Keys are compared in constant time (``hmac.compare_digest``). Admin endpoints need the admin
key whenever auth is on, and are refused to non-loopback callers when auth is off. Unknown
paths and unexpected exceptions still answer in the Anthropic envelope, never a stack trace.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from ccbalancer.proxy import respond
from ccbalancer.runtime import RUNTIME, Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ADMIN_PATHS = ("/providers/reload", "/admin/")
# Claude Code probes HEAD / without credentials; the dashboard page holds no data (its data
# endpoint is protected) and asks the user for the key.
ALWAYS_OPEN = ("/", "/dashboard")


def _presented(request: web.Request) -> str:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


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


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    runtime: Runtime = request.app[RUNTIME]
    auth = runtime.config.settings.auth
    path = request.path
    admin = path.startswith(ADMIN_PATHS)
    if admin:
        if auth.enabled:
            if not _matches(_presented(request), runtime.config.settings.admin_keys):
                return respond.error_response(401, "authentication_error", "admin key required")
        elif not _loopback(request):
            return respond.error_response(
                403, "permission_error", "admin endpoints are loopback-only while auth is off"
            )
    elif (
        auth.enabled
        and path not in ALWAYS_OPEN
        and path not in auth.exempt_paths
        and not _matches(_presented(request), auth.keys)
    ):
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
