"""Mid-stream recovery as playbooks: an answer cut at every event position, finished by another
provider, over the in-memory transport (no sockets, no sleeps).

Provider ``a`` streams a known answer and is cut; provider ``b`` plays a model that continues
from the continuation request it receives (``Continuer`` below: prefill continues exactly,
resume repeats the last words first, as models do). Each case checks what the client got: one
valid event stream (one message_start, contiguous indices, one message_delta and
message_stop), the same content as the uncut answer, nothing sent twice.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from ccbalancer.balance import Planner
from ccbalancer.config import parse_config
from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.openai import OpenAIDialect
from ccbalancer.errors import UpstreamConnectError
from ccbalancer.relay.call import Call
from ccbalancer.relay.continuation import PENDING_TOOL, RESUME_PROMPT
from ccbalancer.relay.relay import Relay
from ccbalancer.relay.transport import MemoryTransport
from ccbalancer.sharing.broadcast import Broadcast, State
from ccbalancer.sse.accumulate import MessageAccumulator
from ccbalancer.sse.event import Event
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry
from tests.conftest import Clock, parse_frames, settle

MODEL = "claude-sonnet-4-5"  # a model that takes a prefill


def frame(kind: str, **fields: Any) -> bytes:
    return b"event: %b\ndata: %b\n\n" % (kind.encode(), orjson.dumps({"type": kind, **fields}))


def start(output: int = 1) -> bytes:
    message = {"id": "msg_a", "type": "message", "role": "assistant", "model": MODEL,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 100, "cache_read_input_tokens": 40,
                         "output_tokens": output}}  # fmt: skip
    return frame("message_start", message=message)


def text_block(index: int, pieces: list[str]) -> list[bytes]:
    return [
        frame("content_block_start", index=index, content_block={"type": "text", "text": ""}),
        *[
            frame("content_block_delta", index=index, delta={"type": "text_delta", "text": p})
            for p in pieces
        ],
        frame("content_block_stop", index=index),
    ]


def thinking_block(index: int, pieces: list[str]) -> list[bytes]:
    block = {"type": "thinking", "thinking": "", "signature": ""}
    return [
        frame("content_block_start", index=index, content_block=block),
        *[
            frame(
                "content_block_delta", index=index, delta={"type": "thinking_delta", "thinking": p}
            )
            for p in pieces
        ],
        frame(
            "content_block_delta",
            index=index,
            delta={"type": "signature_delta", "signature": "sig-of-a"},
        ),
        frame("content_block_stop", index=index),
    ]


def tool_block(index: int, tool_id: str, name: str, json_pieces: list[str]) -> list[bytes]:
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    return [
        frame("content_block_start", index=index, content_block=block),
        *[
            frame(
                "content_block_delta",
                index=index,
                delta={"type": "input_json_delta", "partial_json": p},
            )
            for p in json_pieces
        ],
        frame("content_block_stop", index=index),
    ]


def ending(reason: str, output: int) -> list[bytes]:
    return [
        frame(
            "message_delta",
            delta={"stop_reason": reason, "stop_sequence": None},
            usage={"output_tokens": output},
        ),
        frame("message_stop"),
    ]


WORDS = ["Hello", " world,", " how", " are\n\n", "you", " today?  ", "Fine."]
ANSWERS = {
    "text": [start(), *text_block(0, WORDS), *ending("end_turn", 12)],
    "thinking_text": [
        start(),
        *thinking_block(0, ["Let me", " think."]),
        *text_block(1, WORDS),
        *ending("end_turn", 20),
    ],
    "text_tool": [
        start(),
        *text_block(0, ["I will", " list it."]),
        *tool_block(1, "toolu_1", "Bash", ['{"comm', 'and": "ls"}']),
        *ending("tool_use", 30),
    ],
    "two_tools": [
        start(),
        *tool_block(0, "toolu_1", "Bash", ['{"command"', ': "ls"}']),
        *tool_block(1, "toolu_2", "Read", ['{"file_path": ', '"/tmp/x"}']),
        *ending("tool_use", 40),
    ],
}


def content_of(frames: list[bytes]) -> list[dict[str, Any]]:
    """What the SDK would accumulate from these frames."""
    accumulator = MessageAccumulator()
    for name, payload in parse_frames(b"".join(frames)):
        accumulator.add(Event(name, orjson.dumps(payload), b""))
    return accumulator.result()["content"]


class Continuer:
    """A model that knows the whole answer and continues it from what it is shown."""

    def __init__(self, answer: list[bytes], repeat_words: int = 2) -> None:
        self.blocks = [b for b in content_of(answer) if b["type"] != "thinking"]
        self.stop_reason = parse_frames(answer[-2])[0][1]["delta"]["stop_reason"]
        self.repeat_words = repeat_words
        self.repeated = ""  # what a resume said again of the delivered text

    def answer(self, body: dict[str, Any]) -> bytes:
        assert "thinking" not in body or body["thinking"] == {"type": "disabled"}
        messages = body["messages"]
        last = messages[-1]
        if last["role"] == "assistant":
            mode, delivered = "prefill", last["content"]
        elif (
            len(messages) > 1
            and messages[-2]["role"] == "assistant"
            and any(p.get("text") == RESUME_PROMPT for p in last["content"])
        ):
            mode, delivered = "resume", messages[-2]["content"]
            answered = [p["tool_use_id"] for p in last["content"] if p["type"] == "tool_result"]
            assert answered == [b["id"] for b in delivered if b["type"] == "tool_use"]
            assert all(p["content"] == PENDING_TOOL for p in last["content"][:-1])
        else:
            mode, delivered = "fresh", []
        rest = list(self.blocks)
        out: list[bytes] = [start(output=1)]
        index = 0
        for given in delivered:
            whole = rest.pop(0)
            assert whole["type"] == given["type"]
            if given["type"] == "tool_use":
                assert (whole["id"], whole["input"]) == (given["id"], given["input"])
                continue
            if whole["text"] == given["text"]:
                continue
            if mode == "prefill":
                assert not given["text"].endswith((" ", "\n")), "a prefill ends in whitespace"
            assert whole["text"].startswith(given["text"])
            tail = whole["text"][len(given["text"]) :]
            if mode == "resume":  # repeat the last words of what was delivered
                words = re.findall(r"\S+\s*", given["text"])
                self.repeated = "".join(words[-self.repeat_words :])
                tail = self.repeated + tail
            out += text_block(index, [tail[i : i + 5] for i in range(0, len(tail), 5)])
            index += 1
        for block in rest:
            if block["type"] == "text":
                out += text_block(index, [block["text"]])
            else:
                args = orjson.dumps(block["input"]).decode()
                out += tool_block(index, block["id"], block["name"], [args])
            index += 1
        return b"".join(out + ending(self.stop_reason, 7))


def config(mode: str, hold: bool) -> str:
    return f"""
