"""Replays a provider's stream through a real socket and reads it with the official SDK.

Each golden test serves one stream file from tests/fixtures/golden/ (written from the
provider's documented chunk format; the source is cited in the test module) as an upstream on
127.0.0.1, one write per frame, puts the real balancer in front of it, and asks through the
official ``anthropic`` SDK's streaming helper, which both yields the raw Anthropic events and
accumulates the final message exactly as an SDK user (and, in the same way, Claude Code) does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic

from ccbalancer.dialects.estimate import estimate_input_tokens

FIXTURES = Path(__file__).parent.parent / "fixtures" / "golden"
# not claude-sonnet-4-5: the SDK warns it is deprecated, and warnings are errors here
MODEL = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "Go ahead."}]
TOOLS: list[Any] = [
    {"name": name, "description": f"{name} tool", "input_schema": {"type": "object"}}
    for name in ("Read", "Bash", "Glob", "Grep", "LS", "TodoRead", "weather")
]
RAW_EVENTS = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}
_FRAME_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Replay:
    events: list[Any]  # the SDK's raw stream events, in order
    message: Any  # the SDK's accumulated final message
    sent: dict[str, Any]  # the request body the upstream received (OpenAI-format only)

    @property
    def shape(self) -> list[str]:
        """Event kinds in order, repeats of one kind collapsed: ``content_block_delta`` is
        named by its delta type, ``content_block_start`` by its block type."""
        out: list[str] = []
        for event in self.events:
            if event.type == "content_block_start":
                kind = f"start:{event.content_block.type}"
            elif event.type == "content_block_delta":
                kind = event.delta.type
            elif event.type == "content_block_stop":
                kind = "stop"
            else:
                kind = event.type
            if not out or out[-1] != kind:
                out.append(kind)
        return out

    def blocks(self) -> list[tuple[str, Any]]:
        """(type, what the block says) for each block of the final message."""
        out: list[tuple[str, Any]] = []
        for block in self.message.content:
            if block.type == "text":
                out.append(("text", block.text))
            elif block.type == "thinking":
                out.append(("thinking", block.thinking))
            elif block.type in ("tool_use", "server_tool_use", "mcp_tool_use"):
                out.append((block.type, (block.name, block.input)))
            else:
                out.append((block.type, None))
        return out

    @property
    def start_usage(self) -> Any:
        return self.events[0].message.usage


def frames(fixture: str) -> list[bytes]:
    """The file's frames, each with its blank line, one socket write each."""
    raw = (FIXTURES / fixture).read_bytes()
    out, at = [], 0
    for match in _FRAME_END.finditer(raw):
        out.append(raw[at : match.end()])
        at = match.end()
    if at < len(raw):
        out.append(raw[at:])
    return out


async def _stream(client: Any, **request: Any) -> tuple[list[Any], Any]:
    async with client.stream(**request) as stream:
        events = [event async for event in stream if event.type in RAW_EVENTS]
        message = await stream.get_final_message()
    return events, message


def _request(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 1024, "messages": MESSAGES, "tools": TOOLS} | extra


async def replay_openai(
    fixture: str,
    balancer_factory: Any,
    upstreams: Any,
    provider_extra: str = "",
    upstream_model: str = "upstream-model",
) -> Replay:
    """``fixture`` served by an ``openai`` provider, read through the balancer."""
    name = fixture.split(".", maxsplit=1)[0]
    base = await upstreams(name, frames(fixture))
    config = (
        "providers:\n"
        f"  - {{name: {name}, type: openai, base_url: '{base}', auth_value: sk-golden"
        f"{provider_extra}}}\n"
        f"model_routes: {{'*': [{{provider: {name}, model: {upstream_model}}}]}}\n"
        "settings: {log_file_path: '', history: {enabled: false}, "
        "deduplication: {enabled: false}}\n"
    )
    b = await balancer_factory(config)
    async with anthropic.AsyncAnthropic(
        base_url=b.url, api_key="sk-client-1", max_retries=0, timeout=30
    ) as client:
        events, message = await _stream(client.messages, **_request())
    return Replay(events, message, upstreams.requests[name][-1])


async def replay_anthropic(
    fixture: str, balancer_factory: Any, recorded_upstream: Any, **request: Any
) -> Replay:
    """``fixture`` served by an ``anthropic`` provider, read through the balancer with the
    SDK's beta client (it knows server tool and MCP connector blocks)."""
    name = fixture.split(".", maxsplit=1)[0]
    base = await recorded_upstream(name, frames(fixture))
    config = (
        "providers:\n"
        f"  - {{name: {name}, type: anthropic, base_url: '{base}', auth_value: sk-golden}}\n"
        f"model_routes: {{'*': [{{provider: {name}}}]}}\n"
        "settings: {log_file_path: '', history: {enabled: false}, "
        "deduplication: {enabled: false}}\n"
    )
    b = await balancer_factory(config)
    async with anthropic.AsyncAnthropic(
        base_url=b.url, api_key="sk-client-1", max_retries=0, timeout=30
    ) as client:
        events, message = await _stream(client.beta.messages, **_request(**request))
    return Replay(events, message, {})


def expected_estimate() -> int:
    """The local estimate the balancer shows in message_start for the golden request."""
    return estimate_input_tokens({"messages": MESSAGES, "tools": TOOLS})


def usage(message: Any) -> tuple[int, int, int, int]:
    """(input, cache_creation, cache_read, output) of the final message."""
    u = message.usage
    return (
        u.input_tokens,
        u.cache_creation_input_tokens or 0,
        u.cache_read_input_tokens or 0,
        u.output_tokens,
    )
