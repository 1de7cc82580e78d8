"""The simulated providers finishing a cut answer, over real sockets.

Continuation requests are built by the product's ``relay.continuation.continuation_body`` from
hand-made ``Cut``s (what a client holds when its stream failed) and sent to a running
MockServer; the streamed answers are parsed with the product's SSE parser and accumulator.
A prefill must finish the canned answer exactly, a resume after saying the tail again, and
what the real API refuses must be refused in its own words.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ccbalancer.dialects.openai.request import to_openai_request
from ccbalancer.mock import MockServer
from ccbalancer.mock.rules import (
    NO_PREFILL,
    NO_TOOL_RESULT,
    OPENAI_PREFILL,
    THINKING_FIRST,
    TRAILING_WHITESPACE,
)
from ccbalancer.relay.continuation import RESUME_PROMPT, Cut, continuation_body
from ccbalancer.sse import Event, MessageAccumulator, SSEParser

OLD, NEW = "claude-haiku-4-5", "claude-opus-4-6"  # takes a prefill / does not
# a double space and a newline to cut after: the whitespace a prefill must not lose
PIECES = ["Hello", " from", " the", "  mock.", "\n", "Second", " line", " here."]
TEXT = "".join(PIECES)
LS = {"command": "ls", "description": "list"}
PWD = {"command": "pwd", "description": "where"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def directive(fields: dict[str, Any]) -> str:
    return f"<<mock {orjson.dumps(fields).decode()}>>"


def ask(fields: dict[str, Any], model: str = OLD, **extra: Any) -> dict[str, Any]:
    prompt = f"{directive(fields)} please answer"
    body = {"model": model, "max_tokens": 100, "stream": True, **extra}
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    return body


def text_then(*inputs: dict[str, Any]) -> dict[str, Any]:
    tools = [{"type": "tool_use", "name": "Bash", "input": i} for i in inputs]
    return {"content": orjson.dumps([{"type": "text", "pieces": PIECES}, *tools]).decode()}


def mid_text(delivered: str, *blocks: dict[str, Any], thinking: bool = False) -> Cut:
    return Cut(blocks=list(blocks), open_kind="text", open_text=delivered, thinking=thinking)


def tool(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_cut_1", "name": "Bash", "input": arguments}


async def send(
    http: aiohttp.ClientSession, mock: MockServer, body: dict[str, Any], name: str = "b"
) -> tuple[int, bytes]:
    url = mock.anthropic_url(name) + "/v1/messages"
    async with http.post(url, json=body) as response:
        return response.status, await response.read()


def events_of(raw: bytes) -> list[Event]:
    return SSEParser().feed(raw)


def finished(raw: bytes) -> dict[str, Any]:
    """The streamed message, after checking the event grammar a client relies on."""
    events = events_of(raw)
    names = [event.name for event in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [e.json()["index"] for e in events if e.name == "content_block_start"]
    stops = [e.json()["index"] for e in events if e.name == "content_block_stop"]
    assert starts == stops == list(range(len(starts)))  # from 0, no gap, no repeat
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.add(event)
    message = accumulator.result()
    assert message["usage"]["output_tokens"] >= 1
    return message


def texts(message: dict[str, Any]) -> str:
    return "".join(block["text"] for block in message["content"] if block["type"] == "text")


# --- prefill: the exact rest --------------------------------------------------------------------


@pytest.mark.parametrize(
    "delivered",
    ["H", "Hello fr", "Hello from the ", "Hello from the  ", "Hello from the  mock.\n", TEXT[:-6]],
)
async def test_prefill_finishes_the_canned_answer_exactly(mock, http, delivered):
    body, stripped = continuation_body(
        ask({"pieces": orjson.dumps(PIECES).decode()}), mid_text(delivered), "prefill"
    )
    assert body["messages"][-1]["content"][-1]["text"] == delivered.rstrip()

    status, raw = await send(http, mock, body)

    assert status == 200
    message = finished(raw)
    assert message["stop_reason"] == "end_turn"
    rest = texts(message)
    assert rest.startswith(stripped)  # the whitespace the balancer trimmed comes back first
    assert delivered.rstrip() + rest == TEXT


async def test_a_stream_cut_on_one_provider_is_finished_by_another(mock, http):
    """The whole way: provider a cuts after the double space, the client holds that much, b
    finishes it from a prefill, and the joined text is the canned answer."""
    fields = {"pieces": orjson.dumps(PIECES).decode(), "providers": {"a": {"cut_after": 7}}}
    original = ask(fields)
    async with http.post(mock.anthropic_url("a") + "/v1/messages", json=original) as response:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in response.content.iter_any():
                received += chunk
    held = "".join(
        e.json()["delta"]["text"] for e in events_of(received) if e.name == "content_block_delta"
    )
    assert held == "Hello from the  mock."

    body, stripped = continuation_body(original, mid_text(held), "prefill")
    status, raw = await send(http, mock, body)

    assert status == 200 and stripped == ""
    assert held + texts(finished(raw)) == TEXT


async def test_the_official_sdk_reads_a_continuation_as_one_message(mock):
    anthropic = pytest.importorskip("anthropic")
    body, _ = continuation_body(ask(text_then(LS)), mid_text("Hello from"), "prefill")
    client = anthropic.AsyncAnthropic(
        base_url=mock.anthropic_url("b"), api_key="sk-test", max_retries=0
    )
    try:
        async with client.messages.stream(
            model=body["model"], max_tokens=100, messages=body["messages"]
        ) as stream:
            result = await stream.get_final_message()
    finally:
        await client.close()
    text, called = result.content
    assert "Hello from" + text.text == TEXT
    assert (called.name, called.input) == ("Bash", LS)
    assert result.stop_reason == "tool_use"


# --- resume: the tail again, then the rest ------------------------------------------------------


async def test_resume_says_the_last_words_again_then_finishes(mock, http):
    delivered = "Hello from the  mock.\nSec"
    body, stripped = continuation_body(
        ask({"pieces": orjson.dumps(PIECES).decode()}, NEW), mid_text(delivered), "resume"
    )
    assert stripped == "" and body["messages"][-1]["content"][-1]["text"] == RESUME_PROMPT

    status, raw = await send(http, mock, body)

    assert status == 200
    rest = texts(finished(raw))
    assert rest == "the  mock.\nSecond line here."  # three words again: "the", "mock.", "Sec"
    overlap = len(delivered) + len(rest) - len(TEXT)
    assert delivered[: len(delivered) - overlap] + rest == TEXT


async def test_resume_repeat_is_a_script_field(mock, http):
    fields = {"pieces": orjson.dumps(PIECES).decode(), "resume_repeat": 0}
    body, _ = continuation_body(ask(fields, NEW), mid_text("Hello fr"), "resume")
    _, raw = await send(http, mock, body)
    assert texts(finished(raw)) == "om the  mock.\nSecond line here."


@pytest.mark.parametrize("mode", ["prefill", "resume"])
async def test_after_the_first_of_two_parallel_tool_calls_the_second_follows(mock, http, mode):
    cut = Cut(blocks=[{"type": "text", "text": TEXT}, tool(LS)])
    body, _ = continuation_body(ask(text_then(LS, PWD)), cut, mode)

    status, raw = await send(http, mock, body)

    assert status == 200
    message = finished(raw)
    assert [(b["type"], b["input"]) for b in message["content"]] == [("tool_use", PWD)]
    assert message["stop_reason"] == "tool_use"


@pytest.mark.parametrize("mode", ["prefill", "resume"])
async def test_after_thinking_the_continuation_has_none(mock, http, mode):
    content = [
        {"type": "thinking", "thinking": "Let me think."},
        {"type": "text", "pieces": PIECES},
    ]
    fields = {"content": orjson.dumps(content).decode()}
    original = ask(fields, thinking={"type": "enabled", "budget_tokens": 1024})
    thought = {"type": "thinking", "thinking": "Let me think.", "signature": "sig"}
    body, _ = continuation_body(original, mid_text("Hello from", thought, thinking=True), mode)
    assert body["thinking"] == {"type": "disabled"}

    status, raw = await send(http, mock, body)

    assert status == 200
    message = finished(raw)
    assert [block["type"] for block in message["content"]] == ["text"]
    assert texts(message).endswith(" the  mock.\nSecond line here.")


async def test_the_continuation_obeys_the_original_prompts_directive_and_can_fail_too(mock, http):
    """The resume turn holds no directive: the prompt's applies, faults included."""
    mock.configure("b", text="what b says unscripted")
    fields = {"pieces": orjson.dumps(PIECES).decode(), "providers": {"b": {"cut_after": 5}}}
    body, _ = continuation_body(ask(fields, NEW), mid_text("Hello from"), "resume")

    async with http.post(mock.anthropic_url("b") + "/v1/messages", json=body) as response:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in response.content.iter_any():
                received += chunk

    events = events_of(received)
    assert [e.name for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
    ]
    assert [e.json()["delta"]["text"] for e in events[3:]] == ["Hello", " from"]