providers:
  - {{name: a, type: anthropic, base_url: "http://a.invalid", auth_value: "ka-0123456789"}}
  - {{name: b, type: anthropic, base_url: "http://b.invalid", auth_value: "kb-0123456789",
      continuation: {mode}}}
model_routes:
  "*": [{{provider: a}}, {{provider: b}}]
settings:
  recovery: {{hold_tool_input: {str(hold).lower()}}}
"""


async def recovered(
    answer: list[bytes], at: int, mode: str, hold: bool = False
) -> tuple[Broadcast, Continuer]:
    """Stream ``answer[:at]`` from ``a``, cut it, let ``b`` continue; the finished broadcast."""
    cfg = parse_config(config(mode, hold))
    clock = Clock()
    health = HealthRegistry(HealthPolicy.from_settings(cfg.settings), clock)
    transport = MemoryTransport()
    relay = Relay(
        transport, Planner(health), health,
        {"anthropic": AnthropicDialect(), "openai": OpenAIDialect()}, scheduler=clock,
    )  # fmt: skip
    body = {"model": MODEL, "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    call = Call(cfg, body, MODEL, "", {}, "", "s1", None, "req_1", raw=orjson.dumps(body))
    broadcast = Broadcast(None, 1 << 20, 0.0)
    task = asyncio.get_running_loop().create_task(relay.produce(call, broadcast))
    a = await transport.opened()
    a.send(b"".join(answer[:at]))
    await settle()
    a.cut(UpstreamConnectError("a", "connection closed mid-response"))
    await settle()
    continuer = Continuer(answer)
    if len(transport.sent) == 2:
        b = transport.calls[1]
        b.send(continuer.answer(orjson.loads(transport.sent[1].body)))
        b.end()
    async with asyncio.timeout(5):
        await task
    return broadcast, continuer


def assert_one_valid_message(events: list[tuple[str, dict[str, Any]]]) -> None:
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_delta") == 1 and names.count("message_stop") == 1
    expected, open_index = 0, None
    for name, payload in events:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == expected
            open_index, expected = expected, expected + 1
        elif name == "content_block_delta":
            assert payload["index"] == open_index
        elif name == "content_block_stop":
            assert payload["index"] == open_index
            open_index = None
    assert open_index is None


def client_events(broadcast: Broadcast) -> list[tuple[str, dict[str, Any]]]:
    return parse_frames(b"".join(broadcast.get(i).raw for i in range(broadcast.end)))


def cut_positions(answer: list[bytes]) -> list[int]:
    """Every position from just after the first content block starts to just before
    message_delta: where a cut leaves the client with a committed, unfinished message."""
    first = next(i for i, f in enumerate(answer) if f.startswith(b"event: content_block_start"))
    return list(range(first + 1, len(answer) - 2))


def _kind_open(answer: list[bytes], at: int) -> str | None:
    """The kind of block open after ``answer[:at]`` (None at a block boundary)."""
    kind = None
    for raw in answer[:at]:
        name, payload = parse_frames(raw)[0]
        if name == "content_block_start":
            kind = payload["content_block"]["type"]
        elif name == "content_block_stop":
            kind = None
    return kind


def _last_done(answer: list[bytes], at: int) -> str | None:
    """The kind of the last block completed within ``answer[:at]``."""
    kind, done = None, None
    for raw in answer[:at]:
        name, payload = parse_frames(raw)[0]
        if name == "content_block_start":
            kind = payload["content_block"]["type"]
        elif name == "content_block_stop":
            done = kind
    return done


CASES = [
    (shape, at, mode)
    for shape, answer in ANSWERS.items()
    for at in cut_positions(answer)
    for mode in ("prefill", "resume")
]


@pytest.mark.parametrize(("shape", "at", "mode"), CASES)
async def test_a_cut_at_any_event_is_finished_into_one_valid_message(shape, at, mode) -> None:
    answer = ANSWERS[shape]
    open_kind = _kind_open(answer, at)
    broadcast, continuer = await recovered(answer, at, mode)
    events = client_events(broadcast)
    if open_kind in ("thinking", "tool_use"):
        # a thinking block cannot be closed without its signature, a tool call's input cannot
        # be finished by someone else (hold_tool_input is off): the stream ends with an error
        assert broadcast.state is State.FAILED and events[-1][0] == "error"
        assert "not recovered" not in events[-1][1]["error"]["message"]
        return
    assert broadcast.state is State.FINISHED, events[-1]
    assert_one_valid_message(events)
    got = content_of([b"event: %b\ndata: %b\n\n" % (n.encode(), orjson.dumps(p))
                      for n, p in events])  # fmt: skip
    assert got == content_of(answer)  # the whole answer: nothing lost, nothing twice
    outcome = broadcast.outcome
    assert outcome.recovered and [a.outcome for a in outcome.attempts] == [
        "mid_stream",
        "continued",
    ]
    # a prefill would end in a tool call nobody answered: such a cut goes as a resume
    ends_in_tool = open_kind is None and _last_done(answer, at) == "tool_use"
    assert outcome.attempts[1].mode == ("resume" if ends_in_tool else mode)
    final = events[-2][1]
    assert final["usage"]["input_tokens"] == 100  # the first provider's input...
    assert final["usage"]["cache_read_input_tokens"] == 40
    # ...and both providers' output: b's 7, plus a's estimated from what it delivered (about
    # four characters a token: text, thinking and tool input)
    delivered = sum(
        len(
            p["delta"].get("text")
            or p["delta"].get("thinking")
            or p["delta"].get("partial_json", "")
        )
        for n, p in parse_frames(b"".join(answer[:at]))
        if n == "content_block_delta"
    )
    assert abs(final["usage"]["output_tokens"] - (7 + delivered / 4)) <= 3
    assert outcome.attempts[1].overlap == len(continuer.repeated)  # said again: taken out


@pytest.mark.parametrize("shape", ["text_tool", "two_tools"])
@pytest.mark.parametrize("mode", ["prefill", "resume"])
async def test_with_held_tool_input_a_cut_inside_a_tool_call_is_redone(shape, mode) -> None:
    answer = ANSWERS[shape]
    inside = [at for at in cut_positions(answer) if _kind_open(answer, at) == "tool_use"]
    assert inside
    for at in inside:
        broadcast, _ = await recovered(answer, at, mode, hold=True)
        events = client_events(broadcast)
        assert broadcast.state is State.FINISHED, events[-1]
        assert_one_valid_message(events)
        got = content_of([b"event: %b\ndata: %b\n\n" % (n.encode(), orjson.dumps(p))
                          for n, p in events])  # fmt: skip
        assert got == content_of(answer)


async def _cut_answer(
    between: Any = None,
) -> tuple[Broadcast, Planner, MemoryTransport, asyncio.Task[None]]:
    """``a`` streams half of the text answer and is cut; ``between(planner)`` runs just
    before the cut. The transport, for the test to answer ``b``."""
    cfg = parse_config(config("prefill", False))
    clock = Clock()
    health = HealthRegistry(HealthPolicy.from_settings(cfg.settings), clock)
    planner = Planner(health)
    transport = MemoryTransport()
    relay = Relay(transport, planner, health, {"anthropic": AnthropicDialect()}, scheduler=clock)
    body = {"model": MODEL, "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}
    call = Call(cfg, body, MODEL, "", {}, "", "s1", None, "req_1", raw=orjson.dumps(body))
    broadcast = Broadcast(None, 1 << 20, 0.0)
    task = asyncio.get_running_loop().create_task(relay.produce(call, broadcast))
    a = await transport.opened()
    answer = ANSWERS["text"]
    a.send(b"".join(answer[:5]))
    await settle()
    if between is not None:
        between(planner)
    a.cut(UpstreamConnectError("a", "connection closed mid-response"))
    await settle()
    return broadcast, planner, transport, task


async def test_after_a_recovery_the_session_sticks_to_the_provider_that_finished() -> None:
    """The client's next turn carries the recovered answer: it goes where it was finished."""
    broadcast, planner, transport, task = await _cut_answer()
    b = transport.calls[1]
    b.send(Continuer(ANSWERS["text"]).answer(orjson.loads(transport.sent[1].body)))
    b.end()
    async with asyncio.timeout(5):
        await task
    assert broadcast.outcome.recovered
    assert planner.sticky.get("*", "s1", planner.health.clock()) == "b"


async def test_a_recovery_never_goes_to_a_provider_that_ran_out_of_room() -> None:
    """b said it is out of room (a 429 while a was streaming): the recovery does not send it
    the continuation; the answer ends with a proper error saying why."""

    def exhaust(planner: Planner) -> None:
        planner.ratelimits.observe("b", 429, [("retry-after", "30")])

    broadcast, _, transport, task = await _cut_answer(exhaust)
    async with asyncio.timeout(5):
        await task
    assert len(transport.sent) == 1  # nothing sent to b
    assert broadcast.state is State.FAILED
    assert broadcast.outcome.not_recovered == "no provider could continue"
    assert client_events(broadcast)[-1][0] == "error"
