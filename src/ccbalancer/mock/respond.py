"""One model-call answer, from a resolved Script: the error, HTML, JSON or SSE response.

The order mirrors what can go wrong on the way to a real provider: a delay before the status
line, a reset instead of any response, an HTML page from a proxy in between, an error status
with the provider's JSON envelope, a 200 whose body is an error object, and finally a message —
streamed (``stream.play``) or whole.
"""

from __future__ import annotations

import asyncio
import uuid
from http import HTTPStatus

import orjson
from aiohttp import web

from ccbalancer.mock.act import act
from ccbalancer.mock.dialect import Call, Json, MockDialect
from ccbalancer.mock.frames import encode, encode_all
from ccbalancer.mock.plan import build_plan, plan_of
from ccbalancer.mock.script import Script, extra_headers
from ccbalancer.mock.stream import abort, play, stall


def call_for(dialect: MockDialect, body: Json, script: Script) -> Call:
    options = body.get("stream_options")
    return Call(
        model=str(body.get("model") or "mock-model"),
        request_id=f"req_mock_{uuid.uuid4().hex[:24]}",
        message_id=f"{dialect.id_prefix}{uuid.uuid4().hex[:24]}",
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        input_tokens=script.input_tokens,
        cache_read=script.cache_read,
    )


def error_response(
    dialect: MockDialect,
    call: Call,
    status: int,
    message: str,
    *,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the provider's own JSON envelope (``error_type`` None: by status)."""
    error = dialect.error_body(status, error_type, message, call)
    return web.Response(
        status=status, body=orjson.dumps(error), content_type="application/json", headers=headers
    )


def _html_page(status: int) -> str:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    title = f"{status} {reason}"
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title></head><body>"
        f"<center><h1>{title}</h1></center><hr><center>cloudflare</center></body></html>"
    )


async def respond(
    request: web.Request, dialect: MockDialect, script: Script, body: Json
) -> web.StreamResponse:
    call = call_for(dialect, body, script)
    if script.headers_delay > 0:
        await asyncio.sleep(script.headers_delay)
    if script.reset_before_headers:
        abort(request)
        return web.Response()  # never sent: the connection is gone
    headers = dialect.headers(call) | extra_headers(script)
    failing = script.html or script.status != 200 or script.body_json_error
    if failing and script.retry_after is not None:
        headers["retry-after"] = f"{script.retry_after:g}"
    if script.html:
        page = _html_page(script.status)
        return web.Response(
            status=script.status, text=page, content_type="text/html", headers=headers
        )
    if failing:
        return error_response(
            dialect,
            call,
            script.status,
            script.error_message,
            error_type=script.error_type,
            headers=headers,
        )

    acted = act(dialect.turn(body)) if script.act else None
    plan = plan_of(acted) if acted else build_plan(script, dialect.tool_result(body))
    if body.get("stream") is not True:
        return await _whole(request, dialect.message(plan, call), script, headers)

    frames = encode_all(dialect.events(plan, script, call), script)
    name, data = dialect.error_event(script.error_type or "overloaded_error", script.error_message)
    error = encode(name, data, script, first=script.error_after == 0, broken=False)
    headers["content-type"] = "text/event-stream"
    headers["cache-control"] = "no-cache"
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await play(request, response, frames, error, script)
    return response


async def _whole(
    request: web.Request, message: Json, script: Script, headers: dict[str, str]
) -> web.StreamResponse:
    """A non-streaming answer. Stream faults map to their whole-body analogues: a stall hangs
    before the headers, a cut sends half the body; the event-level knobs do not apply."""
    payload = orjson.dumps(message)
    if script.stall_after is not None:
        await stall()
        abort(request)
        return web.Response()
    if script.cut_after is None:
        return web.Response(body=payload, content_type="application/json", headers=headers)
    response = web.StreamResponse(headers=headers)
    response.content_type = "application/json"
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: len(payload) // 2])
    abort(request)
    return response
