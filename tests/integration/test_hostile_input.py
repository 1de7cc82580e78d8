"""Request bodies and headers a client controls (issue 14, items 4, 6, 7 and 8).

Memory that bodies in flight hold is bounded in total, counted as parsed; nothing about the
client's own framing (``content-encoding``, ``expect``, digests) reaches an upstream; and no
byte a client can send — a non-UTF-8 header, JSON nested past the serializer's limit, a
broken gzip, a malformed request — gets a 500 or a traceback in the log.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
from typing import Any

import orjson
import pytest
from aiohttp import web

from ccbalancer.observe.logs import configure_logging
from tests.conftest import config_text, envelope_of, msg, raw_http, until

SSE = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":'
    b'"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
    b'"usage":{"input_tokens":1,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


@pytest.fixture
async def gated_upstream():
    """An Anthropic-type upstream whose first answer waits until ``gate`` is set (the call
    stays uncommitted, holding its body, until then); later answers come at once."""
    gate = asyncio.Event()
    arrived: list[int] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        arrived.append(len(arrived))
        if len(arrived) == 1:
            await gate.wait()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(SSE)
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/g/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site.port}/g", gate, arrived
    gate.set()
    await runner.cleanup()


def _gated_config(base: str, settings: str) -> str:
    return (
        f'providers:\n  - {{name: g, type: anthropic, base_url: "{base}", auth_value: sk-g-key}}\n'
        'model_routes:\n  "*": [{provider: g}]\n'
        "settings:\n  log_file_path: ''\n  history: {enabled: false}\n"
        + "".join(f"  {line}\n" for line in settings.strip().splitlines())
    )


def _nested(depth: int) -> bytes:
    """JSON nested ``depth`` levels (orjson itself cannot write it past 255)."""
    opens = b"".join(b"[" if i % 2 else b'{"k":' for i in range(depth))
    closes = b"".join(b"]" if i % 2 else b"}" for i in reversed(range(depth)))
    return opens + b'"leaf"' + closes


def _request(body: bytes, *headers: bytes, path: bytes = b"/v1/messages") -> bytes:
    head = b"POST " + path + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += b"".join(h + b"\r\n" for h in headers)
    return head + b"content-length: %d\r\n\r\n" % len(body) + body


# -- item 4: the memory budget ------------------------------------------------------------


async def test_a_body_that_costs_more_parsed_than_the_budget_gets_429(mock, balancer_factory):
    """450 KB of empty objects is ~16 MB of Python dicts: refused before it is parsed."""
    b = await balancer_factory(config_text(mock, ["a"], settings="max_body_bytes: 1000000\n"))
    body = msg()
    body["metadata"] = {"x": [{}] * 150_000}
    resp = await b.post(body)
    error = (await resp.json())["error"]
    assert resp.status == 429 and error["type"] == "rate_limit_error"
    assert resp.headers["retry-after"] == "1"
    assert mock.requests("a") == []
    assert b.runtime.bodies.used == 0
    ok = await b.post(msg())  # an ordinary request right after it is served
    assert ok.status == 200


async def test_bodies_in_flight_share_the_budget_until_their_calls_commit(
    gated_upstream, balancer_factory
):
    base, gate, arrived = gated_upstream
    settings = "max_body_bytes: 1000000\nmax_body_memory: 5000000\ndeduplication: {enabled: false}"
    b = await balancer_factory(_gated_config(base, settings))
    big = msg("x" * 900_000)
    async with asyncio.TaskGroup() as group:
        first = group.create_task(b.post(big))
        await until(lambda: len(arrived) == 1)  # held before its commit, body and all
        held = b.runtime.bodies.used
        # the parsed body (a few objects and one string) and twice its raw size
        assert 2_600_000 < held < 3_100_000
        second = await b.post(big)
        assert second.status == 429 and second.headers["retry-after"] == "1"
        assert (await second.json())["error"]["type"] == "rate_limit_error"
        assert b.runtime.bodies.used == held
        gate.set()
    answer = first.result()
    assert answer.status == 200
    await answer.read()
    await until(lambda: b.runtime.bodies.used == 0)  # let go at the commit
    third = await b.post(big)
    assert third.status == 200
    await third.read()
    assert len(arrived) == 2


async def test_a_follower_gives_its_body_back_at_once(gated_upstream, balancer_factory):
    base, gate, arrived = gated_upstream
    b = await balancer_factory(_gated_config(base, "deduplication: {enabled: true}"))
    async with asyncio.TaskGroup() as group:
        leader = group.create_task(b.post(msg("y" * 200_000)))
        await until(lambda: len(arrived) == 1)
        held = b.runtime.bodies.used
        follower = group.create_task(b.post(msg("y" * 200_000)))
        await until(lambda: b.runtime.hub.inflight and _subscribers(b) == 2)
        assert b.runtime.bodies.used == held  # the follower's own body is not held
        gate.set()
    answers = [leader.result(), follower.result()]
    assert [a.headers["x-ccbalancer-shared"] for a in answers] == ["leader", "follower"]
    await until(lambda: b.runtime.bodies.used == 0)


async def test_a_recoverable_call_keeps_only_its_raw_body_counted_until_it_ends(balancer_factory):
    """After its commit, a call that another provider could finish (mid-stream recovery) lets
    go of its parsed body but keeps the raw bytes a continuation is built from: those stay
    counted against max_body_memory until the call ends, then nothing is."""
    finish = asyncio.Event()
    committed = SSE.index(b"event: content_block_delta")

    async def answer(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(SSE[:committed])  # message_start and the first block: committed
        await finish.wait()
        await resp.write(SSE[committed:])
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/g/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{site.port}/g"
        config = (
            _gated_config(base, "deduplication: {enabled: false}")
            .replace(
                "model_routes:",
                f'  - {{name: h, type: anthropic, base_url: "{base}", auth_value: sk-h-key}}\n'
                "model_routes:",
            )
            .replace('"*": [{provider: g}]', '"*": [{provider: g}, {provider: h}]')
        )
        b = await balancer_factory(config)
        body = msg("z" * 300_000)
        resp = await b.post(body)
        assert resp.status == 200
        await resp.content.readuntil(b"content_block_start")
        raw = len(orjson.dumps(body))
        # the parsed body and its copies are given back; the raw bytes (about) stay
        await until(lambda: b.runtime.bodies.used < 2 * raw)
        assert b.runtime.bodies.used >= raw - 1024
        finish.set()
        await resp.read()
        await until(lambda: b.runtime.bodies.used == 0)
    finally:
        finish.set()
        await runner.cleanup()


def _subscribers(b) -> int:
    (call,) = b.runtime.hub.inflight.values()
    return int(call.subscribers)


# -- items 6 and 7: the client's framing stays here ---------------------------------------


async def test_a_gzip_body_goes_upstream_decoded_without_the_clients_framing_headers(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"]))
    body = msg(stream=False)
    resp = await b.session.post(
        b.url + "/v1/messages",
        data=gzip.compress(orjson.dumps(body)),
        headers={
            "x-api-key": "sk-client-1",
            "content-type": "application/json",
            "content-encoding": "gzip",
            "content-md5": "Q2hlY2sgSW50ZWdyaXR5IQ==",
            "digest": "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=",
        },
    )
    assert resp.status == 200
    assert (await resp.json())["type"] == "message"
    (seen,) = mock.requests("a")
    assert seen.body == {**body, "stream": True}  # the upstream call always streams
    for name in ("content-encoding", "content-md5", "digest"):
        assert name not in seen.headers


async def test_expect_100_continue_is_answered_here_and_not_forwarded(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.session.post(
        b.url + "/v1/messages", json=msg(), headers={"x-api-key": "sk-client-1"}, expect100=True
    )
    assert resp.status == 200
    await resp.read()
    (seen,) = mock.requests("a")
    assert "expect" not in seen.headers


# -- item 8: no 500, no traceback ---------------------------------------------------------


@pytest.fixture
def logged(tmp_path):
    """The balancer's log as a list of JSON records, read after the test body ran."""
    path = tmp_path / "log.jsonl"
    handle = configure_logging("INFO", str(path), console=False)

    def read() -> list[dict[str, Any]]:
        handle.close()
        return [json.loads(line) for line in path.read_text().splitlines()]

    yield read
    handle.close()


