"""The simulated providers over real sockets: every Script knob has the effect a balancer test,
the demo or the benchmark relies on.

Streams are read with aiohttp's client and parsed with the product's SSE parser and message
accumulator, so "the balancer can read what the mock sends" is checked on the way.
"""

from __future__ import annotations

import asyncio
import io
import signal
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ccbalancer.mock import DEMO_KINDS, DEMO_PROVIDERS, MockServer, Script, run_mock
from ccbalancer.sse import Event, MessageAccumulator, SSEParser

TEXT = Script().text
TOOL_INPUT = {"command": "echo CCB_TOOL_OK", "description": "mock tool call"}
# the event sequence of samples/mock-tool-use-stream.sse, which the real Claude Code accepted
TOOL_USE_SHAPE = [
    "message_start",
    "ping",
    "content_block_start",
    *["content_block_delta"] * 8,
    "content_block_stop",
    "message_delta",
    "message_stop",
]


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with MockServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def ask(text: str = "hi", *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 100, "stream": stream}
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": text}]}]
    body.update(extra)
    return body


def parse(raw: bytes) -> list[Event]:
    return SSEParser().feed(raw)


def names(events: list[Event]) -> list[str]:
    return [event.name for event in events]


def texts(events: list[Event]) -> list[str]:
    return [
        event.json()["delta"]["text"]
        for event in events
        if event.name == "content_block_delta" and event.json()["delta"]["type"] == "text_delta"
    ]


def message(events: list[Event]) -> dict[str, Any]:
    accumulator = MessageAccumulator()
    for event in events:
        accumulator.add(event)
    return accumulator.result()


