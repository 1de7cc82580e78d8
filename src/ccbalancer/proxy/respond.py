"""Our exceptions and failures -> what the client sees (the one place that decides it).

Statuses follow DESIGN.md section 5: one provider tried -> its own status and message (a 429 keeps
its retry-after, capped at 60 s since Claude Code gives up at once on 90 s); several tried ->
503 "All configured providers for model <m> failed: ..."; a refused balancer credential
(401/403) -> 502 naming the provider, so Claude Code does not tell the user to fix *their* key.
Messages never carry keys, proxy credentials or stack traces: they are built from our own
short texts.
"""

from __future__ import annotations

import email.utils
import time

import orjson
from aiohttp import web

from ccbalancer.errors import (
    ClientError,
    UpstreamError,
    UpstreamStatusError,
    error_type_for_status,
)
from ccbalancer.sharing.broadcast import Failure
from ccbalancer.sse.event import Event, encode_event

MAX_CLIENT_RETRY_AFTER = 60.0


def envelope(error_type: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=envelope(error_type, message),
        content_type="application/json",
        headers=headers,
    )


def client_error_response(error: ClientError) -> web.Response:
    return error_response(error.status, error.error_type, error.message, error.headers or None)


def failure_response(failure: Failure, extra: dict[str, str]) -> web.Response:
    headers = dict(failure.headers)
    headers.update(extra)
    if failure.body is not None:
        return web.Response(
            status=failure.status,
            body=failure.body,
            headers=headers,
            content_type=failure.content_type,
        )
    return error_response(failure.status, failure.error_type, failure.message, headers)


def parse_retry_after(value: str | None, value_ms: str | None = None) -> float | None:
    """Seconds from ``retry-after-ms``, ``retry-after`` (seconds or HTTP date), else None."""
    if value_ms:
        try:
            return max(0.0, float(value_ms) / 1000)
        except ValueError:
            pass
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _retry_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"retry-after": str(max(1, min(int(seconds + 0.999), int(MAX_CLIENT_RETRY_AFTER))))}


def _passed_on(error: UpstreamError, headers: dict[str, str], fallback_status: int) -> Failure:
    """The upstream's own status, error type and message, before anything was sent."""
    status = error.status or fallback_status
    return Failure(
        status,
        error.error_type or error_type_for_status(status),
        error.message,
        committed=False,
        provider=error.provider,
        headers=headers,
    )


def client_error_failure(error: UpstreamError) -> Failure:
    """An upstream client error (400/413/422...) goes back as it is: status, type, message."""
    return _passed_on(error, {**error.headers, "x-provider-used": error.provider}, 400)


def all_failed(
    model: str, errors: list[UpstreamError], skipped: list[str], retry_after: float
) -> Failure:
    if len(errors) == 1 and not skipped:
        return _single_failure(errors[0])
    reasons = [f"{e.provider}: {e.short}" for e in errors] + skipped
    message = f"All configured providers for model {model} failed"
    if reasons:
        message += ": " + "; ".join(reasons)
    return Failure(
        503, "overloaded_error", message, committed=False, headers=_retry_header(retry_after)
    )


def _single_failure(error: UpstreamError) -> Failure:
    headers = {"x-provider-used": error.provider}
    if isinstance(error, UpstreamStatusError):
        if error.status in (401, 403):
            message = (
                f"provider {error.provider} refused the balancer's credential for it "
                f"(HTTP {error.status}); check auth_value in the balancer's config"
            )
            return Failure(
                502, "api_error", message, committed=False, provider=error.provider, headers=headers
            )
        passed = dict(error.headers)
        passed.pop("retry-after", None)
        passed.pop("retry-after-ms", None)
        passed.update(headers)
        passed.update(_retry_header(error.retry_after))
        return _passed_on(error, passed, 502)
    message = f"provider {error.provider} failed: {error.short}"
    return Failure(
        503, "overloaded_error", message, committed=False, provider=error.provider, headers=headers
    )


def error_event(error: UpstreamError) -> Event:
    """The ``event: error`` frame that ends a committed stream. ``overloaded_error`` for
    overload-like failures, else ``api_error``: Claude Code retries both at once, non-streaming."""
    error_type = "overloaded_error" if error.error_type == "overloaded_error" else "api_error"
    message = f"upstream {error.provider} failed mid-stream: {error.short}"
    return encode_event(
        "error", {"type": "error", "error": {"type": error_type, "message": message}}
    )


def mid_stream_failure(error: UpstreamError) -> Failure:
    overloaded = error.error_type == "overloaded_error"
    return Failure(
        529 if overloaded else 500,
        "overloaded_error" if overloaded else "api_error",
        f"upstream {error.provider} failed mid-stream: {error.short}",
        committed=True,
        provider=error.provider,
    )


def lagged_event() -> bytes:
    return encode_event(
        "error",
        {
            "type": "error",
            "error": {
                "type": "api_error",
                "message": "client fell too far behind the stream; retry",
            },
        },
    ).raw
