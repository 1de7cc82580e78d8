"""The commit machine's rules through real sockets: empty answers are answers, pings are not
activity, and a broken HTTP framing after the commit is a failure the moment it happens."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from ccbalancer.mock import MockServer
from tests.conftest import config_text, msg, read_events

START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_e","type":'
    b'"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
)
BLOCK = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
TEXT = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Half an ans"}}\n\n'
)
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
END = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def stop_delta(reason: str) -> bytes:
    return (
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"%s",'
        b'"stop_sequence":null},"usage":{"output_tokens":0}}\n\n' % reason.encode()
    )


def two_providers(mock: MockServer, first: str, settings: str = "") -> str:
    """``first`` (a recorded upstream) before the mock's healthy ``b``; one strike opens a
    breaker, so a wrongly counted failure shows. Mid-stream recovery is off: these tests are
    about how a failure is found, not how it is mended (tests/integration/test_recovery.py)."""
    settings = "unhealthy_threshold: 1\nrecovery: {enabled: false}\n" + settings
    text = config_text(mock, ["a", "b"], settings=settings)
    return text.replace(mock.anthropic_url("a"), first)


@pytest.mark.parametrize("reason", ["end_turn", "refusal"])
async def test_an_answer_without_content_blocks_is_a_complete_answer(
    reason, mock, balancer_factory, recorded_upstream
):
    """Anthropic documents empty end_turn answers; a refusal may come without a block. Such
    an answer goes to the client as it is; the provider is not failed over or struck."""
    url = await recorded_upstream("a", [START, stop_delta(reason), END])
    b = await balancer_factory(two_providers(mock, url))
    for _ in range(2):  # two would open a threshold-2 breaker; here one would
        resp = await b.post(msg())
        assert resp.status == 200 and resp.headers["x-provider-used"] == "a"
        events = await read_events(resp)
        assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]
    assert mock.requests("b") == []
    health = b.runtime.health.get("a")
    assert health.failures == 0 and health.state(b.runtime.clock()).value == "healthy"
    async with anthropic.AsyncAnthropic(
        base_url=b.url, api_key="sk-client-1", max_retries=0
    ) as client:
        message = await client.messages.create(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert message.content == [] and message.stop_reason == reason


async def test_an_openai_answer_without_content_is_a_complete_answer(
    mock, balancer_factory, recorded_openai_upstream
):
    chunks = [
        b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":0}}\n\n',
        b"data: [DONE]\n\n",
    ]
    url = await recorded_openai_upstream("a", chunks)
    text = config_text(mock, [("a", "openai"), "b"], settings="unhealthy_threshold: 1\n")
    b = await balancer_factory(text.replace(mock.openai_url("a"), url))
    async with (
        anthropic.AsyncAnthropic(base_url=b.url, api_key="sk-client-1", max_retries=0) as client,
        client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        message = await stream.get_final_message()
    assert message.content == [] and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 7
    assert mock.requests("b") == [] and b.runtime.health.get("a").failures == 0


async def test_pings_alone_after_content_end_the_stream_at_read_timeout(
    mock, balancer_factory, raw_upstream
):
    """An upstream that commits and then only pings would hold Claude Code for ~12 minutes
    (CLAUDE_CODE.md section 6); after read_timeout without content it is a failure."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"connection: close\r\n\r\n" + START + BLOCK + TEXT
    )
    upstream = await raw_upstream([head, *([0.1, PING] * 100)])  # 10 s of pings
    settings = "timeouts: {streaming: {read_timeout: 0.6}}\n"
    b = await balancer_factory(two_providers(mock, upstream.url, settings))
    async with asyncio.timeout(8):  # well before the pings would run out
        resp = await b.post(msg())
        events = await read_events(resp)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert "ping" in names and names[-1] == "error"
    assert "idle timeout" in events[-1][1]["error"]["message"]
    assert b.runtime.health.get("a").failures == 1


@pytest.mark.parametrize(
    "broken",
    [b"zz\r\n", b"4\r\nabcdXX\r\n", b"0x10\r\n"],
    ids=["not-hex", "chunk-overrun", "hex-prefix"],
)
async def test_broken_chunked_framing_after_content_fails_at_once(
    broken, mock, balancer_factory, raw_upstream
):
    """aiohttp's readany() never returns after an invalid chunk-size line: waiting for it
    would end the stream only at read_timeout. The body is pushed to the relay, so the
    parser's error reaches it the moment it is found."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    body = START + BLOCK + TEXT
    upstream = await raw_upstream([head, b"%x\r\n%b\r\n" % (len(body), body), 0.2, broken])
    settings = "timeouts: {streaming: {read_timeout: 600}, first_event_timeout: 600}\n"
    b = await balancer_factory(two_providers(mock, upstream.url, settings))
    async with asyncio.timeout(10):  # far less than the 600 s a stuck read would take
        resp = await b.post(msg())
        events = await read_events(resp)
    assert [name for name, _ in events][-1] == "error"
    assert events[2][1]["delta"]["text"] == "Half an ans"
    assert b.runtime.health.get("a").failures == 1
