"""The Anthropic dialect: what goes upstream and how odd answers are read back."""

from __future__ import annotations

import orjson

from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.base import DEFAULT_BODY_OPTIONS, SYNTHETIC_SIGNATURE_PREFIX, BodyOptions
from ccbalancer.sse.accumulate import MessageAccumulator

DIALECT = AnthropicDialect()


def test_body_maps_model_forces_stream_and_drops_only_our_own_fields():
    request = {
        "model": "claude-x",
        "stream": False,
        "provider": "relay",
        "future": [1],
        "messages": [],
    }
    sent = orjson.loads(DIALECT.body(request, "mapped-model", DEFAULT_BODY_OPTIONS))
    assert sent == {"model": "mapped-model", "stream": True, "future": [1], "messages": []}
    assert request["provider"] == "relay"  # the client's parsed body is never mutated


def test_max_tokens_is_capped_at_the_providers_limit_and_only_lowered():
    capped = BodyOptions(max_tokens=8192)
    big = {"model": "m", "max_tokens": 32000, "messages": []}
    assert orjson.loads(DIALECT.body(big, "m", capped))["max_tokens"] == 8192
    assert big["max_tokens"] == 32000  # the client's body is untouched
    small = {"model": "m", "max_tokens": 100, "messages": []}
    assert orjson.loads(DIALECT.body(small, "m", capped))["max_tokens"] == 100
    assert orjson.loads(DIALECT.body(big, "m", DEFAULT_BODY_OPTIONS))["max_tokens"] == 32000


def test_a_cap_keeps_the_thinking_budget_below_max_tokens_or_drops_thinking():
    # Anthropic answers 400 unless 1024 <= budget_tokens < max_tokens.
    request = {
        "model": "m",
        "max_tokens": 32000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "messages": [],
    }
    sent = orjson.loads(DIALECT.body(request, "m", BodyOptions(max_tokens=8192)))
    assert sent["max_tokens"] == 8192
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8191}
    roomy = {**request, "thinking": {"type": "enabled", "budget_tokens": 4000}}
    assert orjson.loads(DIALECT.body(roomy, "m", BodyOptions(max_tokens=8192)))["thinking"] == {
        "type": "enabled",
        "budget_tokens": 4000,
    }
    sent = orjson.loads(DIALECT.body(request, "m", BodyOptions(max_tokens=1024)))
    assert sent["max_tokens"] == 1024 and "thinking" not in sent
    adaptive = {**request, "thinking": {"type": "adaptive"}}
    sent = orjson.loads(DIALECT.body(adaptive, "m", BodyOptions(max_tokens=1024)))
    assert sent["thinking"] == {"type": "adaptive"}  # no budget to fit


def test_synthetic_thinking_from_an_openai_provider_never_reaches_an_anthropic_one():
    real = {"type": "thinking", "thinking": "real", "signature": "EqQBCgIY"}
    fake = {
        "type": "thinking",
        "thinking": "converted",
        "signature": SYNTHETIC_SIGNATURE_PREFIX + "x",
    }
    tool = {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
    request = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [fake, tool]},
            {"role": "assistant", "content": [real, tool]},
        ],
    }
    sent = orjson.loads(DIALECT.body(request, "m", DEFAULT_BODY_OPTIONS))["messages"]
    assert sent[0] == {"role": "user", "content": "hi"}
    assert sent[1]["content"] == [tool]
    assert sent[2]["content"] == [real, tool]


def test_headers_carry_the_provider_credential_and_no_hop_by_hop_or_client_key():
    client = {
        "anthropic-beta": "a,b",
        "x-api-key": "client-key",
        "authorization": "Bearer client-token",
        "connection": "keep-alive, x-private",
        "x-private": "1",
        "te": "trailers",
        "host": "balancer",
        "x-claude-code-session-id": "s1",
    }
    as_key = DIALECT.headers(client, "prov-key", "api_key")
    assert as_key["x-api-key"] == "prov-key" and "authorization" not in as_key
    assert as_key["anthropic-beta"] == "a,b" and as_key["anthropic-version"] == "2023-06-01"
    assert as_key["x-claude-code-session-id"] == "s1"
    assert as_key["accept-encoding"] == "identity"
    for dropped in ("connection", "x-private", "te", "host"):
        assert dropped not in as_key
    as_token = DIALECT.headers(client, "prov-token", "auth_token")
    assert as_token["authorization"] == "Bearer prov-token" and "x-api-key" not in as_token


def test_error_bodies_of_every_shape_give_a_type_and_a_short_message():
    envelope = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    assert DIALECT.error(529, envelope) == ("overloaded_error", "Overloaded")
    assert DIALECT.error(502, b"<html><body>Bad gateway</body></html>") == (
        "api_error",
        "HTTP 502 from upstream (non-JSON body)",
    )
    assert DIALECT.error(429, b'{"error": "slow down"}') == ("rate_limit_error", "slow down")
    assert DIALECT.error(400, b"plain words") == ("invalid_request_error", "plain words")


def test_a_whole_json_message_answer_becomes_the_stream_that_would_have_produced_it():
    content = [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "t", "name": "B", "input": {"a": 1}},
    ]
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": content,
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    decoder = DIALECT.decoder("m", "application/json")
    assert decoder.feed(orjson.dumps(message), 0.0) == []
    events = decoder.close()
    assert events[0].name == "message_start" and events[-1].name == "message_stop"
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.add(event)
    assert accumulator.result()["content"] == message["content"]
    assert accumulator.result()["usage"]["output_tokens"] == 4


def test_a_json_error_object_in_a_200_becomes_an_error_event():
    decoder = DIALECT.decoder("m", "application/json")
    decoder.feed(b'{"error": {"type": "api_error", "message": "quota"}}', 0.0)
    (event,) = decoder.close()
    assert event.name == "error" and event.json()["error"]["message"] == "quota"
