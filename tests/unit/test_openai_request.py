"""Anthropic request -> OpenAI request (PROTOCOL.md c.1), on hand-made bodies and on the
request skeletons recorded from the real Claude Code CLI."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from ccbalancer.dialects.base import DEFAULT_BODY_OPTIONS
from ccbalancer.dialects.openai import OpenAIDialect, to_openai_request
from ccbalancer.dialects.openai.request import Untranslatable

# Copied from the recordings of the real CLI (CLAUDE_CODE.md section 4).
SAMPLES = Path(__file__).parent.parent / "fixtures" / "openai" / "requests"
BILLING = "x-anthropic-billing-header: cc_version=2.1.330.363; cc_entrypoint=sdk-cli;"
REDACTED = re.compile(r"<\d+ chars: (.*)\.\.\.>", re.DOTALL)
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}}


def _convert(**fields: Any) -> dict[str, Any]:
    request = {"model": "claude-opus-5-5", "max_tokens": 1024, "messages": []} | fields
    return to_openai_request(request, "gpt-4o")


def _messages(*messages: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = _convert(messages=list(messages), **fields)["messages"]
    return converted


def _sample(name: str) -> dict[str, Any]:
    """A recorded skeleton made whole again: each redacted text ("<580 chars: <system-rem...>")
    becomes its recorded beginning, each redacted schema a real one."""
    request: dict[str, Any] = _unredact(json.loads((SAMPLES / name).read_text()))
    for tool in request.get("tools", []):
        tool["input_schema"] = {"type": "object", "properties": {}}
    return request


def _unredact(value: Any) -> Any:
    if isinstance(value, str):
        match = REDACTED.fullmatch(value)
        return match.group(1) if match else value
    if isinstance(value, list):
        return [_unredact(v) for v in value]
    if isinstance(value, dict):
        return {k: _unredact(v) for k, v in value.items()}
    return value


# --- the envelope ---------------------------------------------------------------------------


def test_request_always_streams_with_usage_and_uses_the_upstream_model() -> None:
    body = _convert(stream=False, temperature=0.2, top_p=0.9, top_k=40)
    assert body["model"] == "gpt-4o"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 1024
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert "top_k" not in body


def test_anthropic_only_fields_are_not_sent() -> None:
    body = _convert(
        metadata={"user_id": '{"session_id": "s"}'},
        context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        output_config={"effort": "high", "format": {"type": "json_schema", "schema": {}}},
        thinking={"type": "disabled"},
        betas=["x"],
        service_tier="auto",
    )
    assert set(body) == {"model", "messages", "max_tokens", "stream", "stream_options"}


def test_stop_sequences_become_stop_limited_to_four() -> None:
    body = _convert(stop_sequences=["a", "b", "", "c", "d", "e"])
    assert body["stop"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("thinking", "output_config", "effort"),
    [
        ({"type": "adaptive", "display": "updates"}, {"effort": "medium"}, "medium"),
        ({"type": "adaptive"}, {"effort": "high"}, "high"),
        ({"type": "enabled", "budget_tokens": 31999}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 2048}, {"effort": "low"}, "low"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        ({"type": "disabled"}, {"effort": "high"}, None),
    ],
)
def test_thinking_maps_to_reasoning_effort(
    thinking: dict[str, Any], output_config: dict[str, Any] | None, effort: str | None
) -> None:
    fields: dict[str, Any] = {"thinking": thinking}
    if output_config is not None:
        fields["output_config"] = output_config
    assert _convert(**fields).get("reasoning_effort") == effort


def test_reasoning_effort_can_be_turned_off_for_servers_that_reject_it() -> None:
    request = {"model": "m", "messages": [], "thinking": {"type": "adaptive"}}
    assert "reasoning_effort" not in to_openai_request(request, "gpt-4o", reasoning_effort=False)


def test_max_tokens_is_capped_at_the_servers_limit() -> None:
    request = {"model": "m", "messages": [], "max_tokens": 32000}
    assert to_openai_request(request, "deepseek-chat", max_tokens_limit=8192)["max_tokens"] == 8192
    assert to_openai_request(request, "gpt-4o")["max_tokens"] == 32000
    small = {**request, "max_tokens": 512}
    assert to_openai_request(small, "deepseek-chat", max_tokens_limit=8192)["max_tokens"] == 512


# --- system text ----------------------------------------------------------------------------


def test_system_blocks_join_without_the_billing_header_or_cache_control() -> None:
    system = [
        {"type": "text", "text": BILLING},
        {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Main prompt.", "cache_control": {"type": "ephemeral"}},
    ]
    messages = _messages({"role": "user", "content": "hi"}, system=system)
    assert messages[0] == {"role": "system", "content": "You are a Claude agent.\n\nMain prompt."}


def test_system_string_becomes_the_first_message() -> None:
    messages = _messages({"role": "user", "content": "hi"}, system="Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]


def test_system_role_message_keeps_its_position_and_loses_output_config() -> None:
    messages = _messages(
        {"role": "user", "content": "first"},
        {
            "role": "system",
            "output_config": {"effort": "medium"},
            "content": [
                {"type": "text", "text": "# Environment", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {"role": "user", "content": "second"},
    )
    assert messages == [
        {"role": "user", "content": "first"},
        {"role": "system", "content": "# Environment"},
        {"role": "user", "content": "second"},
    ]


# --- user content ---------------------------------------------------------------------------


def test_user_text_blocks_become_one_string() -> None:
    content = [
        {"type": "text", "text": "<system-reminder>r</system-reminder>"},
        {"type": "text", "text": "Do it"},
    ]
    assert _messages({"role": "user", "content": content}) == [
        {"role": "user", "content": "<system-reminder>r</system-reminder>\n\nDo it"}
    ]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]
    assert _messages({"role": "user", "content": content})[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_blocks_without_an_openai_form_are_refused_by_name_never_dropped() -> None:
    """Issue 15 item 4: before, these vanished and the model answered without them."""
    content = [
        {"type": "text", "text": "keep"},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
        },
        {"type": "search_result", "source": "x", "title": "t", "content": []},
        {"type": "mystery_block_2027"},
        "not a block",
        {"type": "image", "source": {"type": "file", "file_id": "f_1"}},
    ]
    with pytest.raises(Untranslatable) as caught:
        _messages({"role": "user", "content": content})
    assert caught.value.labels == ["document", "image", "mystery_block_2027", "search_result"]


def test_a_pdf_becomes_an_openai_file_part_for_a_provider_that_takes_files() -> None:
    pdf = {
        "type": "document",
        "title": "report.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }
    request = {"model": "m", "messages": [{"role": "user", "content": [pdf, _text("sum up")]}]}
    sent = to_openai_request(request, "gpt-4o", files=True)["messages"]
    assert sent == [
        {
            "role": "user",
            "content": [
                {
                    "type": "file",
                    "file": {
                        "filename": "report.pdf",
                        "file_data": "data:application/pdf;base64,JVBERi0x",
                    },
                },
                {"type": "text", "text": "sum up"},
            ],
        }
    ]
    with pytest.raises(Untranslatable, match="document"):
        to_openai_request(request, "gpt-4o")  # files off: refused, not dropped


def test_a_pdf_read_by_a_tool_follows_its_tool_message_as_a_file() -> None:
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
    }
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [pdf]}
    request = {"model": "m", "messages": [{"role": "user", "content": [result]}]}
    tool, user = to_openai_request(request, "gpt-4o", files=True)["messages"]
    assert tool == {
        "role": "tool",
        "tool_call_id": "t1",
        "content": "(the tool returned a file; it follows in the next message)",
    }
    assert user["content"][0]["type"] == "file"


def test_text_documents_and_tool_references_become_text() -> None:
    content = [
        {"type": "text", "text": "keep"},
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        },
        {"type": "document", "source": {"type": "content", "content": [_text("more")]}},
    ]
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "tool_reference", "tool_name": "WebFetch"}],
    }
    assert _messages({"role": "user", "content": [result, *content]}) == [
        {"role": "tool", "tool_call_id": "t1", "content": "Tool loaded: WebFetch"},
        {"role": "user", "content": "keep\n\nnotes\n\nmore"},
    ]


def test_server_tool_history_blocks_are_refused() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
            _text("Found it."),
        ],
    }
    with pytest.raises(Untranslatable) as caught:
        _messages({"role": "user", "content": "news?"}, assistant)
    assert caught.value.labels == ["server_tool_use", "web_search_tool_result"]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


# --- tool use and results -------------------------------------------------------------------


def test_assistant_tool_use_becomes_tool_calls_with_the_same_ids() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Running it."},
            {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "ls"}},
            {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {}},
        ],
    }
    (message,) = _messages(assistant)
    assert message["content"] == "Running it."
    assert [(c["id"], c["function"]["name"]) for c in message["tool_calls"]] == [
        ("toolu_01A", "Bash"),
        ("toolu_01B", "Read"),
    ]
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"command": "ls"}
    assert message["tool_calls"][1]["function"]["arguments"] == "{}"


def test_tool_results_come_first_as_tool_messages() -> None:
    user = {
        "role": "user",
        "content": [
            {"type": "text", "text": "and also this"},
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": "file.txt",
                "is_error": False,
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01B",
                "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}],
                "cache_control": {"type": "ephemeral"},
            },
        ],
    }
    assert _messages(user) == [
        {"role": "tool", "tool_call_id": "toolu_01A", "content": "file.txt"},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "line 1\n\nline 2"},
        {"role": "user", "content": "and also this"},
    ]


def test_failed_tool_result_is_marked_in_its_text() -> None:
    user = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": "command not found",
                "is_error": True,
            }
        ],
    }
    assert _messages(user)[0]["content"] == "Error: command not found"


def test_images_in_tool_results_move_to_a_following_user_message() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"},
    }
    user = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [image]},
            {
                "type": "tool_result",
                "tool_use_id": "t2",
                "content": [{"type": "text", "text": "ok"}, image],
            },
        ],
    }
    tool1, tool2, follow = _messages(user)
    assert tool1["role"] == tool2["role"] == "tool"
    assert tool1["content"]  # never empty: the model must know an image came back
    assert tool2["content"] == "ok"
    assert follow == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}] * 2,
    }


def test_thinking_blocks_from_history_are_dropped() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "thinking", "thinking": "hmm", "signature": "EqQB"},
            {"type": "text", "text": "Answer"},
        ],
    }
    assert _messages(assistant) == [{"role": "assistant", "content": "Answer"}]
    only_thinking = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": "x", "signature": "s"}],
    }
    assert _messages(only_thinking) == []


def test_thinking_can_be_sent_back_as_reasoning_content_for_deepseek() -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {
                "type": "thinking",
                "thinking": "Need ls.",
                "signature": "ccbalancer-synthetic:openai-reasoning",
            },
            {"type": "tool_use", "id": "call_1", "name": "Bash", "input": {"command": "ls"}},
        ],
    }
    request = {"model": "m", "messages": [assistant]}
    (message,) = to_openai_request(request, "deepseek-reasoner", reasoning_history=True)["messages"]
    assert message["reasoning_content"] == "Need ls."
    assert message["content"] is None


# --- tools ----------------------------------------------------------------------------------


def test_tools_become_functions() -> None:
    tools = [
        {
            "name": "Bash",
            "description": "Run",
            "input_schema": SCHEMA,
            "cache_control": {"type": "ephemeral"},
        },
        {
            "name": "Deferred",
            "description": "d",
            "input_schema": {"type": "object"},
            "defer_loading": True,
        },
        {"type": "custom", "name": "Custom", "input_schema": SCHEMA},
    ]
    assert _convert(tools=tools)["tools"] == [
        {
            "type": "function",
            "function": {"name": "Bash", "description": "Run", "parameters": SCHEMA},
        },
        {
            "type": "function",
            "function": {"name": "Deferred", "description": "d", "parameters": {"type": "object"}},
        },
        {"type": "function", "function": {"name": "Custom", "parameters": SCHEMA}},
    ]


def test_server_tools_are_refused_not_dropped() -> None:
    tools = [
        {"name": "Bash", "input_schema": SCHEMA},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ]
    with pytest.raises(Untranslatable) as caught:
        _convert(tools=tools)
    assert caught.value.labels == ["tool web_search_20250305"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ],
)
def test_tool_choice_maps_to_openai(choice: dict[str, Any], expected: object) -> None:
    tools = [{"name": "Bash", "input_schema": SCHEMA}]
    body = _convert(tools=tools, tool_choice=choice)
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_disable_parallel_tool_use_turns_off_parallel_calls() -> None:
    tools = [{"name": "Bash", "input_schema": SCHEMA}]
    body = _convert(tools=tools, tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert body["parallel_tool_calls"] is False


def test_tool_choice_is_not_sent_without_tools() -> None:
    body = _convert(tools=[], tool_choice={"type": "any"})
    assert "tools" not in body
    assert "tool_choice" not in body


# --- recorded Claude Code requests ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "cc-2.1.330-request1-skeleton.json",
        "cc-2.1.330-request2-after-tool-skeleton.json",
        "cc-2.1.330-thinking-tool-followup-skeleton.json",
        "cc-2.1.197-request1-skeleton.json",
    ],
)
def test_recorded_claude_code_request_converts_without_touching_the_input(name: str) -> None:
    request = _sample(name)
    before = copy.deepcopy(request)
    body = to_openai_request(request, "gpt-4o")
    assert request == before
    assert body["messages"][0]["role"] == "system"
    assert "x-anthropic-billing-header" not in body["messages"][0]["content"]
    assert len(body["tools"]) == len(request["tools"])
    wire = orjson.dumps(body)
    for anthropic_only in (
        b"cache_control",
        b"output_config",
        b"context_management",
        b"defer_loading",
    ):
        assert anthropic_only not in wire
    assert b'"signature"' not in wire
    assert b"EmwKAhgB" not in wire  # redacted_thinking data


def test_first_claude_code_turn_keeps_the_mid_conversation_system_message() -> None:
    body = to_openai_request(_sample("cc-2.1.330-request1-skeleton.json"), "gpt-4o")
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "system"]
    assert body["messages"][0]["content"].startswith("You are a Claude agent")
    assert body["messages"][2]["content"].startswith("# Environment")
    assert body["reasoning_effort"] == "medium"
    assert body["max_tokens"] == 128000


def test_turn_after_a_tool_call_pairs_the_tool_result_with_its_call() -> None:
    body = to_openai_request(_sample("cc-2.1.330-thinking-tool-followup-skeleton.json"), "gpt-4o")
    system, user, environment, assistant, tool = body["messages"]
    assert (system["role"], user["role"], environment["role"]) == ("system", "user", "system")
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "toolu_mock_e3de9889315a474087ce",
                "type": "function",
                "function": {
                    "name": "Bash",
                    "arguments": '{"command":"echo THINK_TOOL_OK","description":"mock tool call"}',
                },
            }
        ],
    }
    assert tool == {
        "role": "tool",
        "tool_call_id": "toolu_mock_e3de9889315a474087ce",
        "content": "THINK_TOOL_OK",
    }


# --- the dialect around it ------------------------------------------------------------------


def test_dialect_url_ignores_the_anthropic_query_string() -> None:
    dialect = OpenAIDialect()
    assert dialect.kind == "openai"
    assert (
        dialect.url("https://api.example.com/v1", "beta=true")
        == "https://api.example.com/v1/chat/completions"
    )
    assert (
        dialect.url("https://api.example.com/v1/", "")
        == "https://api.example.com/v1/chat/completions"
    )
    assert dialect.url("http://h/v1/chat/completions", "") == "http://h/v1/chat/completions"


@pytest.mark.parametrize("auth_type", ["api_key", "auth_token"])
def test_dialect_headers_carry_only_the_bearer_credential(auth_type: str) -> None:
    client = {
        "x-api-key": "client-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219",
        "x-claude-code-session-id": "s",
        "user-agent": "claude-cli/2.1.330",
    }
    assert OpenAIDialect().headers(client, "sk-provider", auth_type) == {
        "content-type": "application/json",
        "accept": "text/event-stream",
        "authorization": "Bearer sk-provider",
    }


def test_dialect_body_is_the_translated_request_as_json() -> None:
    request = {
        "model": "claude-opus-5-5",
        "messages": [{"role": "user", "content": "hi"}],
        "provider": "x",
    }
    body = orjson.loads(OpenAIDialect().body(request, "gpt-4o-mini", DEFAULT_BODY_OPTIONS))
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert "provider" not in body