async def test_a_non_streaming_continuation_is_the_rest_as_one_message(mock, http):
    body, _ = continuation_body(ask(text_then(LS)), mid_text("Hello from the  mock."), "resume")
    body["stream"] = False

    status, raw = await send(http, mock, body)

    assert status == 200
    message = orjson.loads(raw)
    text, called = message["content"]
    assert text["text"] == "from the  mock.\nSecond line here."
    assert called["input"] == LS
    assert message["stop_reason"] == "tool_use"


# --- refusals, in the API's envelope and words --------------------------------------------------


def thinking_left_on(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}


def trailing_space(body: dict[str, Any]) -> dict[str, Any]:
    last = body["messages"][-1]
    last["content"][-1]["text"] += " "
    return body


def result_dropped(body: dict[str, Any]) -> dict[str, Any]:
    body["messages"][-1]["content"] = [{"type": "text", "text": RESUME_PROMPT}]
    return body


PIECES_FIELD = {"pieces": orjson.dumps(PIECES).decode()}
THINKING = THINKING_FIRST.format(index=1, found="text")
UNANSWERED = NO_TOOL_RESULT.format(index=1, ids="toolu_cut_1")
MISMATCH = "the continuation does not match what this provider would have said"


@pytest.mark.parametrize(
    ("model", "cut", "mode", "spoil", "message"),
    [
        (NEW, mid_text("Hello"), "prefill", None, NO_PREFILL),
        ("claude-sonnet-5", mid_text("Hello"), "prefill", None, NO_PREFILL),
        (OLD, mid_text("Hello"), "prefill", thinking_left_on, THINKING),
        (OLD, mid_text("Hello"), "prefill", trailing_space, TRAILING_WHITESPACE),
        (OLD, Cut(blocks=[tool(LS)]), "resume", result_dropped, UNANSWERED),
        (OLD, mid_text("Hello form"), "prefill", None, MISMATCH),
        (NEW, mid_text("Goodbye"), "resume", None, MISMATCH),
    ],
)  # fmt: skip
async def test_what_the_real_api_refuses_is_a_400_in_its_words(
    mock, http, model, cut, mode, spoil, message
):
    body, _ = continuation_body(ask(PIECES_FIELD, model), cut, mode)
    if spoil is not None:
        body = spoil(body)

    status, raw = await send(http, mock, body)

    assert status == 400
    error = orjson.loads(raw)
    assert error["type"] == "error" and error["request_id"].startswith("req_mock_")
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(message)


