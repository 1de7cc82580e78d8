"""OpenAI chunks -> Anthropic events: golden recordings, then the rules one by one.

The golden files in tests/fixtures/openai/ pair an upstream body (``*.sse`` as a server sends
it, ``*.json`` for a plain completion) with the exact Anthropic events Claude Code must get.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from ccbalancer.dialects.openai import (
    SYNTHETIC_SIGNATURE_PREFIX,
    OpenAIDialect,
    OpenAIStreamDecoder,
    OpenAIStreamTranslator,
    map_openai_error,
)
from ccbalancer.sse.event import Event

FIXTURES = Path(__file__).parent.parent / "fixtures" / "openai" / "streams"
UPSTREAMS = sorted(p for p in FIXTURES.iterdir() if not p.name.endswith(".expected.json"))
MODEL = "claude-opus-5-5"

Pairs = list[tuple[str, dict[str, Any]]]


def _content_type(path: Path) -> str:
    return "application/json" if path.suffix == ".json" else "text/event-stream"


def _expected(path: Path) -> list[list[Any]]:
    loaded: list[list[Any]] = json.loads((FIXTURES / f"{path.stem}.expected.json").read_text())
    return loaded


def _pairs(events: list[Event]) -> list[list[Any]]:
    return [[event.name, event.json()] for event in events]


def _decode(body: bytes, content_type: str = "text/event-stream", step: int = 0) -> list[Event]:
    decoder = OpenAIDialect().decoder(MODEL, content_type)
    events: list[Event] = []
    if step:
        for start in range(0, len(body), step):
            events += decoder.feed(body[start : start + step], 1.0)
    else:
        events += decoder.feed(body, 1.0)
    return events + decoder.close()


def _sse(*chunks: dict[str, Any] | str) -> bytes:
    frames = [c if isinstance(c, str) else orjson.dumps(c).decode() for c in chunks]
    return "".join(f"data: {frame}\n\n" for frame in frames).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    } | extra


def _feed(translator: OpenAIStreamTranslator, *chunks: dict[str, Any]) -> Pairs:
    out: Pairs = []
    for chunk in chunks:
        out += translator.feed(chunk)
    return out


# --- golden recordings ---------------------------------------------------------------------


@pytest.mark.parametrize("upstream", UPSTREAMS, ids=lambda p: p.name)
def test_recorded_upstream_converts_to_the_expected_events(upstream: Path) -> None:
    events = _decode(upstream.read_bytes(), _content_type(upstream))
    assert _pairs(events) == _expected(upstream)


@pytest.mark.parametrize("upstream", UPSTREAMS, ids=lambda p: p.name)
def test_recording_fed_byte_by_byte_gives_the_same_events(upstream: Path) -> None:
    events = _decode(upstream.read_bytes(), _content_type(upstream), step=1)
    assert _pairs(events) == _expected(upstream)


def test_events_are_anthropic_frames_stamped_with_arrival_time() -> None:
    decoder = OpenAIStreamDecoder(MODEL)
    events = decoder.feed(_sse(_chunk({"content": "Hi"})), 42.5)
    assert [e.name for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]
    assert all(e.received == 42.5 for e in events)
    assert events[2].raw == (
        b"event: content_block_delta\ndata: "
        b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    )


# --- message framing -----------------------------------------------------------------------


def test_message_delta_waits_for_the_usage_chunk_after_finish_reason() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    out = _feed(translator, _chunk({"content": "ok"}), _chunk({}, "stop"))
    assert [name for name, _ in out][-1] == "content_block_stop"
    usage = {"prompt_tokens": 7, "completion_tokens": 3}
    tail = translator.feed({"id": "chatcmpl-1", "choices": [], "usage": usage})
    assert tail == [
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": 7,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": 3,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert translator.done() == []
    assert translator.ended


def test_usage_on_the_finish_chunk_is_reported_at_done() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    usage = {"prompt_tokens": 10, "completion_tokens": 2, "prompt_cache_hit_tokens": 6}
    _feed(translator, _chunk({"content": "ok"}), _chunk({}, "stop", usage=usage))
    name, payload = translator.done()[0]
    assert name == "message_delta"
    assert payload["usage"] == {
        "input_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 6,
        "output_tokens": 2,
    }


def test_usage_chunk_before_finish_does_not_end_the_message() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    out = _feed(
        translator,
        _chunk({"content": "a"}),
        {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        _chunk({"content": "b"}),
    )
    assert [p["delta"]["text"] for n, p in out if n == "content_block_delta"] == ["a", "b"]
    assert not translator.ended


def test_stream_without_finish_reason_ends_without_message_delta() -> None:
    """The caller turns such a stream into an error; a clean end would make Claude Code
    append "continue" messages instead of retrying."""
    translator = OpenAIStreamTranslator(MODEL)
    _feed(translator, _chunk({"content": "cut"}))
    assert translator.eof() == []
    assert translator.stop_reason is None


def test_missing_upstream_id_gets_a_generated_message_id() -> None:
    out = OpenAIStreamTranslator(MODEL).feed(
        {"choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    )
    name, payload = out[0]
    assert name == "message_start"
    assert payload["message"]["id"].startswith("msg_")
    assert len(payload["message"]["id"]) > len("msg_")


def test_role_only_and_empty_chunks_produce_only_message_start() -> None:
    out = _feed(
        OpenAIStreamTranslator(MODEL),
        _chunk({"role": "assistant", "content": ""}),
        _chunk({}),
        {"id": "chatcmpl-1"},
        {"id": "chatcmpl-1", "choices": None},
    )
    assert [name for name, _ in out] == ["message_start"]


@pytest.mark.parametrize(
    ("finish", "tools", "stop_reason"),
    [
        ("stop", False, "end_turn"),
        ("stop", True, "tool_use"),
        ("tool_calls", True, "tool_use"),
        ("function_call", True, "tool_use"),
        ("length", False, "max_tokens"),
        ("content_filter", False, "refusal"),
        ("eos", False, "end_turn"),
    ],
)
def test_finish_reason_maps_to_anthropic_stop_reason(
    finish: str, tools: bool, stop_reason: str
) -> None:
    translator = OpenAIStreamTranslator(MODEL)
    delta: dict[str, Any] = {"content": "x"}
    if tools:
        delta = {
            "tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]
        }
    _feed(translator, _chunk(delta), _chunk({}, finish))
    assert translator.stop_reason == stop_reason
    assert translator.done()[0][1]["delta"]["stop_reason"] == stop_reason


# --- blocks --------------------------------------------------------------------------------


def test_openrouter_reasoning_field_becomes_a_thinking_block_with_synthetic_signature() -> None:
    out = _feed(
        OpenAIStreamTranslator(MODEL),
        _chunk({"reasoning": "think", "reasoning_details": [{"type": "reasoning.text"}]}),
        _chunk({"content": "answer"}),
    )
    kinds = [(n, p.get("delta", {}).get("type")) for n, p in out[1:]]
    assert kinds == [
        ("content_block_start", None),
        ("content_block_delta", "thinking_delta"),
        ("content_block_delta", "signature_delta"),
        ("content_block_stop", None),
        ("content_block_start", None),
        ("content_block_delta", "text_delta"),
    ]
    assert out[3][1]["delta"]["signature"].startswith(SYNTHETIC_SIGNATURE_PREFIX)


def test_refusal_text_reaches_the_user_as_text() -> None:
    out = _feed(OpenAIStreamTranslator(MODEL), _chunk({"refusal": "I can't help with that."}))
    assert out[-1][1]["delta"] == {"type": "text_delta", "text": "I can't help with that."}


def test_tool_name_arriving_after_the_id_still_starts_one_block() -> None:
    out = _feed(
        OpenAIStreamTranslator(MODEL),
        _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"arguments": ""}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"name": "Bash", "arguments": '{"a"'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
    )
    assert out[1][1]["content_block"] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "Bash",
        "input": {},
    }
    assert [p["delta"]["partial_json"] for n, p in out[2:]] == ['{"a"', ":1}"]


def test_calls_without_index_are_told_apart_by_id() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    out = _feed(
        translator,
        _chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": '{"x":1}'}}]}),
        _chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": '{"y":2}'}}]}),
        _chunk({}, "tool_calls"),
    )
    starts = [p["content_block"] for n, p in out if n == "content_block_start"]
    assert [(b["id"], b["name"]) for b in starts] == [("a", "f"), ("b", "g")]


def test_legacy_function_call_becomes_a_tool_use_block() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    out = _feed(
        translator,
        _chunk({"function_call": {"name": "lookup", "arguments": '{"q":'}}),
        _chunk({"function_call": {"arguments": '"x"}'}}),
        _chunk({}, "function_call"),
    )
    block = out[1][1]["content_block"]
    assert block["name"] == "lookup"
    assert block["id"].startswith("toolu_")
    assert (
        "".join(p["delta"]["partial_json"] for n, p in out if n == "content_block_delta")
        == '{"q":"x"}'
    )
    assert translator.stop_reason == "tool_use"


def test_arguments_sent_as_an_object_are_serialised() -> None:
    out = _feed(
        OpenAIStreamTranslator(MODEL),
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "c", "function": {"name": "f", "arguments": {"k": [1]}}}
                ]
            }
        ),
    )
    assert out[-1][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"k":[1]}'}


def test_fragments_for_a_closed_call_fail_instead_of_corrupting_its_input() -> None:
    translator = OpenAIStreamTranslator(MODEL)
    _feed(
        translator,
        _chunk(
            {"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}
        ),
        _chunk(
            {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}
        ),
    )
    with pytest.raises(ValueError, match="already closed"):
        translator.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ',"x":1'}}]}))


# --- errors inside a 200 -------------------------------------------------------------------


def test_error_frame_ends_the_stream_with_one_error_event() -> None:
    body = _sse(
        _chunk({"content": "partial"}),
        {"error": {"message": "Internal server error", "type": "server_error", "code": None}},
        _chunk({"content": "never shown"}),
        "[DONE]",
    )
    events = _decode(body)
    assert [e.name for e in events][-1] == "error"
    assert events[-1].json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }


def test_error_frame_before_any_chunk_is_the_only_event() -> None:
    events = _decode(
        _sse({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}})
    )
    assert _pairs(events) == [
        [
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Rate limit reached"},
            },
        ]
    ]


def test_sse_error_event_with_a_bare_payload_is_an_error() -> None:
    events = _decode(b'event: error\ndata: {"message": "model crashed"}\n\n')
    assert _pairs(events) == [
        ["error", {"type": "error", "error": {"type": "api_error", "message": "model crashed"}}]
    ]


def test_openrouter_finish_reason_error_is_an_error_not_an_end_turn() -> None:
    events = _decode(_sse(_chunk({"content": "a"}), _chunk({}, "error"), "[DONE]"))
    assert events[-1].name == "error"
    assert all(e.name != "message_delta" for e in events)


# --- decoder framing -----------------------------------------------------------------------


def test_invalid_json_in_a_data_line_raises_value_error() -> None:
    decoder = OpenAIStreamDecoder(MODEL)
    with pytest.raises(ValueError, match="invalid JSON"):
        decoder.feed(b"data: {not json}\n\n", 0.0)


def test_data_line_that_is_not_an_object_raises_value_error() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        OpenAIStreamDecoder(MODEL).feed(b"data: [1, 2]\n\n", 0.0)


def test_keep_alive_comments_and_empty_data_lines_are_ignored() -> None:
    events = _decode(
        b": keep-alive\n\ndata:\n\n" + _sse(_chunk({"content": "x"}, "stop"), "[DONE]")
    )
    assert [e.name for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_bytes_after_message_stop_are_ignored_even_if_garbage() -> None:
    decoder = OpenAIStreamDecoder(MODEL)
    events = decoder.feed(_sse(_chunk({"content": "x"}, "stop"), "[DONE]"), 0.0)
    assert events[-1].name == "message_stop"
    assert decoder.feed(b"data: {garbage\n\n", 0.0) == []
    assert decoder.close() == []


def test_plain_json_completion_labelled_as_event_stream_is_converted() -> None:
    completion = {
        "id": "chatcmpl-9",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    body = orjson.dumps(completion)
    decoder = OpenAIStreamDecoder(MODEL, "text/event-stream")
    events = decoder.feed(body[:10], 0.0) + decoder.feed(body[10:], 0.0) + decoder.close()
    assert [e.name for e in events][-2:] == ["message_delta", "message_stop"]
    assert events[2].json()["delta"] == {"type": "text_delta", "text": "Hi"}


def test_json_completion_events_arrive_as_soon_as_the_document_is_complete() -> None:
    decoder = OpenAIStreamDecoder(MODEL, "application/json; charset=utf-8")
    body = (FIXTURES / "json_completion.json").read_bytes()
    assert decoder.feed(body[:50], 0.0) == []
    events = decoder.feed(body[50:], 0.0)
    assert events[-1].name == "message_stop"
    assert decoder.close() == []


def test_completion_with_unparseable_arguments_keeps_them_as_a_string() -> None:
    completion = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    events = _decode(orjson.dumps(completion), "application/json")
    args = "".join(
        e.json()["delta"]["partial_json"] for e in events if e.name == "content_block_delta"
    )
    assert json.loads(args) == {"_raw_arguments": "{oops"}


def test_event_stream_mislabelled_as_json_is_still_parsed_as_sse() -> None:
    body = _sse(_chunk({"content": "x"}, "stop"), "[DONE]")
    decoder = OpenAIStreamDecoder(MODEL, "application/json")
    events = decoder.feed(body[:2], 0.0) + decoder.feed(body[2:], 0.0) + decoder.close()
    assert events[-1].name == "message_stop"


def test_truncated_json_answer_raises_value_error_at_close() -> None:
    decoder = OpenAIStreamDecoder(MODEL, "application/json")
    decoder.feed(b'{"id": "x", "choices": [', 0.0)
    with pytest.raises(ValueError, match="JSON answer"):
        decoder.close()


# --- error bodies --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_type_follows_the_status_like_anthropic(status: int, error_type: str) -> None:
    assert map_openai_error(status, b'{"error": {"message": "m"}}')[0] == error_type


def test_openai_error_message_and_code_are_kept_and_keys_redacted() -> None:
    body = (
        b'{"error": {"message": "Incorrect API key provided: sk-proj-abcd****wxyz. See docs.",'
        b' "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}'
    )
    error_type, message = map_openai_error(401, body)
    assert error_type == "authentication_error"
    assert "sk-proj" not in message
    assert message.startswith("Incorrect API key provided: [redacted]. See docs.")
    assert message.endswith("(invalid_api_key)")


def test_vllm_and_fastapi_error_shapes_give_their_message() -> None:
    vllm = (
        b'{"object": "error", "message": "max_tokens is too large",'
        b' "type": "BadRequestError", "code": 400}'
    )
    assert map_openai_error(400, vllm) == ("invalid_request_error", "max_tokens is too large")
    assert map_openai_error(404, b'{"detail": "Not Found"}') == ("not_found_error", "Not Found")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            "HTTP 502 from upstream (non-JSON body)",
        ),
        (b"", "HTTP 502 from upstream (empty body)"),
        (b"\xff\xfe\x00garbage", "HTTP 502 from upstream (non-JSON body)"),
        (b"[1, 2, 3]", "HTTP 502 from upstream"),
        (b'{"error": {"message": 12}}', "HTTP 502 from upstream"),
        (b'{"error": {"message": "  \\n "}}', "HTTP 502 from upstream"),
    ],
)
def test_unreadable_error_bodies_still_get_a_useful_message(body: bytes, message: str) -> None:
    assert map_openai_error(502, body) == ("api_error", message)


def test_long_error_messages_are_cut_to_one_short_line() -> None:
    body = orjson.dumps({"error": {"message": "line one\nline two " + "x" * 5000}})
    _, message = map_openai_error(400, body)
    assert len(message) <= 200
    assert "\n" not in message
    assert message.startswith("line one line two x")
