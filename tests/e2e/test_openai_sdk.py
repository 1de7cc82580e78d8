"""The official anthropic SDK through the balancer to an OpenAI-format provider."""

from __future__ import annotations

import anthropic
import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text

pytestmark = pytest.mark.e2e
MODEL = "claude-sonnet-4-6"


def _client(url: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key="sk-client-1", max_retries=0)


async def _balancer(mock, balancer_factory, script: Script):
    mock.configure("oa", script)
    return await balancer_factory(
        config_text(mock, [("oa", "openai")], routes={"*": [("oa", "gpt-4o")]})
    )


async def test_streamed_text_from_chat_completions_accumulates_in_the_sdk(mock, balancer_factory):
    b = await _balancer(mock, balancer_factory, Script(text="converted text arrives whole"))
    async with (
        _client(b.url) as client,
        client.messages.stream(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        pieces = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert "".join(pieces) == "converted text arrives whole"
    assert (
        message.content[0].type == "text"
        and message.content[0].text == "converted text arrives whole"
    )
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


async def test_streamed_tool_call_becomes_a_tool_use_block_with_parsed_input(
    mock, balancer_factory
):
    b = await _balancer(
        mock, balancer_factory, Script(reply="tool_use", tool_command="ls -la /tmp")
    )
    tools = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]
    async with (
        _client(b.url) as client,
        client.messages.stream(
            model=MODEL, max_tokens=64, tools=tools, messages=[{"role": "user", "content": "ls"}]
        ) as stream,
    ):
        message = await stream.get_final_message()
    (block,) = [c for c in message.content if c.type == "tool_use"]
    assert block.name == "Bash" and block.input["command"] == "ls -la /tmp"
    assert message.stop_reason == "tool_use"
    upstream = mock.requests("oa")[-1].body
    assert upstream["tools"][0]["function"]["name"] == "Bash"


async def test_reasoning_and_tool_call_non_streaming(mock, balancer_factory):
    b = await _balancer(mock, balancer_factory, Script(reply="thinking_tool"))
    async with _client(b.url) as client:
        message = await client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "think"}]
        )
    kinds = [c.type for c in message.content]
    assert "thinking" in kinds and kinds[-1] == "tool_use"
    thinking = next(c for c in message.content if c.type == "thinking")
    assert thinking.thinking and thinking.signature.startswith("ccbalancer-synthetic:")
