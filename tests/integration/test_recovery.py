"""Mid-stream recovery through real sockets: provider ``a`` is cut after the client already has
part of the message; provider ``b`` (the simulated provider, which continues a canned answer the
way the real API does and refuses what it refuses) finishes it. The client must see one valid
message whose text is exactly the canned answer, read by the official SDK, with nothing sent
twice and nothing invented."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import orjson
import pytest

from tests.conftest import config_text, msg, read_events, until

PIECES = ["Hello", " from", " the", "  mock.", "\n\n", "Second", " line", " here."]
TEXT = "".join(PIECES)
LS = {"command": "ls", "description": "list"}
OLD, NEW = "claude-opus-4-5", "claude-sonnet-4-6"  # before / after prefill went away
FAST = "timeouts: {first_event_timeout: 2, streaming: {read_timeout: 1}}\n"


def ask(fields: dict[str, Any], *, model: str = OLD, stream: bool = True) -> dict[str, Any]:
    """A request whose prompt scripts the providers: ``fields`` as a mock directive."""
    return msg(f"go <<mock {orjson.dumps(fields).decode()}>>", model=model, stream=stream)


def cut_a(after: int, **extra: Any) -> dict[str, Any]:
    """Provider a cuts after ``after`` frames (message_start counts); b answers whole."""
    return {"pieces": orjson.dumps(PIECES).decode(), **extra,
            "providers": {"a": {"cut_after": after}}}  # fmt: skip


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(
        p["delta"].get("text", "")
        for name, p in events
        if name == "content_block_delta" and p["delta"].get("type") == "text_delta"
    )


def assert_one_valid_message(events: list[tuple[str, dict[str, Any]]]) -> None:
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1, names
    assert names[-2:] == ["message_delta", "message_stop"], names
    assert "error" not in names and names.count("message_delta") == 1
    expected, open_index = 0, None
    for name, payload in events:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == expected
            open_index, expected = expected, expected + 1
        elif name in ("content_block_delta", "content_block_stop"):
            assert payload["index"] == open_index
            if name == "content_block_stop":
                open_index = None


async def balancer(balancer_factory, mock, extra: str = "", **b_options: str):
    provider_extra = {"b": "".join(f", {k}: {v}" for k, v in b_options.items())}
    text = config_text(mock, ["a", "b"], settings=FAST + extra, provider_extra=provider_extra)
    return await balancer_factory(text)


@pytest.mark.parametrize(
    ("after", "where"),
    # frames: message_start, ping, the text block's start, then one per piece
    [(3, "empty first block"), (4, "first delta"), (6, "mid-text"),
     (7, "after a double space"), (8, "after a blank line"), (9, "before a word")],
)  # fmt: skip
@pytest.mark.parametrize("continuation", ["prefill", "resume"])
async def test_a_cut_text_is_finished_exactly(
    after, where, continuation, mock, balancer_factory
) -> None:
    b = await balancer(balancer_factory, mock, continuation=continuation)
    resp = await b.post(ask(cut_a(after)))
    events = await read_events(resp)
    assert resp.status == 200 and resp.headers["x-provider-used"] == "a"
    assert_one_valid_message(events)
    assert text_of(events) == TEXT  # every byte from a model, none twice
    assert len(mock.requests("b")) == 1
    continued = mock.requests("b")[0].body
    prefilled = continuation == "prefill" and after > 3  # nothing delivered: asked afresh
    assert continued["messages"][-1]["role"] == ("assistant" if prefilled else "user")


async def test_the_sdk_reads_one_message_and_the_record_says_recovered(
    mock, balancer_factory
) -> None:
    b = await balancer(balancer_factory, mock)
    async with (
        anthropic.AsyncAnthropic(base_url=b.url, api_key="sk-client-1", max_retries=0) as client,
        client.messages.stream(
            model=OLD, max_tokens=100, messages=ask(cut_a(5))["messages"]
        ) as stream,
    ):
        seen = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert "".join(seen) == TEXT and message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 25  # the first provider's
    row = b.runtime.recent.rows()[0]
    assert row["outcome"] == "recovered"
    timing = b.runtime.recent.detail(row["request_id"])["timing"]
    # every event the client got has its arrival time, the continuation's rewritten ones too
    assert timing["gaps"] == timing["events"] - 1
    assert row["tried"].startswith("a:mid_stream(") and ", b:continued" in row["tried"]
    metrics = b.runtime.metrics.registry.get_sample_value
    assert (
        metrics(
            "ccbalancer_recoveries_total",
            {"provider": "b", "mode": "prefill", "outcome": "continued"},
        )
        == 1
    )
    assert metrics("ccbalancer_requests_total", {"provider": "a", "outcome": "recovered"}) == 1


async def test_a_model_that_refuses_prefill_is_resumed(mock, balancer_factory) -> None:
    """auto picks resume for 4.6+ (the API answers 400 to a prefill there)."""
    b = await balancer(balancer_factory, mock)
    events = await read_events(await b.post(ask(cut_a(5), model=NEW)))
    assert_one_valid_message(events)
    assert text_of(events) == TEXT  # the tail the model repeated was taken out
    assert mock.requests("b")[0].body["messages"][-1]["role"] == "user"


async def test_a_non_streaming_client_gets_the_complete_message(mock, balancer_factory) -> None:
    b = await balancer(balancer_factory, mock)
    resp = await b.post(ask(cut_a(5), stream=False))
    message = await resp.json()
    assert resp.status == 200 and message["content"][0]["text"] == TEXT
    assert message["stop_reason"] == "end_turn"


async def test_followers_get_the_recovered_stream(mock, balancer_factory) -> None:
    b = await balancer(
        balancer_factory,
        mock,
        extra="deduplication: {enabled: true}\n",
    )
    body = ask({**cut_a(5), "delay": 0.05})
    leader = asyncio.get_running_loop().create_task(b.post(body))
    await until(lambda: len(mock.requests("a")) == 1)
    followers = [await b.post(body) for _ in range(2)]
    results = [await read_events(r) for r in [await leader, *followers]]
    for events in results:
        assert_one_valid_message(events)
        assert text_of(events) == TEXT
    assert len(mock.requests("a")) == 1 and len(mock.requests("b")) == 1


async def test_after_a_tool_call_the_continuation_follows_it(mock, balancer_factory) -> None:
    content = [{"type": "text", "text": "I will look.", "pieces": ["I will", " look."]},
               {"type": "tool_use", "name": "Bash", "input": LS},
               {"type": "tool_use", "name": "Bash", "input": {"command": "pwd"}}]  # fmt: skip
    # frames: start, ping, text start, 2 deltas, text stop, tool start, 5 fragments, its stop:
    # the cut falls after the first tool call is complete
    fields = {"content": orjson.dumps(content).decode(), "providers": {"a": {"cut_after": 13}}}
    b = await balancer(balancer_factory, mock)
    async with (
        anthropic.AsyncAnthropic(base_url=b.url, api_key="sk-client-1", max_retries=0) as client,
        client.messages.stream(
            model=OLD, max_tokens=100, messages=ask(fields)["messages"]
        ) as stream,
    ):
        message = await stream.get_final_message()
    tools = [block.input for block in message.content if block.type == "tool_use"]
    assert message.content[0].text == "I will look." and tools == [LS, {"command": "pwd"}]
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("hold", [False, True])
async def test_a_cut_inside_a_tool_calls_input(hold, mock, balancer_factory) -> None:
    """Off: another model cannot finish someone else's JSON, so the stream ends in an error.
    On: the tool call was never sent, and the continuation makes it whole."""
    content = [{"type": "text", "text": "Listing.", "pieces": ["Listing."]},
               {"type": "tool_use", "name": "Bash", "input": LS}]  # fmt: skip
    fields = {"content": orjson.dumps(content).decode(), "providers": {"a": {"cut_after": 6}}}
    b = await balancer(
        balancer_factory, mock, extra=f"recovery: {{hold_tool_input: {str(hold).lower()}}}\n"
    )
    events = await read_events(await b.post(ask(fields)))
    if not hold:
        assert events[-1][0] == "error" and mock.requests("b") == []
        assert "not recovered" in b.runtime.recent.rows()[0]["error"]
        return
    assert_one_valid_message(events)
    json = "".join(p["delta"].get("partial_json", "") for _, p in events if "delta" in p)
    assert orjson.loads(json) == LS


async def test_after_a_thinking_block_text_is_finished_and_thinking_stays_the_first(
    mock, balancer_factory
) -> None:
    content = [{"type": "thinking", "thinking": "Hmm, let me see."},
               {"type": "text", "text": TEXT, "pieces": PIECES}]  # fmt: skip
    fields = {"content": orjson.dumps(content).decode(), "providers": {"a": {"cut_after": 9}}}
    b = await balancer(balancer_factory, mock)
    events = await read_events(await b.post(ask(fields)))
    assert_one_valid_message(events)
    kinds = [p["content_block"]["type"] for n, p in events if n == "content_block_start"]
    assert kinds == ["thinking", "text"] and text_of(events) == TEXT
    continued = mock.requests("b")[0].body
    assert continued.get("thinking", {"type": "disabled"}) == {"type": "disabled"}
    assert all(
        block.get("type") != "thinking"
        for m in continued["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
    )


@pytest.mark.parametrize(
    "fault",
    [
        {"error_after": 5},
        {"cut_after": 5, "cut_mid_event": True},
        {"invalid_json_at": 6},
        {"stall_after": 5},
    ],
    ids=["error event", "torn frame", "invalid json", "stall"],
)
async def test_every_kind_of_cut_is_recovered(fault, mock, balancer_factory) -> None:
    fields = {"pieces": orjson.dumps(PIECES).decode(), "providers": {"a": fault}}
    b = await balancer(balancer_factory, mock)
    events = await read_events(await b.post(ask(fields)))
    assert_one_valid_message(events)
    assert text_of(events) == TEXT
    assert b.runtime.health.get("a").failures == 1  # the cut still counts against a


async def test_a_continuation_refused_with_a_4xx_ends_the_stream_and_is_not_held_against_b(
    mock, balancer_factory
) -> None:
    """b is told to prefill though its model refuses that: its 400 ends the stream."""
    b = await balancer(balancer_factory, mock, continuation="prefill")
    events = await read_events(await b.post(ask(cut_a(5), model=NEW)))
    assert events[-1][0] == "error"
    assert b.runtime.health.get("b").failures == 0
    row = b.runtime.recent.rows()[0]
    assert row["outcome"] == "mid_stream_error" and "b:client_error" in row["tried"]
