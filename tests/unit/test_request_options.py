"""Per-provider request options of issue 15: beta filters, thinking left out, the billing
line dropped, a per-session prompt cache key, cache markers kept (items 5-7)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.base import BodyOptions, HeaderOptions
from ccbalancer.dialects.betas import BetaFilter
from ccbalancer.dialects.openai import OpenAIDialect
from ccbalancer.dialects.session import cache_session

# Claude Code 2.1.330's list for its default model (CLAUDE_CODE.md section 3), plus the
# retired 1M-context beta 2.1.197 still sends.
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,"
    "per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,"
    "thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,effort-2025-11-24,"
    "thinking-display-updates-2026-08-18,context-1m-2025-08-07"
)
BILLING = "x-anthropic-billing-header: cc_version=2.1.330.363; cc_entrypoint=sdk-cli;"
SESSION = "0b6f3f3c-5a52-4d5e-9a8e-1d2f3a4b5c6d"
USER_ID = json.dumps({"device_id": "ab" * 32, "account_uuid": "", "session_id": SESSION})
EPHEMERAL = {"type": "ephemeral"}


def _claude_code_body() -> dict[str, Any]:
    return {
        "model": "claude-opus-5-5",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": BILLING},
            {"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}],
            }
        ],
        "thinking": {"type": "adaptive", "display": "updates"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": USER_ID},
        "anthropic_beta": ["context-1m-2025-08-07", "effort-2025-11-24"],
    }


def _anthropic(options: BodyOptions) -> dict[str, Any]:
    sent: dict[str, Any] = orjson.loads(AnthropicDialect().body(_claude_code_body(), "m", options))
    return sent


# --- anthropic-beta -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("betas", "kept"),
    [
        (BetaFilter(drop=("context-1m-*",)), BETAS.replace(",context-1m-2025-08-07", "")),
        (
            BetaFilter(allow=("claude-code-*", "interleaved-thinking-*")),
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        ),
    ],
)
def test_beta_filters_apply_to_the_header(betas: BetaFilter, kept: str) -> None:
    headers = AnthropicDialect().headers(
        {"anthropic-beta": BETAS, "anthropic-version": "2023-06-01"},
        "sk-1",
        "api_key",
        HeaderOptions(betas=betas),
    )
    assert headers["anthropic-beta"] == kept
    assert headers["anthropic-version"] == "2023-06-01"


def test_a_header_with_every_beta_dropped_is_not_sent() -> None:
    headers = AnthropicDialect().headers(
        {"anthropic-beta": "context-1m-2025-08-07"},
        "k",
        "api_key",
        HeaderOptions(betas=BetaFilter(drop=("*",))),
    )
    assert "anthropic-beta" not in headers


def test_without_a_filter_the_header_is_forwarded_unchanged() -> None:
    headers = AnthropicDialect().headers({"anthropic-beta": BETAS}, "k", "api_key")
    assert headers["anthropic-beta"] == BETAS


def test_beta_filters_apply_to_the_body_list() -> None:
    sent = _anthropic(BodyOptions(betas=BetaFilter(drop=("context-1m-*",))))
    assert sent["anthropic_beta"] == ["effort-2025-11-24"]
    assert _anthropic(BodyOptions())["anthropic_beta"] == _claude_code_body()["anthropic_beta"]


# --- thinking left out, billing line dropped ------------------------------------------------


def test_a_provider_without_thinking_gets_no_thinking_request() -> None:
    sent = _anthropic(BodyOptions(thinking=False))
    assert "thinking" not in sent
    assert "context_management" not in sent  # its only edit was clear_thinking
    kept = _anthropic(BodyOptions())
    assert kept["thinking"] == {"type": "adaptive", "display": "updates"}


def test_billing_line_is_dropped_only_when_the_provider_asks() -> None:
    assert _anthropic(BodyOptions())["system"][0]["text"] == BILLING
    stripped = _anthropic(BodyOptions(strip_billing_header=True))
    assert stripped["system"] == [
        {"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL}
    ]


# --- OpenAI: prompt_cache_key and cache_control ---------------------------------------------


def _openai(options: BodyOptions, session: str = "") -> dict[str, Any]:
    sent: dict[str, Any] = orjson.loads(
        OpenAIDialect().body(_claude_code_body(), "gpt-5", options, session=session)
    )
    return sent


def test_session_comes_from_the_header_else_from_metadata() -> None:
    body = _claude_code_body()
    assert cache_session({"x-claude-code-session-id": "s-header"}, body) == "s-header"
    assert cache_session({}, body) == SESSION
    legacy = {"metadata": {"user_id": f"user_{'ab' * 32}_account__session_{SESSION}"}}
    assert cache_session({}, legacy) == SESSION
    assert cache_session({}, {"metadata": {"user_id": "someone"}}) == ""


def test_prompt_cache_key_is_a_stable_hash_of_the_session() -> None:
    first = _openai(BodyOptions(prompt_cache_key=True), SESSION)["prompt_cache_key"]
    assert first == _openai(BodyOptions(prompt_cache_key=True), SESSION)["prompt_cache_key"]
    assert first != _openai(BodyOptions(prompt_cache_key=True), "other")["prompt_cache_key"]
    assert SESSION not in first and len(first) <= 64
    assert "prompt_cache_key" not in _openai(BodyOptions(), SESSION)  # off by default
    assert "prompt_cache_key" not in _openai(BodyOptions(prompt_cache_key=True), "")


def test_cache_control_markers_are_kept_only_when_the_provider_takes_them() -> None:
    plain = _openai(BodyOptions())["messages"]
    assert plain[0] == {"role": "system", "content": "You are Claude Code."}
    assert plain[1] == {"role": "user", "content": "hi"}
    kept = _openai(BodyOptions(cache_control=True))["messages"]
    assert kept[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You are Claude Code.", "cache_control": EPHEMERAL}],
    }
    assert kept[1] == {
        "role": "user",
        "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL}],
    }
    assert BILLING not in json.dumps(kept)  # the billing line never goes to an OpenAI provider


def test_cache_control_on_a_tool_result_stays_on_its_tool_message() -> None:
    body = _claude_code_body()
    body["messages"] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": "ok",
                    "cache_control": EPHEMERAL,
                }
            ],
        }
    ]
    sent = orjson.loads(OpenAIDialect().body(body, "m", BodyOptions(cache_control=True)))
    assert sent["messages"][1] == {
        "role": "tool",
        "tool_call_id": "t",
        "content": [{"type": "text", "text": "ok", "cache_control": EPHEMERAL}],
    }


def test_thinking_off_also_stops_reasoning_effort() -> None:
    assert _openai(BodyOptions())["reasoning_effort"] == "medium"
    assert "reasoning_effort" not in _openai(BodyOptions(thinking=False))