def _no_traceback(records: list[dict[str, Any]]) -> None:
    assert not [r for r in records if "exception" in r or "Traceback" in json.dumps(r)]
    assert not [r for r in records if r.get("level") == "error"]


@pytest.mark.parametrize("header", [b"x-api-key", b"authorization"])
@pytest.mark.parametrize("auth", [True, False], ids=["auth_on", "auth_off"])
async def test_a_non_utf8_credential_is_a_4xx_in_the_envelope(
    header, auth, mock, balancer_factory, logged
):
    settings = "auth: {enabled: true, api_key: sk-inbound-key-1}\n" if auth else ""
    b = await balancer_factory(config_text(mock, ["a"], settings=settings))
    value = b"sk-\xff\xfe\xc3" if header == b"x-api-key" else b"Bearer sk-\xff\xfe"
    answer = await raw_http(b.url, _request(orjson.dumps(msg()), header + b": " + value))
    assert answer.status == (401 if auth else 400)
    assert envelope_of(answer)["type"] == (
        "authentication_error" if auth else "invalid_request_error"
    )
    assert mock.requests("a") == []
    _no_traceback(logged())


@pytest.mark.parametrize("depth", [300, 1000])
@pytest.mark.parametrize("path", [b"/v1/messages", b"/v1/messages/count_tokens"])
async def test_json_nested_past_the_serializers_limit_is_a_400(
    depth, path, mock, balancer_factory, logged
):
    """orjson reads up to 1024 levels but writes only 255: such a body could never be sent."""
    b = await balancer_factory(config_text(mock, ["a"], settings="deduplication: {enabled: true}"))
    body = orjson.dumps(msg(metadata="NESTED")).replace(b'"NESTED"', _nested(depth))
    answer = await raw_http(b.url, _request(body, b"x-api-key: k", path=path))
    assert answer.status == 400
    error = envelope_of(answer)
    assert error["type"] == "invalid_request_error" and "cannot be forwarded" in error["message"]
    assert mock.requests("a") == []
    _no_traceback(logged())