async def post(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with http.post(url, json=body) as response:
        return response, await response.read()


async def read_until_error(response: aiohttp.ClientResponse) -> tuple[bytes, Exception]:
    """Everything the body delivers before it fails; the failure itself."""
    received = b""
    try:
        async for chunk in response.content.iter_any():
            received += chunk
    except (aiohttp.ClientError, TimeoutError) as exc:
        return received, exc
    raise AssertionError(f"the body ended cleanly after {received!r}")


def messages_url(mock: MockServer, name: str) -> str:
    return mock.anthropic_url(name) + "/v1/messages?beta=true"


def chat_url(mock: MockServer, name: str) -> str:
    return mock.openai_url(name) + "/chat/completions"


# --- Anthropic stream shape -----------------------------------------------------------------


async def test_text_stream_has_the_shape_claude_code_accepts(mock, http):
    response, raw = await post(http, messages_url(mock, "a"), ask())

    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["request-id"].startswith("req_mock_")
    assert "anthropic-ratelimit-requests-remaining" in response.headers
    events = parse(raw)
    words = len(TEXT.split())
    assert names(events) == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(event.json()["type"] == event.name for event in events)
    start = events[0].json()["message"]
    assert start["id"].startswith("msg_mock_")
    assert start["model"] == "claude-test"
    assert start["usage"]["input_tokens"] == 25
    result = message(events)
    assert result["content"] == [{"type": "text", "text": TEXT}]
    assert result["stop_reason"] == "end_turn"
    assert result["usage"]["output_tokens"] > 0


async def test_tool_use_stream_matches_the_accepted_sample(mock, http):
    mock.configure("a", reply="tool_use")
    _, raw = await post(http, messages_url(mock, "a"), ask())

    events = parse(raw)
    assert names(events) == TOOL_USE_SHAPE
    fragments = [
        e.json()["delta"]["partial_json"] for e in events if e.name == "content_block_delta"
    ]
    assert fragments[0] == ""  # as the real API often does
    result = message(events)
    (block,) = result["content"]
    assert block["type"] == "tool_use"
    assert block["name"] == "Bash"
    assert block["id"].startswith("toolu_mock_")
    assert block["input"] == TOOL_INPUT
    assert result["stop_reason"] == "tool_use"


async def test_thinking_tool_stream_has_redacted_thinking_signature_and_tool(mock, http):
    mock.configure("a", reply="thinking_tool", tool_command="ls")
    _, raw = await post(http, messages_url(mock, "a"), ask())

    events = parse(raw)
    result = message(events)
    assert [block["type"] for block in result["content"]] == [
        "redacted_thinking",
        "thinking",
        "tool_use",
    ]
    redacted, thinking, tool = result["content"]
    assert redacted["data"]
    assert thinking["thinking"] and thinking["signature"]
    assert tool["input"]["command"] == "ls"
    thinking_deltas = [
        e.json()["delta"]["type"]
        for e in events
        if e.name == "content_block_delta" and e.json()["index"] == 1
    ]
    assert thinking_deltas[-1] == "signature_delta"
    assert set(thinking_deltas[:-1]) == {"thinking_delta"}


async def test_tool_name_and_input_script_any_tool_call_in_both_formats(mock, http):
    """Claude Code's Read tool (the image round trip in the e2e tests) needs a call to a tool
    other than Bash; a directive can ask for one as well as a configured script."""
    read = {"file_path": "/tmp/pic.png"}
    mock.configure("a", reply="tool_use", tool_name="Read", tool_input=orjson.dumps(read).decode())
    _, raw = await post(http, messages_url(mock, "a"), ask())
    (tool,) = message(parse(raw))["content"]
    assert (tool["name"], tool["input"]) == ("Read", read)

    fields = {"reply": "tool_use", "tool_name": "Glob", "tool_input": '{"pattern": "*"}'}
    directive = f"<<mock {orjson.dumps(fields).decode()}>>"
    _, raw = await post(http, chat_url(mock, "o"), ask(directive))
    calls = [
        call
        for f in chunks(raw)
        if isinstance(f, dict) and f.get("choices")
        for call in f["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "Glob"
    arguments = "".join(call["function"].get("arguments", "") for call in calls)
    assert orjson.loads(arguments) == {"pattern": "*"}

    with pytest.raises(ValueError, match="tool_input must be a JSON object"):
        mock.configure("a", tool_input="[1]")


async def test_tool_then_text_answers_the_tool_result(mock, http):
    mock.configure("a", reply="tool_then_text")
    _, raw = await post(http, messages_url(mock, "a"), ask())
    (tool,) = message(parse(raw))["content"]
    assert tool["type"] == "tool_use"

    follow_up = ask()
    follow_up["messages"] += [
        {"role": "assistant", "content": [tool]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": tool["id"], "content": "CCB_TOOL_OK"}
            ],
        },
    ]
    _, raw = await post(http, messages_url(mock, "a"), follow_up)

    result = message(parse(raw))
    assert result["stop_reason"] == "end_turn"
    assert "CCB_TOOL_OK" in result["content"][0]["text"]


@pytest.mark.parametrize(("events", "expected"), [(2, 2), (1, 1), (40, 40), (0, 0)])
async def test_events_sets_the_number_of_text_deltas(mock, http, events, expected):
    mock.configure("a", events=events)
    _, raw = await post(http, messages_url(mock, "a"), ask())

    pieces = texts(parse(raw))
    assert len(pieces) == expected
    if 0 < events <= len(TEXT.split()):
        assert "".join(pieces) == TEXT
    elif events:
        assert "".join(pieces).startswith(TEXT + " " + TEXT)


async def test_first_event_arrives_while_the_stream_is_still_being_written(mock, http):
    mock.configure("a", delay=0.02, events=20)
    async with http.post(messages_url(mock, "a"), json=ask()) as response:
        parser = SSEParser()
        first: list[Event] = []
        while not first:
            first = parser.feed(await response.content.readany())
        assert first[0].name == "message_start"
        assert mock.active_streams == 1
        rest = parser.feed(await response.read())
    assert len(texts(first + rest)) == 20


async def test_delays_hold_back_headers_first_event_and_each_event(mock, http):
    mock.configure("a", headers_delay=0.2, first_event_delay=0.2, delay=0.05, events=4)
    started = time.monotonic()
    async with http.post(messages_url(mock, "a"), json=ask()) as response:
        headers_at = time.monotonic()
        await response.read()
    finished = time.monotonic()

    assert headers_at - started >= 0.2
    # first_event_delay, then one gap before each frame from the first delta on: of the 9
    # frames for 4 deltas, the preamble (message_start, ping, content_block_start) goes at once
    assert finished - headers_at >= 0.2 + 6 * 0.05


async def test_ping_false_leaves_out_the_ping(mock, http):
    mock.configure("a", ping=False)
    _, raw = await post(http, messages_url(mock, "a"), ask())
    assert names(parse(raw))[:2] == ["message_start", "content_block_start"]


async def test_input_tokens_are_reported_in_message_start(mock, http):
    mock.configure("a", input_tokens=12317)
    _, raw = await post(http, messages_url(mock, "a"), ask())
    assert message(parse(raw))["usage"]["input_tokens"] == 12317


# --- errors before and after the status line ------------------------------------------------


async def test_error_status_has_the_anthropic_envelope_and_retry_after(mock, http):
    mock.configure("a", status=429, retry_after=3, error_message="slow down")
    response, raw = await post(http, messages_url(mock, "a"), ask())

    assert response.status == 429
    assert response.headers["retry-after"] == "3"
    assert response.headers["request-id"].startswith("req_mock_")
    body = orjson.loads(raw)
    assert body["type"] == "error"
    assert body["error"] == {"type": "rate_limit_error", "message": "slow down"}


async def test_error_type_overrides_the_default_for_the_status(mock, http):
    mock.configure("a", status=529, error_type="overloaded_error")
    response, raw = await post(http, messages_url(mock, "a"), ask())
    assert response.status == 529
    assert "retry-after" not in response.headers
    assert orjson.loads(raw)["error"]["type"] == "overloaded_error"


async def test_openai_error_status_has_the_openai_envelope(mock, http):
    mock.configure("o", status=500, retry_after=1.5)
    response, raw = await post(http, chat_url(mock, "o"), ask())

    assert response.status == 500
    assert response.headers["retry-after"] == "1.5"
    error = orjson.loads(raw)["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "mock error"


async def test_error_after_sends_an_error_event_after_n_frames(mock, http):
    mock.configure("a", error_after=3, error_message="Overloaded")
    _, raw = await post(http, messages_url(mock, "a"), ask())  # ends cleanly: no payload error

    events = parse(raw)
    assert names(events) == ["message_start", "ping", "content_block_start", "error"]
    assert events[-1].json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}


async def test_openai_error_after_sends_an_error_chunk_and_no_done(mock, http):
    mock.configure("o", error_after=2, error_type="server_error")
    _, raw = await post(http, chat_url(mock, "o"), ask())

    data = [event.data for event in parse(raw)]
    assert len(data) == 3
    assert orjson.loads(data[-1])["error"]["type"] == "server_error"
    assert b"[DONE]" not in raw


async def test_body_json_error_answers_200_with_a_json_error(mock, http):
    mock.configure("a", body_json_error=True, error_type="overloaded_error")
    response, raw = await post(http, messages_url(mock, "a"), ask())

    assert response.status == 200
    assert response.content_type == "application/json"
    assert orjson.loads(raw)["error"]["type"] == "overloaded_error"


async def test_html_answers_the_status_with_an_html_page(mock, http):
    mock.configure("a", status=502, html=True)
    response, raw = await post(http, messages_url(mock, "a"), ask())

    assert response.status == 502
    assert response.content_type == "text/html"
    assert b"502 Bad Gateway" in raw


async def test_reset_before_headers_closes_without_a_response(mock, http):
    mock.configure("a", reset_before_headers=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, messages_url(mock, "a"), ask())
    assert len(mock.requests("a")) == 1


# --- stalls and cuts ------------------------------------------------------------------------


async def test_stall_sends_nothing_more_and_ends_when_the_client_leaves(mock, http):
    mock.configure("a", stall_after=3)
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    async with http.post(messages_url(mock, "a"), json=ask(), timeout=timeout) as response:
        received, error = await read_until_error(response)
        assert isinstance(error, TimeoutError)
        assert names(parse(received)) == ["message_start", "ping", "content_block_start"]
        assert mock.active_streams == 1  # the connection is still open

    async with asyncio.timeout(5):
        await mock.wait_streams(0)  # the client left: the handler was cancelled


async def test_close_ends_a_stalled_stream(http):
    server = MockServer()
    await server.start()
    server.configure("a", stall_after=1)
    async with http.post(messages_url(server, "a"), json=ask()) as response:
        await response.content.readany()
        async with asyncio.timeout(5):
            await server.close()
            _, error = await read_until_error(response)
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert server.active_streams == 0


async def test_cut_after_drops_the_connection_without_a_terminating_chunk(mock, http):
    mock.configure("a", cut_after=4)
    async with http.post(messages_url(mock, "a"), json=ask()) as response:
        received, error = await read_until_error(response)

    assert isinstance(error, aiohttp.ClientPayloadError)
    parser = SSEParser()
    assert len(parser.feed(received)) == 4
    assert not parser.pending  # cut on a frame boundary


async def test_cut_mid_event_leaves_half_a_frame(mock, http):
    mock.configure("a", cut_after=4, cut_mid_event=True)
    async with http.post(messages_url(mock, "a"), json=ask()) as response:
        received, error = await read_until_error(response)

    assert isinstance(error, aiohttp.ClientPayloadError)
    parser = SSEParser()
    assert len(parser.feed(received)) == 4
    assert parser.pending


@pytest.mark.parametrize(
    ("drop", "last"), [("message_stop", "message_delta"), ("message_delta", "content_block_stop")]
)
async def test_drop_ends_the_stream_cleanly_without_the_final_events(mock, http, drop, last):
    mock.configure("a", drop=drop)
    _, raw = await post(http, messages_url(mock, "a"), ask())
    assert names(parse(raw))[-1] == last


# --- wire quirks ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ending", "eol"), [("crlf", b"\r\n"), ("cr", b"\r")])
async def test_line_endings_change_framing_not_events(mock, http, ending, eol):
    _, plain = await post(http, messages_url(mock, "a"), ask())
    mock.configure("a", line_ending=ending)
    _, raw = await post(http, messages_url(mock, "a"), ask())

    assert raw.count(eol + eol) == plain.count(b"\n\n")
    if ending == "cr":
        assert b"\n" not in raw
    else:
        assert b"\n" not in raw.replace(b"\r\n", b"")
    assert names(parse(raw)) == names(parse(plain))
    assert message(parse(raw))["content"] == message(parse(plain))["content"]


async def test_comments_and_split_data_parse_to_the_same_message(mock, http):
    mock.configure("a", comments=True, split_data=True, reply="thinking_tool")
    _, raw = await post(http, messages_url(mock, "a"), ask())

    assert b": keep-alive" in raw
    frame = raw.split(b"\n\n")[0]
    assert frame.count(b"\ndata: ") > 2  # one event's JSON over several data: lines
    result = message(parse(raw))
    assert [block["type"] for block in result["content"]][-1] == "tool_use"
    assert result["content"][-1]["input"] == TOOL_INPUT


async def test_invalid_json_at_breaks_exactly_that_event(mock, http):
    mock.configure("a", invalid_json_at=3)
    _, raw = await post(http, messages_url(mock, "a"), ask())

    broken = []
    for number, event in enumerate(parse(raw), start=1):
        try:
            event.json()
        except ValueError:
            broken.append(number)
    assert broken == [3]


async def test_stamp_puts_the_send_time_in_each_delta(mock, http):
    mock.configure("a", stamp=True, events=30)
    before = time.monotonic_ns()
    _, raw = await post(http, messages_url(mock, "a"), ask())
    after = time.monotonic_ns()

    stamps = [piece.rstrip(";").split(":") for piece in texts(parse(raw))]
    assert [int(k) for k, _ in stamps] == list(range(30))
    times = [int(ns) for _, ns in stamps]
    assert times == sorted(times)
    assert before <= times[0] and times[-1] <= after


# --- choosing the script: enqueue, directive, fail_rate -------------------------------------


async def test_enqueued_scripts_are_used_once_in_order_before_the_default(mock, http):
    mock.configure("a", text="default")
    mock.enqueue("a", Script(status=429), Script(status=500), Script(text="queued"))
    statuses, replies = [], []
    for _ in range(5):
        response, raw = await post(http, messages_url(mock, "a"), ask())
        statuses.append(response.status)
        replies.append("".join(texts(parse(raw))) if response.status == 200 else None)

    assert statuses == [429, 500, 200, 200, 200]
    assert replies[2:] == ["queued", "default", "default"]


async def test_directive_scripts_each_provider_and_overrides_the_queue(mock, http):
    mock.enqueue("relay-a", Script(text="queued for a"))
    directive = {"events": 1, "providers": {"relay-b": {"status": 529}, "*": {"delay": 0}}}
    prompt = f"go <<mock {orjson.dumps(directive).decode()}>>"

    _, raw = await post(http, messages_url(mock, "relay-a"), ask(prompt))
    response_b, _ = await post(http, messages_url(mock, "relay-b"), ask(prompt))

    assert texts(parse(raw)) == ["queued for a"]  # queue consumed, directive laid over it
    assert response_b.status == 529
    _, raw = await post(http, messages_url(mock, "relay-a"), ask())
    assert "".join(texts(parse(raw))) == TEXT  # one-shot: the next request is default again


async def test_bad_directive_is_a_400_naming_the_field(mock, http):
    mock.enqueue("a", Script(text="kept"))
    response, raw = await post(http, messages_url(mock, "a"), ask('<<mock {"stauts": 500}>>'))

    assert response.status == 400
    assert "stauts" in orjson.loads(raw)["error"]["message"]
    _, raw = await post(http, messages_url(mock, "a"), ask())
    assert texts(parse(raw)) == ["kept"]  # a rejected directive consumes nothing


async def test_configure_rejects_unknown_fields_and_wrong_types(mock):
    with pytest.raises(ValueError, match="unknown"):
        mock.configure("a", delya=1)
    with pytest.raises(ValueError, match="events"):
        mock.configure("a", events="many")
    with pytest.raises(ValueError, match="reply"):
        mock.configure("a", reply="poem")


async def outcomes(mock: MockServer, http: aiohttp.ClientSession, count: int) -> list[str]:
    seen = []
    for _ in range(count):
        async with http.post(messages_url(mock, "flaky"), json=ask()) as response:
            if response.status != 200:
                seen.append(str(response.status))
                continue
            try:
                await response.read()
            except aiohttp.ClientPayloadError:
                seen.append("cut")
            else:
                seen.append("ok")
    return seen


async def test_fail_rate_alternates_529_and_cut_reproducibly(mock, http):
    mock.configure("flaky", fail_rate=1.0)
    assert await outcomes(mock, http, 4) == ["529", "cut", "529", "cut"]

    mock.reset()
    mock.configure("flaky", fail_rate=0.5)
    first = await outcomes(mock, http, 12)
    mock.reset()
    mock.configure("flaky", fail_rate=0.5)
    assert await outcomes(mock, http, 12) == first  # seeded: the same run twice
    assert {"ok", "529", "cut"} <= set(first)


# --- OpenAI format --------------------------------------------------------------------------


def chunks(raw: bytes) -> list[dict[str, Any] | str]:
    return [orjson.loads(e.data) if e.data != b"[DONE]" else "[DONE]" for e in parse(raw)]


async def test_openai_stream_with_tool_calls_and_usage_chunk(mock, http):
    mock.configure("o", reply="tool_use")
    body = ask(stream_options={"include_usage": True}, model="gpt-test")
    response, raw = await post(http, chat_url(mock, "o"), body)

    assert response.status == 200
    assert b"event:" not in raw  # data-only frames
    frames = chunks(raw)
    assert frames[-1] == "[DONE]"
    *deltas, usage = frames[:-1]
    assert isinstance(usage, dict) and usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 25
    choices = [chunk["choices"][0] for chunk in deltas if isinstance(chunk, dict)]
    assert choices[0]["delta"]["role"] == "assistant"
    assert all(chunk["model"] == "gpt-test" for chunk in deltas if isinstance(chunk, dict))
    calls = [c["delta"]["tool_calls"][0] for c in choices if "tool_calls" in c["delta"]]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "Bash"
    assert all("id" not in call for call in calls[1:])
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == TOOL_INPUT
    assert [c["finish_reason"] for c in choices][-1] == "tool_calls"


async def test_openai_stream_without_include_usage_has_no_usage_chunk(mock, http):
    _, raw = await post(http, mock.url + "/o/chat/completions", ask())

    frames = chunks(raw)
    assert frames[-1] == "[DONE]"
    content = [f["choices"][0]["delta"].get("content") for f in frames[:-1] if isinstance(f, dict)]
    assert "".join(c for c in content if c) == TEXT
    assert all(isinstance(f, dict) and f["choices"] and "usage" not in f for f in frames[:-1])
    assert len(mock.requests("o")) == 1  # the /v1-less path is the same provider


async def test_openai_thinking_tool_streams_reasoning_content(mock, http):
    mock.configure("o", reply="thinking_tool")
    _, raw = await post(http, chat_url(mock, "o"), ask())

    deltas = [f["choices"][0]["delta"] for f in chunks(raw) if isinstance(f, dict)]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning.startswith("The user wants")
    first_tool = next(i for i, d in enumerate(deltas) if "tool_calls" in d)
    assert all("tool_calls" not in d for d in deltas[:first_tool])


async def test_openai_tool_then_text_reads_the_tool_message(mock, http):
    mock.configure("o", reply="tool_then_text")
    body = ask()
    body["messages"] += [
        {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "CCB_TOOL_OK"},
    ]
    _, raw = await post(http, chat_url(mock, "o"), body)

    content = "".join(
        f["choices"][0]["delta"].get("content") or "" for f in chunks(raw) if isinstance(f, dict)
    )
    assert "CCB_TOOL_OK" in content


async def test_openai_drop_message_stop_ends_without_done(mock, http):
    mock.configure("o", drop="message_stop")
    _, raw = await post(http, chat_url(mock, "o"), ask())
    frames = chunks(raw)
    assert "[DONE]" not in frames
    last = frames[-1]
    assert isinstance(last, dict) and last["choices"][0]["finish_reason"] == "stop"


# --- non-streaming --------------------------------------------------------------------------


async def test_non_stream_message_has_the_same_content_as_the_stream(mock, http):
    mock.configure("a", reply="thinking_tool")
    _, raw = await post(http, messages_url(mock, "a"), ask())
    response, whole = await post(http, messages_url(mock, "a"), ask(stream=False))

    assert response.content_type == "application/json"
    streamed, answered = message(parse(raw)), orjson.loads(whole)
    for result in (streamed, answered):
        result["content"][-1].pop("id")
    assert answered["content"] == streamed["content"]
    assert answered["id"].startswith("msg_mock_")
    assert answered["stop_reason"] == "tool_use"


async def test_non_stream_chat_completion(mock, http):
    _, raw = await post(http, chat_url(mock, "o"), ask(stream=False))

    completion = orjson.loads(raw)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == TEXT
    assert completion["choices"][0]["finish_reason"] == "stop"


async def test_non_stream_cut_sends_half_a_body(mock, http):
    mock.configure("a", cut_after=0)
    async with http.post(messages_url(mock, "a"), json=ask(stream=False)) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


# --- recording, side routes, control API ----------------------------------------------------


async def test_requests_are_recorded_in_order_with_headers_and_body(mock, http):
    body = ask("first")
    headers = {"X-Api-Key": "sk-test", "anthropic-version": "2023-06-01"}
    async with http.post(messages_url(mock, "a"), json=body, headers=headers) as response:
        await response.read()
    await post(http, messages_url(mock, "a"), ask("second"))

    first, second = mock.requests("a")
    assert first.path == "/a/v1/messages"
    assert first.query == "beta=true"
    assert first.headers["x-api-key"] == "sk-test"
    assert first.headers["anthropic-version"] == "2023-06-01"
    assert first.body == body
    assert orjson.loads(first.raw) == body
    assert second.body is not None and second.body["messages"][0]["content"][0]["text"] == "second"
    assert mock.requests("never-called") == []
    async with asyncio.timeout(5):
        assert len(await mock.wait_requests("a", 2)) == 2


async def test_count_tokens_models_and_root(mock, http):
    async with http.post(
        mock.anthropic_url("a") + "/v1/messages/count_tokens", json=ask(stream=False)
    ) as response:
        assert (await response.json())["input_tokens"] > 0
    async with http.get(mock.anthropic_url("a") + "/v1/models") as response:
        listing = await response.json()
    assert listing["data"] and listing["data"][0]["type"] == "model"
    async with http.head(mock.url + "/") as response:
        assert response.status == 200
    assert [r.path for r in mock.requests("a")] == ["/a/v1/messages/count_tokens", "/a/v1/models"]


async def test_control_api_configures_enqueues_and_reports(mock, http):
    control = mock.url + "/_mock"
    async with http.post(control + "/a/configure", json={"status": 503}) as response:
        assert response.status == 200
    async with http.post(control + "/a/enqueue", json=[{"text": "one"}]) as response:
        assert (await response.json())["enqueued"] == 1
    async with http.post(control + "/a/configure", json={"bogus": 1}) as response:
        assert response.status == 400
        assert "bogus" in (await response.json())["error"]

    _, raw = await post(http, messages_url(mock, "a"), ask())
    assert texts(parse(raw)) == ["one"]
    response, _ = await post(http, messages_url(mock, "a"), ask())
    assert response.status == 503

    async with http.get(control + "/a/requests") as response:
        recorded = await response.json()
    assert recorded["count"] == 2
    assert recorded["requests"][0]["body"]["model"] == "claude-test"
    async with http.get(control + "/stats") as response:
        stats = await response.json()
    assert stats["requests_total"] == 2 and stats["active_streams"] == 0
    async with http.post(control + "/reset") as response:
        assert response.status == 200
    assert mock.requests("a") == []
    response, _ = await post(http, messages_url(mock, "a"), ask())
    assert response.status == 200


async def test_sdk_accepts_every_reply_with_every_framing_quirk(mock):
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.AsyncAnthropic(
        base_url=mock.anthropic_url("sdk"), api_key="sk-test", max_retries=0
    )
    try:
        for reply in ("text", "tool_use", "thinking_tool"):
            mock.configure("sdk", reply=reply, line_ending="crlf", comments=True, split_data=True)
            async with client.messages.stream(
                model="claude-test", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                result = await stream.get_final_message()
            assert result.content, reply
            assert result.stop_reason == ("end_turn" if reply == "text" else "tool_use")
    finally:
        await client.close()


class _Lines(io.StringIO):
    """stdout for run_mock that tells the test when the URLs were printed."""

    def __init__(self) -> None:
        super().__init__()
        self.printed = asyncio.Event()

    def write(self, text: str) -> int:
        self.printed.set()
        return super().write(text)


async def test_run_mock_serves_the_demo_providers_until_stopped(http):
    out, stop = _Lines(), asyncio.Event()
    async with asyncio.timeout(10), asyncio.TaskGroup() as group:
        group.create_task(run_mock("127.0.0.1", 0, stop=stop, out=out))
        await out.printed.wait()
        lines = out.getvalue().splitlines()
        healthy = next(line.split()[-1] for line in lines if line.split()[0] == "healthy")
        openai = next(line.split()[-1] for line in lines if line.split()[0] == "openai")
        _, raw = await post(http, healthy + "/v1/messages", ask())
        assert names(parse(raw))[-1] == "message_stop"
        _, raw = await post(http, openai + "/chat/completions", ask())
        assert raw.endswith(b"data: [DONE]\n\n")
        stop.set()
    assert set(DEMO_PROVIDERS) == set(DEMO_KINDS) == {"healthy", "flaky", "openai"}
    assert DEMO_PROVIDERS["flaky"].fail_rate == 0.5


CLI = """
import argparse, sys
from ccbalancer.mock import add_arguments, run
parser = argparse.ArgumentParser()
add_arguments(parser)
sys.exit(run(parser.parse_args(sys.argv[1:])))
"""


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLI, *args, stdout=PIPE, stderr=PIPE
    )


async def test_mock_command_prints_base_urls_and_exits_0_on_sigterm():
    process = await start_cli("--port", "0")
    assert process.stdout is not None
    async with asyncio.timeout(20):
        first = (await process.stdout.readline()).decode()
        lines = [(await process.stdout.readline()).decode() for _ in DEMO_PROVIDERS]
        # at once: whoever reads the URLs may signal before anything else happens
        process.send_signal(signal.SIGTERM)
        await process.communicate()
    assert "listening on http://127.0.0.1:" in first
    urls = {line.split()[0]: line.split()[-1] for line in lines}
    assert urls["healthy"].endswith("/healthy")
    assert urls["openai"].endswith("/openai/v1")
    assert process.returncode == 0


async def test_mock_command_exits_1_when_the_port_is_taken(mock):
    process = await start_cli("--port", mock.url.rsplit(":", 1)[1])
    async with asyncio.timeout(20):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert b"cannot listen" in stderr
