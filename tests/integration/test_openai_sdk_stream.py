"""The official ``anthropic`` SDK reads converted OpenAI streams over a real socket.

A tiny aiohttp server on 127.0.0.1 plays ccbalancer's part: it translates the SDK's request
with ``OpenAIDialect.body`` and answers with a recorded OpenAI upstream run through the
dialect's decoder, one write per event. What the SDK's ``get_final_message()`` returns must say
what the OpenAI chunks said, computed here independently from the recording.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp import web

from ccbalancer.dialects.base import DEFAULT_BODY_OPTIONS
from ccbalancer.dialects.openai import OpenAIDialect

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai" / "streams"
MODEL = "claude-opus-5-5"


class Upstream:
    """Serves one recorded upstream answer per request and keeps the translated requests."""

    def __init__(self, fixture: str) -> None:
        self.path = FIXTURES / fixture
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        dialect = OpenAIDialect()
        client_body = await request.json()
        self.requests.append(json.loads(dialect.body(client_body, "gpt-4o", DEFAULT_BODY_OPTIONS)))
        content_type = "application/json" if self.path.suffix == ".json" else "text/event-stream"
        decoder = dialect.decoder(client_body["model"], content_type)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        upstream = self.path.read_bytes()
        for start in range(0, len(upstream), 64):  # arrives in pieces, as from a socket
            for event in decoder.feed(upstream[start : start + 64], 0.0):
                await response.write(event.raw)
        for event in decoder.close():
            await response.write(event.raw)
        await response.write_eof()
        return response


@asynccontextmanager
async def _serve(upstream: Upstream) -> AsyncIterator[anthropic.AsyncAnthropic]:
    app = web.Application()
    app.router.add_post("/v1/messages", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    client = anthropic.AsyncAnthropic(base_url=f"http://{host}:{port}", api_key="x", max_retries=0)
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()


def _openai_source(fixture: str) -> tuple[str, str, list[tuple[str, str, Any]]]:
    """(text, reasoning, [(id, name, arguments)]) as the OpenAI chunks state them."""
    text, reasoning = "", ""
    calls: dict[int, list[Any]] = {}
    for line in (FIXTURES / fixture).read_text().splitlines():
        if not line.startswith("data: {"):
            continue
        for choice in json.loads(line[6:]).get("choices") or []:
            delta = choice["delta"]
            text += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(
                    call["index"], [call.get("id"), call["function"].get("name"), ""]
                )
                entry[2] += call["function"].get("arguments") or ""
    tools = [(i, n, json.loads(a) if a else {}) for i, n, a in (calls[k] for k in sorted(calls))]
    return text, reasoning, tools


async def _final_message(fixture: str) -> tuple[anthropic.types.Message, Upstream]:
    upstream = Upstream(fixture)
    async with (
        _serve(upstream) as client,
        client.messages.stream(
            model=MODEL,
            max_tokens=1024,
            system=[
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.330.363;"}
            ],
            messages=[{"role": "user", "content": "Run ls"}],
            tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
        ) as stream,
    ):
        message = await stream.get_final_message()
    return message, upstream


@pytest.mark.parametrize(
    "fixture",
    [
        "text.sse",
        "parallel_tool_calls.sse",
        "deepseek_reasoning_tool.sse",
        "interleaved_parallel.sse",
        "one_fragment_args.sse",
        "no_arguments_call.sse",
        "usage_after_finish.sse",
        "json_completion.json",
    ],
)
async def test_sdk_final_message_says_what_the_openai_stream_said(fixture: str) -> None:
    message, _ = await _final_message(fixture)
    text, reasoning, tools = (
        _openai_source(fixture) if fixture.endswith(".sse") else _completion_source()
    )
    assert message.model == MODEL
    assert "".join(b.text for b in message.content if b.type == "text") == text
    assert "".join(b.thinking for b in message.content if b.type == "thinking") == reasoning
    assert [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"] == tools
    assert message.stop_reason == ("tool_use" if tools else "end_turn")


def _completion_source() -> tuple[str, str, list[tuple[str, str, Any]]]:
    completion = json.loads((FIXTURES / "json_completion.json").read_text())
    reply = completion["choices"][0]["message"]
    tools = [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in reply["tool_calls"]
    ]
    return reply["content"], reply["reasoning_content"], tools


async def test_sdk_sees_real_token_counts_and_the_translated_request() -> None:
    message, upstream = await _final_message("deepseek_reasoning_tool.sse")
    assert message.usage.input_tokens == 190
    assert message.usage.cache_read_input_tokens == 5120
    assert message.usage.output_tokens == 88
    (sent,) = upstream.requests
    assert sent["messages"] == [{"role": "user", "content": "Run ls"}]  # billing block dropped
    assert sent["tools"][0]["function"]["name"] == "Bash"
    assert sent["stream"] is True


async def test_sdk_raises_the_upstream_error_sent_mid_stream() -> None:
    with pytest.raises(anthropic.APIStatusError, match="upstream overloaded"):
        await _final_message("error_mid_stream.sse")
