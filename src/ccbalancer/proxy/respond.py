"""Client errors and failures -> HTTP responses (the one place that writes them).

What a failure says is decided (and scrubbed) in ``relay/failures.py``; this module only puts
it into the Anthropic error envelope.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from ccbalancer.errors import ClientError
from ccbalancer.sharing.broadcast import Failure
from ccbalancer.sse.event import encode_event


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
    return error_response(failure.status, failure.error_type, failure.message, headers)


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
