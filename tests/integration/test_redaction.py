"""No upstream can get a key to a client (issue 14, item 1): every byte a client receives that
came from an upstream — a status body, an SSE error frame, a returned header — is scrubbed of
the configured credentials and of the token a passthrough provider was sent. Each test uses
an upstream that echoes the key it was given."""

from __future__ import annotations

import orjson
from aiohttp import web

from tests.conftest import msg, parse_frames, read_events

KEY = "sk-ant-provider-secret-1234567890"
USER_TOKEN = "sk-user-own-token-0987654321"
START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
    b'"role":"assistant","model":"m","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}'
    b"\n\n"
)
BLOCK = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)


def config(url: str, auth_value: str = KEY) -> str:
    return f"""
providers:
  - {{name: echo, type: anthropic, base_url: "{url}", auth_value: "{auth_value}"}}
model_routes:
  "*": [{{provider: echo}}]
settings:
  log_file_path: ''
  history: {{enabled: false}}
  deduplication: {{enabled: false}}
"""


async def _echo_upstream(handler) -> tuple[str, web.AppRunner]:
    app = web.Application()
    app.router.add_post("/echo/v1/messages", handler)
    app.router.add_post("/echo/v1/messages/count_tokens", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}/echo", runner


def _presented(request: web.Request) -> str:
    """The credential the balancer sent: what a careless upstream would echo."""
    auth = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or auth.removeprefix("Bearer ")


async def test_an_error_event_after_content_never_carries_the_key(balancer_factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        error = {"type": "error", "error": {"type": "api_error", "message": _presented(request)}}
        await resp.write(START + BLOCK + b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
        return resp

    url, runner = await _echo_upstream(handler)
    try:
        b = await balancer_factory(config(url))
        body = await (await b.post(msg())).read()
        assert KEY not in body.decode()
        name, frame = parse_frames(body)[-1]
        assert name == "error" and "***" in frame["error"]["message"]
    finally:
        await runner.cleanup()


async def test_returned_headers_never_carry_the_key(balancer_factory) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        echoed = _presented(request)
        headers = {
            "content-type": "text/event-stream",
            "request-id": f"req_{echoed}",
            "x-ratelimit-remaining-requests": echoed,
        }
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        await resp.write(START + BLOCK)
        await resp.write(
            b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        )
        await resp.write(
            b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":'
            b'"end_turn"},"usage":{"output_tokens":1}}\n\n'
        )
        return resp

    url, runner = await _echo_upstream(handler)
    try:
        b = await balancer_factory(config(url))
        for stream in (True, False):
            resp = await b.post(msg(stream=stream))
            await resp.read()
            assert resp.status == 200
            assert resp.headers["request-id"] == "req_***"
            assert resp.headers["x-ratelimit-remaining-requests"] == "***"
            assert all(KEY not in v for v in resp.headers.values())
    finally:
        await runner.cleanup()


async def test_an_error_status_body_never_carries_the_key(balancer_factory) -> None:
    async def handler(request: web.Request) -> web.Response:
        error = {"type": "invalid_request_error", "message": f"bad key {_presented(request)}"}
        return web.json_response({"type": "error", "error": error}, status=400)

    url, runner = await _echo_upstream(handler)
    try:
        b = await balancer_factory(config(url))
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            resp = await b.session.post(b.url + path, json=msg(), headers={"x-api-key": "k"})
            body = await resp.read()
            assert resp.status == 400 and KEY not in body.decode()
            assert orjson.loads(body)["error"]["message"] == "bad key ***"
    finally:
        await runner.cleanup()


async def test_a_passthrough_users_token_is_scrubbed_from_what_comes_back(
    balancer_factory,
) -> None:
    """The client's own token, forwarded to a passthrough provider, is redacted like the
    balancer's keys: an upstream echo must not turn into a place that prints tokens."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream", "request-id": _presented(request)}
        )
        await resp.prepare(request)
        error = {"type": "error", "error": {"type": "api_error", "message": _presented(request)}}
        await resp.write(START + BLOCK + b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
        return resp

    url, runner = await _echo_upstream(handler)
    try:
        b = await balancer_factory(config(url, auth_value="passthrough"))
        resp = await b.post(msg(), headers={"x-api-key": USER_TOKEN})
        events = await read_events(resp)
        assert resp.headers["request-id"] == "***"
        assert USER_TOKEN not in orjson.dumps(events).decode()
    finally:
        await runner.cleanup()
