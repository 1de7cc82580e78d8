"""Per-provider body options, seen from the upstream: max_tokens caps and DeepSeek's
reasoning_content round trip, through the real balancer to the simulated providers."""

from __future__ import annotations

import pytest

from ccbalancer.config import parse_config
from ccbalancer.errors import ConfigError
from tests.conftest import config_text, msg

# A Claude Code follow-up turn: a large max_tokens, extended thinking, and the previous
# assistant turn's thinking + tool call answered by a tool result.
FOLLOW_UP = msg(
    max_tokens=32000,
    thinking={"type": "enabled", "budget_tokens": 31999},
    messages=[
        {"role": "user", "content": "list the files"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": "I should run ls.",
                    "signature": "ccbalancer-synthetic:openai-reasoning",
                },
                {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt"}],
        },
    ],
)


async def test_an_openai_provider_gets_the_capped_max_tokens_and_its_reasoning_back(
    mock, balancer_factory
):
    extra = {"ds": ", max_tokens: 8192, reasoning_history: true", "plain": ""}
    text = config_text(
        mock,
        [("ds", "openai"), ("plain", "openai")],
        routes={"deepseek*": [("ds", "deepseek-reasoner")], "*": [("plain", "gpt-4o")]},
        provider_extra=extra,
    )
    b = await balancer_factory(text)
    resp = await b.post({**FOLLOW_UP, "model": "deepseek-chat"})
    assert resp.status == 200
    await resp.read()
    sent = mock.requests("ds")[-1].body
    assert sent["max_tokens"] == 8192
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "I should run ls."
    assert assistant["tool_calls"][0]["id"] == "call_1"

    resp = await b.post({**FOLLOW_UP, "model": "claude-sonnet"})
    assert resp.status == 200
    await resp.read()
    sent = mock.requests("plain")[-1].body  # defaults: nothing capped, thinking not echoed
    assert sent["max_tokens"] == 32000
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert "reasoning_content" not in assistant


async def test_an_anthropic_provider_gets_max_tokens_and_the_thinking_budget_capped(
    mock, balancer_factory
):
    text = config_text(mock, ["small"], provider_extra={"small": ", max_tokens: 4096"})
    b = await balancer_factory(text)
    resp = await b.post(FOLLOW_UP)
    assert resp.status == 200
    await resp.read()
    sent = mock.requests("small")[-1].body
    assert sent["max_tokens"] == 4096
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4095}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (", reasoning_history: true", "reasoning_history applies to type: openai providers only"),
        (", max_tokens: -1", "greater than or equal to 0"),
    ],
)
def test_a_misplaced_or_invalid_option_is_rejected_naming_file_key_and_reason(mock, extra, reason):
    text = config_text(mock, ["a"], provider_extra={"a": extra})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, path="providers.yaml")
    assert "providers.yaml" in str(caught.value)
    assert "providers[0]" in str(caught.value)
    assert reason in str(caught.value)
