"""The official ``anthropic`` Python SDK through the balancer sees what it would see upstream.

Each case reads the same script twice — once through the balancer, once straight from the
simulated provider — and compares the SDK's parsed result. Only ids differ between two calls
(the mock mints a fresh message id and tool_use id per response), so they are blanked; every
other field, the SDK's accumulation of deltas included, must match.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text

pytestmark = pytest.mark.e2e

# not claude-sonnet-4-5: the SDK warns it is deprecated, and warnings are errors here
MODEL = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
FAST_TIMEOUTS = """timeouts:
  first_event_timeout: 0.5
  streaming: {connect_timeout: 2, read_timeout: 0.5, pool_timeout: 2}
"""


@pytest.fixture
async def upstream(mock) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """An SDK client talking to the simulated provider ``a`` directly (no balancer)."""
    async with anthropic.AsyncAnthropic(
        base_url=mock.anthropic_url("a"), api_key="sk-direct", max_retries=0, timeout=30
    ) as client:
        yield client


async def _client(balancer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=balancer.url, api_key="sk-client-1", max_retries=0, timeout=30
    )


def _without_ids(message: anthropic.types.Message) -> dict[str, Any]:
    dumped = message.model_dump()
    assert dumped["id"].startswith("msg_")
    dumped["id"] = "<id>"
    for block in dumped["content"]:
        if block["type"] == "tool_use":
            assert block["id"].startswith("toolu_")
            block["id"] = "<id>"
    return dumped


async def _streamed(client: anthropic.AsyncAnthropic) -> anthropic.types.Message:
    async with client.messages.stream(model=MODEL, max_tokens=256, messages=MESSAGES) as stream:
        return await stream.get_final_message()


EXPECTED_BLOCKS = {
    "text": ["text"],
    "tool_use": ["tool_use"],
    "thinking_tool": ["redacted_thinking", "thinking", "tool_use"],
}


@pytest.mark.parametrize("reply", sorted(EXPECTED_BLOCKS))
async def test_streamed_final_message_equals_the_upstream_message(
    reply, mock, balancer_factory, upstream
):
    mock.configure("a", Script(reply=reply))
    b = await balancer_factory(config_text(mock, ["a"]))
    direct = await _streamed(upstream)
    async with await _client(b) as client:
        through = await _streamed(client)

    assert [block.type for block in through.content] == EXPECTED_BLOCKS[reply]
    assert _without_ids(through) == _without_ids(direct)
    if reply != "text":
        tool = through.content[-1]
        assert isinstance(tool, anthropic.types.ToolUseBlock)
        assert tool.input == {"command": "echo CCB_TOOL_OK", "description": "mock tool call"}
        assert through.stop_reason == "tool_use"
    if reply == "thinking_tool":
        redacted, thinking = through.content[0], through.content[1]
        assert isinstance(redacted, anthropic.types.RedactedThinkingBlock) and redacted.data
        assert isinstance(thinking, anthropic.types.ThinkingBlock)
        assert thinking.thinking and thinking.signature  # the signature_delta was kept


@pytest.mark.parametrize("reply", sorted(EXPECTED_BLOCKS))
async def test_non_streaming_create_returns_the_upstream_content(
    reply, mock, balancer_factory, upstream
):
    """The balancer streams upstream and accumulates; the client must not tell the difference
    from a provider's own non-streaming answer."""
    mock.configure("a", Script(reply=reply))
    b = await balancer_factory(config_text(mock, ["a"]))
    direct = await upstream.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    async with await _client(b) as client:
        through = await client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)

    assert [block.type for block in through.content] == EXPECTED_BLOCKS[reply]
    assert _without_ids(through) == _without_ids(direct)
    assert mock.requests("a")[-1].body["stream"] is True  # the balancer's own upstream call


async def test_mid_stream_cut_raises_instead_of_returning_a_truncated_message(
    mock, balancer_factory
):
    """After the first content block the balancer cannot fail over; the SDK must then see an
    ``event: error`` and raise, never accept the partial text as a finished message."""
    mock.enqueue("a", Script(text="one two three four five six", events=6, cut_after=5))
    no_recovery = FAST_TIMEOUTS + "recovery: {enabled: false}\n"  # docs/recovery.md: off here
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=no_recovery))
    seen: list[str] = []
    async with await _client(b) as client:
        with pytest.raises(anthropic.APIError) as caught:
            async with client.messages.stream(
                model=MODEL, max_tokens=256, messages=MESSAGES
            ) as stream:
                async for text in stream.text_stream:
                    seen.append(text)
                await stream.get_final_message()
    assert seen, "the text before the cut should have streamed to the client"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "api_error"
    assert mock.requests("b") == []  # committed to "a": no silent switch mid-answer


async def test_every_provider_failing_raises_503_naming_all_providers(mock, balancer_factory):
    mock.configure("a", Script(status=500, error_message="boom"))
    mock.configure("b", Script(status=529))
    b = await balancer_factory(config_text(mock, ["a", "b"]))
    async with await _client(b) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(
                model=MODEL, max_tokens=256, messages=MESSAGES
            ) as stream:
                await stream.get_final_message()
    error = caught.value
    assert error.status_code == 503
    assert isinstance(error.body, dict)
    assert error.body["error"]["message"].startswith(f"All configured providers for model {MODEL}")
    assert "All configured providers" in str(error)
    assert 1 <= int(error.response.headers["retry-after"]) <= 60
    assert len(mock.requests("a")) == 1 and len(mock.requests("b")) == 1


async def test_count_tokens_through_the_balancer_returns_an_int(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"]))
    async with await _client(b) as client:
        counted = await client.messages.count_tokens(model=MODEL, messages=MESSAGES)
    assert isinstance(counted.input_tokens, int)
    assert counted.input_tokens > 0
    forwarded = mock.requests("a")
    assert [r.path for r in forwarded] == ["/a/v1/messages/count_tokens"]
    assert forwarded[0].headers["x-api-key"] == "sk-prov-a-secret"


async def test_models_list_shows_the_configured_exact_route(mock, balancer_factory):
    text = config_text(mock, ["a"], routes={MODEL: ["a"], "*": ["a"]})
    b = await balancer_factory(text)
    async with await _client(b) as client:
        ids = [model.id async for model in client.models.list()]
    assert MODEL in ids
    assert all("*" not in model_id for model_id in ids)  # a glob is not a model a client can pick
