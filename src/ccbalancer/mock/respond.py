"""One model-call answer, from a resolved Script: the error, HTML, JSON or SSE response.

The order mirrors what can go wrong on the way to a real provider: a delay before the status
line, a reset instead of any response, an HTML page from a proxy in between, a 400 for a
request the real API refuses (``rules.py``; a continuation that is not this provider's answer),
an error status with the provider's JSON envelope, a 200 whose body is an error object, and
finally a message — streamed (``stream.play``) or whole.
"""

from __future__ import annotations

import asyncio
import uuid
from http import HTTPStatus

import orjson
from aiohttp import web

from ccbalancer.mock.act import act
from ccbalancer.mock.continuation import Continuation, Mismatch, continued
from ccbalancer.mock.dialect import Call, Json, MockDialect
from ccbalancer.mock.frames import encode, encode_all
from ccbalancer.mock.plan import Plan, build_plan, plan_of
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


def plan_for(
    dialect: MockDialect, script: Script, body: Json, continuation: Continuation | None
) -> Plan | str:
    """What to answer, or why the real API would refuse the request (a 400). A continuation
    gets the rest of the answer to the request it continues."""
    refused = dialect.refusal(body)
    if refused is not None:
        return refused
    asked = continuation.original if continuation is not None else body
    acted = act(dialect.turn(asked)) if script.act else None
    plan = plan_of(acted) if acted else build_plan(script, dialect.tool_result(asked))
    if continuation is None:
        return plan
    try:
        return continued(plan, continuation, script.resume_repeat)
    except Mismatch as exc:
        return str(exc)


async def respond(
    request: web.Request,
    dialect: MockDialect,
    script: Script,
    body: Json,
    continuation: Continuation | None = None,
) -> web.StreamResponse:
    call = call_for(dialect, body, script)
    if script.headers_delay > 0:
        await asyncio.sleep(script.headers_delay)
    if script.reset_before_headers:
        abort(request)
        return web.Response()  # never sent: the connection is gone
    headers = dialect.headers(call) | extra_headers(script)
    retry_after = {} if script.retry_after is None else {"retry-after": f"{script.retry_after:g}"}
    if script.html:
        page = _html_page(script.status)
        return web.Response(
            status=script.status,
            text=page,
            content_type="text/html",
            headers={**headers, **retry_after},
        )
    plan = plan_for(dialect, script, body, continuation)
    if isinstance(plan, str):
        return error_response(
            dialect, call, 400, plan, error_type="invalid_request_error", headers=headers
        )
    if script.status != 200 or script.body_json_error:
        headers.update(retry_after)
        return error_response(
            dialect,
            call,
            script.status,
            script.error_message,
            error_type=script.error_type,
            headers=headers,
        )

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