# --- the OpenAI wire format ---------------------------------------------------------------------


def chat_deltas(raw: bytes) -> list[dict[str, Any]]:
    chunks = [orjson.loads(e.data) for e in events_of(raw) if e.data != b"[DONE]"]
    return [chunk["choices"][0] for chunk in chunks if chunk.get("choices")]


async def test_openai_resume_finishes_the_answer_and_its_tool_calls(mock, http):
    cut = mid_text("Hello from the  mock.\nSecond")
    body, _ = continuation_body(ask(text_then(LS, PWD)), cut, "resume")
    async with http.post(
        mock.openai_url("o") + "/chat/completions", json=to_openai_request(body, "gpt-test")
    ) as response:
        status, raw = response.status, await response.read()

    assert status == 200 and raw.endswith(b"data: [DONE]\n\n")
    choices = chat_deltas(raw)
    content = "".join(c["delta"].get("content") or "" for c in choices)
    assert content == "the  mock.\nSecond line here."
    calls = [call for c in choices for call in c["delta"].get("tool_calls", [])]
    arguments: dict[int, str] = {}
    for call in calls:
        arguments[call["index"]] = arguments.get(call["index"], "") + call["function"]["arguments"]
    assert [orjson.loads(arguments[i]) for i in sorted(arguments)] == [LS, PWD]
    assert choices[-1]["finish_reason"] == "tool_calls"


async def test_openai_refuses_a_prefill_in_its_own_envelope(mock, http):
    body, _ = continuation_body(ask(PIECES_FIELD), mid_text("Hello"), "prefill")
    async with http.post(
        mock.openai_url("o") + "/chat/completions", json=to_openai_request(body, "gpt-test")
    ) as response:
        status, error = response.status, await response.json()
    assert status == 400
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"] == OPENAI_PREFILL
