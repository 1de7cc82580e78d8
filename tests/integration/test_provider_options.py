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


# --- issue 15: betas, billing line, thinking, prompt cache key -----------------------------

CLAUDE_CODE_BETAS = "claude-code-20250219,context-1m-2025-08-07,interleaved-thinking-2025-05-14"
BILLING = "x-anthropic-billing-header: cc_version=2.1.330.363; cc_entrypoint=sdk-cli;"
SYSTEM = [
    {"type": "text", "text": BILLING},
    {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
]


async def test_beta_filters_reach_the_relay_and_the_official_api_gets_every_beta(
    mock, balancer_factory
):
    extra = {
        "drop": ", betas: {drop: ['context-1m-*']}",
        "allow": ", betas: {allow: ['claude-code-*']}",
    }
    text = config_text(
        mock,
        ["drop", "allow", "official"],
        routes={"d*": ["drop"], "a*": ["allow"], "*": ["official"]},
        provider_extra=extra,
    )
    b = await balancer_factory(text)
    body = {**msg(), "anthropic_beta": ["context-1m-2025-08-07", "effort-2025-11-24"]}
    for model in ("drop-model", "allow-model", "claude-sonnet-4-6"):
        resp = await b.post({**body, "model": model}, {"anthropic-beta": CLAUDE_CODE_BETAS})
        assert resp.status == 200
        await resp.read()

    dropped = mock.requests("drop")[0]
    assert dropped.headers["anthropic-beta"] == (
        "claude-code-20250219,interleaved-thinking-2025-05-14"
    )
    assert dropped.body["anthropic_beta"] == ["effort-2025-11-24"]
    allowed = mock.requests("allow")[0]
    assert allowed.headers["anthropic-beta"] == "claude-code-20250219"
    assert allowed.body["anthropic_beta"] == []
    official = mock.requests("official")[0]
    assert official.headers["anthropic-beta"] == CLAUDE_CODE_BETAS
    assert official.body["anthropic_beta"] == body["anthropic_beta"]


async def test_billing_line_and_thinking_are_left_out_only_where_configured(mock, balancer_factory):
    extra = {"relay": ", strip_billing_header: true, capabilities: {thinking: false}"}
    text = config_text(
        mock,
        ["relay", "official"],
        routes={"r*": ["relay"], "*": ["official"]},
        provider_extra=extra,
    )
    b = await balancer_factory(text)
    body = msg(system=SYSTEM, thinking={"type": "adaptive"})
    for model in ("relay-model", "claude-sonnet-4-6"):
        await (await b.post({**body, "model": model})).read()

    relay = mock.requests("relay")[0].body
    assert relay["system"] == SYSTEM[1:]
    assert "thinking" not in relay
    official = mock.requests("official")[0].body
    assert official["system"] == SYSTEM
    assert official["thinking"] == {"type": "adaptive"}


async def test_prompt_cache_key_is_stable_per_session_and_never_the_raw_id(mock, balancer_factory):
    text = config_text(
        mock,
        [("oa", "openai")],
        routes={"*": [("oa", "gpt-5")]},
        provider_extra={"oa": ", prompt_cache_key: true"},
    )
    b = await balancer_factory(text)
    user_id = '{"device_id":"d","account_uuid":"","session_id":"sess-A"}'
    requests = [
        ({"x-claude-code-session-id": "sess-A"}, msg("one")),
        ({"x-claude-code-session-id": "sess-A"}, msg("two, a later turn")),
        ({}, msg("three", metadata={"user_id": user_id})),
        ({"x-claude-code-session-id": "sess-B"}, msg("four")),
    ]
    for headers, body in requests:
        await (await b.post(body, headers)).read()

    keys = [r.body["prompt_cache_key"] for r in mock.requests("oa")]
    assert keys[0] == keys[1] == keys[2] != keys[3]
    assert all("sess-" not in key for key in keys)