@pytest.mark.parametrize(
    "encoding,payload",
    [
        (b"gzip", b"\x1f\x8b\x08\x00 this is not gzip at all"),
        (b"deflate", b"\x78\x9c not deflate either"),
        (b"gzip", gzip.compress(b'{"model": "claude-x", "messages": [')[:-8]),  # cut short
    ],
    ids=["bad_gzip_header", "bad_deflate", "truncated_gzip"],
)
async def test_a_body_that_cannot_be_decoded_is_a_400(
    encoding, payload, mock, balancer_factory, logged
):
    b = await balancer_factory(config_text(mock, ["a"]))
    answer = await raw_http(
        b.url, _request(payload, b"x-api-key: k", b"content-encoding: " + encoding)
    )
    assert answer.status == 400
    error = envelope_of(answer)
    assert error["type"] == "invalid_request_error"
    assert "decoded" in error["message"] or "not valid JSON" in error["message"]
    assert mock.requests("a") == []
    _no_traceback(logged())


MALFORMED = {
    "bare_lf": b"POST /v1/messages HTTP/1.1\nhost: x\ncontent-length: 2\n\n{}",
    "length_and_chunked": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
    b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    "two_lengths": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n"
    b"content-length: 3\r\n\r\n{}",
    "control_byte_in_header": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: a\x01b\r\n\r\n",
    "bad_chunk_size": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
    b"\r\nzz\r\n{}\r\n0\r\n\r\n",
    "header_too_long": b"GET /health HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 9000 + b"\r\n\r\n",
    "unsupported_encoding": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-encoding: br\r\n"
    b"content-length: 2\r\n\r\n{}",
    "space_before_colon": b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length : 2\r\n\r\n{}",
}


async def test_after_a_parser_error_the_rest_of_the_connection_is_not_parsed(
    mock, balancer_factory
):
    """aiohttp fed a failed parser every later read, and each failed again with an error
    quoting the read in full (repr: ~4x its size), held in a reference cycle: a malformed
    head followed by 4 MB cost the balancer 15 MB."""
    b = await balancer_factory(config_text(mock, ["a"]))
    data = (
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: a\x07b\r\n"
        b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n" % (4 << 20) + b"\x80" * (4 << 20)
    )
    tracemalloc.start()
    try:
        answer = await raw_http(b.url, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status == 400 and envelope_of(answer)["type"] == "invalid_request_error"
    assert peak < 2 << 20, f"{peak / 2**20:.1f} MB allocated while answering"


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_malformed_http_gets_the_envelope_and_one_quiet_log_line(
    name, mock, balancer_factory, logged
):
    b = await balancer_factory(config_text(mock, ["a"]))
    answer = await raw_http(b.url, MALFORMED[name])
    assert 400 <= answer.status < 500
    assert envelope_of(answer)["type"] == "invalid_request_error"
    assert answer.closes
    records = logged()
    _no_traceback(records)
    assert [r["event"] for r in records].count("bad_http_request") == 1


@pytest.mark.parametrize("path", [b"/v1/messages", b"/no/such/path"])
@pytest.mark.parametrize("value", [b"something-else", b"\xff\xfe"])
async def test_an_unknown_expectation_is_417_in_the_envelope(
    path, value, mock, balancer_factory, logged
):
    """aiohttp runs the expect handler before any middleware; its default answered in plain
    text, and failed with a 500 on a non-UTF-8 value."""
    b = await balancer_factory(config_text(mock, ["a"]))
    answer = await raw_http(b.url, _request(b"{}", b"expect: " + value, path=path))
    assert answer.status == 417
    assert envelope_of(answer)["type"] == "invalid_request_error"
    _no_traceback(logged())
