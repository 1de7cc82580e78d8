"""Shapes OpenAI-compatible servers really send beyond OpenAI's own: content as a list of
parts (Mistral's thinking), cached tokens wherever a server puts them, tool ids a server
repeats, and the early input estimate in ``message_start`` (issue 15, items 1, 2, 8, 9)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.openai import OpenAIDialect, OpenAIStreamTranslator
from tests.unit.test_openai_properties import Grammar, _sdk_message

MODEL = "claude-opus-5-5"


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]} | extra


def _sse(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _decode(body: bytes, content_type: str = "text/event-stream", estimate: int = 0) -> Any:
    dialect = OpenAIDialect()
    decoder = (
        dialect.decoder(MODEL, content_type, input_estimate=estimate)
        if estimate
        else dialect.decoder(MODEL, content_type)
    )
    events = decoder.feed(body, 1.0) + decoder.close()
    Grammar().check([(e.name, e.json()) for e in events])
    return events


def _message(body: bytes, content_type: str = "text/event-stream") -> Any:
    return _sdk_message(_decode(body, content_type))


def _thinking(*texts: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": [{"type": "text", "text": t} for t in texts]}


# --- 1. content as a list of parts ---------------------------------------------------------


def test_mistral_thinking_and_text_parts_become_thinking_and_text_blocks() -> None:
    """The Mistral stream that came out as "91" where the model said "391"."""
    body = _sse(
        _chunk({"role": "assistant", "content": [_thinking("Let me add")]}),
        _chunk({"content": [_thinking(" 300 and 91.")]}),
        _chunk({"content": [{"type": "text", "text": "3"}]}),
        _chunk({"content": [{"type": "text", "text": "91"}]}),
        _chunk({}, "stop", usage={"prompt_tokens": 20, "completion_tokens": 9}),
    )
    message = _message(body)
    assert [
        (b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content
    ] == [
        ("thinking", "Let me add 300 and 91."),
        ("text", "391"),
    ]
    assert message.stop_reason == "end_turn"


def test_parts_and_plain_strings_mix_within_one_stream() -> None:
    """Mistral sends thinking as part lists and the answer as plain strings after it."""
    body = _sse(
        _chunk({"content": [_thinking("hm")]}),
        _chunk({"content": "The answer"}),
        _chunk(
            {
                "content": [
                    {"type": "text", "text": " is 4."},
                    {"type": "reference", "reference_ids": [1]},
                ]
            }
        ),
        _chunk({}, "stop"),
    )
    message = _message(body)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "The answer is 4."


def test_one_chunk_holding_thinking_then_text_parts_keeps_their_order() -> None:
    body = _sse(
        _chunk({"content": [_thinking("a", "b"), {"type": "text", "text": "c"}, _thinking("d")]}),
        _chunk({}, "stop"),
    )
    message = _message(body)
    assert [
        (b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in message.content
    ] == [
        ("thinking", "ab"),
        ("text", "c"),
        ("thinking", "d"),
    ]


def test_refusal_and_reasoning_parts_are_read() -> None:
    body = _sse(
        _chunk({"content": [{"type": "reasoning", "text": "policy"}]}),
        _chunk({"content": [{"type": "refusal", "refusal": "I can't help with that."}]}),
        _chunk({}, "content_filter"),
    )
    message = _message(body)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[1].text == "I can't help with that."
    assert message.stop_reason == "refusal"


def test_a_stream_of_only_part_arrays_has_content() -> None:
    """Before the fix every piece was dropped and the stream had no content block at all,
    which the balancer counted as a provider failure."""
    events = _decode(
        _sse(_chunk({"content": [{"type": "text", "text": "ok"}]}), _chunk({}, "stop"))
    )
    assert "content_block_start" in [e.name for e in events]


def test_whole_json_answer_with_content_parts() -> None:
    completion = {
        "id": "c9",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {
                    "role": "assistant",
                    "content": [_thinking("carry the one"), {"type": "text", "text": "391"}],
                },
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5},
    }
    message = _message(orjson.dumps(completion), "application/json")
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "carry the one"
    assert message.content[1].text == "391"
    assert message.usage.output_tokens == 5


# --- 2. cached tokens, wherever they are ---------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 60},
            },
            (40, 0, 60, 7),
            id="openai-prompt-tokens-details",
        ),
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_cache_hit_tokens": 64,
                "prompt_cache_miss_tokens": 36,
            },
            (36, 0, 64, 7),
            id="deepseek-hit-miss",
        ),
        pytest.param(
            {"completion_tokens": 7, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36},
            (36, 0, 64, 7),
            id="deepseek-without-prompt-tokens",
        ),
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "total_tokens": 107,
                "cached_tokens": 80,
            },
            (20, 0, 80, 7),
            id="moonshot-top-level",
        ),
        pytest.param(
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "prompt_tokens_details": {"cached_tokens": 10, "cache_write_tokens": 50},
            },
            (40, 50, 10, 7),
            id="openrouter-cache-write",
        ),
        pytest.param(
            {
                "prompt_tokens": 1000,
                "completion_tokens": 7,
                "cache_read_input_tokens": 900,
                "cache_creation_input_tokens": 90,
            },
            (10, 90, 900, 7),
            id="relay-with-anthropic-fields",
        ),
        pytest.param(
            {
                "prompt_tokens": 10,
                "completion_tokens": 7,
                "cache_read_input_tokens": 900,
                "cache_creation_input_tokens": 90,
            },
            (10, 90, 900, 7),
            id="relay-with-anthropic-prompt-semantics",
        ),
        pytest.param(
            {"prompt_tokens": None, "completion_tokens": "7"}, (0, 0, 0, 0), id="odd-values"
        ),
    ],
)
def test_cached_tokens_map_to_anthropic_usage(
    usage: dict[str, Any], expected: tuple[int, ...]
) -> None:
    tail = {"id": "c1", "choices": [], "usage": usage}
    mapped = _message(_sse(_chunk({"content": "hi"}), _chunk({}, "stop"), tail)).usage
    assert (
        mapped.input_tokens,
        mapped.cache_creation_input_tokens,
        mapped.cache_read_input_tokens,
        mapped.output_tokens,
    ) == expected


def test_moonshot_cache_reads_reach_the_sdk_as_cache_reads_streaming_and_whole() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "cached_tokens": 80}
    streamed = _message(
        _sse(
            _chunk({"content": "hi"}),
            _chunk({}, "stop"),
            {"id": "c1", "choices": [], "usage": usage},
        )
    )
    whole = _message(
        orjson.dumps(
            {
                "id": "c1",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hi"},
                    }
                ],
                "usage": usage,
            }
        ),
        "application/json",
    )
    for message in (streamed, whole):
        assert message.usage.input_tokens == 20
        assert message.usage.cache_read_input_tokens == 80
        assert message.usage.cache_creation_input_tokens == 0


def test_groq_usage_in_x_groq_is_read() -> None:
    last = _chunk(
        {}, "stop", x_groq={"id": "req_1", "usage": {"prompt_tokens": 30, "completion_tokens": 4}}
    )
    message = _message(_sse(_chunk({"content": "hi"}), last))
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 4)


# --- 8. tool ids a provider repeats --------------------------------------------------------


def _call(index: int, call_id: str | None, name: str, arguments: str) -> dict[str, Any]:
    call: dict[str, Any] = {
        "index": index,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    if call_id is not None:
        call["id"] = call_id
    return call


def test_a_repeated_tool_id_is_made_unique_and_stays_the_same_for_the_same_stream() -> None:
    body = _sse(
        _chunk({"tool_calls": [_call(0, "call_0", "Read", '{"file_path": "a"}')]}),
        _chunk({"tool_calls": [_call(1, "call_0", "Read", '{"file_path": "b"}')]}),
        _chunk({"tool_calls": [_call(2, "call_0", "Read", '{"file_path": "c"}')]}),
        _chunk({}, "tool_calls"),
    )
    first = _message(body)
    ids = [b.id for b in first.content]
    assert len(set(ids)) == 3
    assert ids[0] == "call_0"
    assert [b.input for b in first.content] == [
        {"file_path": "a"},
        {"file_path": "b"},
        {"file_path": "c"},
    ]
    assert [b.id for b in _message(body).content] == ids  # stable: replays give the same ids


def test_omitted_ids_and_calls_without_arguments_still_work() -> None:
    body = _sse(
        _chunk({"tool_calls": [_call(0, None, "Now", "")]}),
        _chunk({"tool_calls": [_call(1, None, "Now", "")]}),
        _chunk({}, "tool_calls"),
    )
    message = _message(body)
    assert [b.input for b in message.content] == [{}, {}]
    assert all(b.id.startswith("toolu_") for b in message.content)
    assert message.content[0].id != message.content[1].id


# --- 9. early input estimate ---------------------------------------------------------------


def test_message_start_carries_the_estimate_and_message_delta_the_real_count() -> None:
    events = _decode(
        _sse(
            _chunk({"content": "hi"}),
            _chunk({}, "stop"),
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 321, "completion_tokens": 2}},
        ),
        estimate=300,
    )
    start = events[0].json()["message"]["usage"]
    delta = next(e.json() for e in events if e.name == "message_delta")["usage"]
    assert start["input_tokens"] == 300
    assert delta["input_tokens"] == 321
    assert _sdk_message(events).usage.input_tokens == 321


def test_decoders_say_whether_their_start_usage_is_an_estimate() -> None:
    assert OpenAIDialect().decoder(MODEL, "text/event-stream").start_usage_estimated is True
    assert AnthropicDialect().decoder(MODEL, "text/event-stream").start_usage_estimated is False


def test_translator_without_an_estimate_starts_at_zero() -> None:
    out = OpenAIStreamTranslator(MODEL).feed(_chunk({"content": "x"}))
    assert out[0][1]["message"]["usage"]["input_tokens"] == 0


def test_moonshot_usage_inside_the_finishing_choice_is_read() -> None:
    """Kimi's stream puts usage (with its top-level cached_tokens) in ``choices[0]``."""
    usage = {"prompt_tokens": 39, "completion_tokens": 21, "total_tokens": 60, "cached_tokens": 32}
    last = {
        "id": "c1",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": usage}],
    }
    message = _message(_sse(_chunk({"content": "hi"}), last))
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (7, 32)
    assert message.usage.output_tokens == 21
