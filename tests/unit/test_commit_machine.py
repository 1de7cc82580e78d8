"""Playbooks of the commit machine: upstream events and deadline expiries in, commands out.

No sockets and no timers: each test feeds the machine what an upstream read would decode
into, at a time it chooses, and reads the decisions (mitmproxy's playbook style).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.errors import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from ccbalancer.relay.machine import (
    MESSAGE_STOP,
    Arm,
    Command,
    Commit,
    CommitMachine,
    Expire,
    Fail,
    FailOver,
    Finish,
    Phase,
    Publish,
)
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import SSEParser

FIRST_EVENT = 60.0
READ = 120.0


def machine(estimated: bool = False) -> CommitMachine:
    m = CommitMachine("a", FIRST_EVENT, READ, start_usage_estimated=estimated)
    assert m.start(0.0) == Arm(FIRST_EVENT)
    return m


def ev(kind: str, **fields: Any) -> Event:
    return encode_event(kind, {"type": kind, **fields})


def start(usage: dict[str, Any] | None = None) -> Event:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    return ev("message_start", message={**message, "usage": usage or {"input_tokens": 5}})


def block(index: int, kind: str = "text") -> Event:
    return ev("content_block_start", index=index, content_block={"type": kind, "text": ""})


def text(index: int, value: str) -> Event:
    return ev("content_block_delta", index=index, delta={"type": "text_delta", "text": value})


def stop(index: int) -> Event:
    return ev("content_block_stop", index=index)


def delta(reason: str | None = "end_turn", **usage: int) -> Event:
    return ev(
        "message_delta",
        delta={"stop_reason": reason, "stop_sequence": None},
        usage=usage or {"output_tokens": 3},
    )


def error(kind: str = "overloaded_error") -> Event:
    return ev("error", error={"type": kind, "message": "Overloaded"})


PING = ev("ping")
END = ev("message_stop")


def shape(commands: list[Command]) -> list[tuple[str, Any]]:
    """Commands with events shown by name and errors by class and message."""
    out: list[tuple[str, Any]] = []
    for c in commands:
        if isinstance(c, Commit | Publish | Finish):
            out.append((type(c).__name__, [e.name for e in c.events]))
        elif isinstance(c, Arm):
            out.append(("Arm", c.at))
        else:
            assert isinstance(c, FailOver | Fail | Expire)
            out.append((type(c).__name__, (type(c.error).__name__, c.error.message)))
    return out


# -- before the commit ------------------------------------------------------------------------


def test_message_start_and_pings_are_held_until_the_first_content_block() -> None:
    m = machine()
    assert shape(m.feed([start()], 1.0)) == [("Arm", 1.0 + READ)]
    assert m.feed([PING], 2.0) == []  # held, and the content deadline does not move
    first = block(0)
    commands = m.feed([first, text(0, "Hi")], 3.0)
    assert shape(commands) == [
        ("Commit", ["message_start", "ping", "content_block_start"]),
        ("Arm", 3.0 + READ),
        ("Publish", ["content_block_delta"]),  # the rest of the read goes out at once
    ]
    assert m.phase is Phase.COMMITTED


def test_no_event_before_the_first_event_timeout_expires_the_attempt() -> None:
    m = machine()
    assert shape(m.expired(FIRST_EVENT)) == [
        ("Expire", ("UpstreamTimeout", "first_event timeout after 60s"))
    ]
    assert shape(m.error(UpstreamTimeout("a", "first_event", FIRST_EVENT))) == [
        ("FailOver", ("UpstreamTimeout", "first_event timeout after 60s"))
    ]


def test_pings_do_not_extend_the_wait_for_content() -> None:
    m = machine()
    m.feed([start()], 10.0)
    for at in range(11, 129, 5):
        assert m.feed([PING], float(at)) == []
    assert shape(m.expired(10.0 + READ)) == [
        ("Expire", ("UpstreamTimeout", "first_content timeout after 120s"))
    ]


@pytest.mark.parametrize(
    ("events", "error"),
    [
        ([start(), error()], ("UpstreamStreamError", "overloaded_error: Overloaded")),
        ([error("api_error")], ("UpstreamStreamError", "api_error: Overloaded")),
        (
            [start(), Event("ping", None, b"event: ping\ndata: {nope\n\n", span=(18, 23))],
            ("UpstreamProtocolError", "invalid JSON in a ping event"),
        ),
        ([block(0)], ("UpstreamProtocolError", "content_block_start before message_start")),
        ([start(), start()], ("UpstreamProtocolError", "a second message_start")),
        ([start(), block(1)], ("UpstreamProtocolError", "content block 1 started out of order")),
        ([start(), END], ("UpstreamProtocolError", "message_stop before any content block")),
    ],
)
def test_anything_wrong_before_the_commit_fails_over(
    events: list[Event], error: tuple[str, str]
) -> None:
    m = machine()
    commands = m.feed(events, 1.0)
    assert shape(commands)[-1] == ("FailOver", error)
    assert not any(isinstance(c, Commit) for c in commands) and m.phase is Phase.FAILED


def test_a_stream_that_ends_before_content_fails_over() -> None:
    m = machine()
    m.feed([start(), PING], 1.0)
    assert shape(m.eof()) == [
        ("FailOver", ("UpstreamProtocolError", "stream ended before any content"))
    ]


def test_a_transport_error_before_the_commit_fails_over() -> None:
    m = machine()
    m.feed([start()], 1.0)
    cut = UpstreamConnectError("a", "connection closed mid-response")
    assert m.error(cut) == [FailOver(cut)]


@pytest.mark.parametrize("reason", ["end_turn", "refusal"])
def test_a_complete_answer_without_content_blocks_commits_at_its_stop_reason(reason: str) -> None:
    """Anthropic documents empty end_turn answers; a refusal may carry no block either. Both
    are finished answers, never a provider failure."""
    m = machine()
    commands = m.feed([start(), delta(reason)], 1.0)
    assert shape(commands) == [
        ("Arm", 1.0 + READ),
        ("Commit", ["message_start", "message_delta"]),
        ("Arm", 1.0 + READ),
    ]
    assert shape(m.feed([END], 1.1)) == [("Finish", ["message_stop"])]
    assert m.stop_reason == reason


def test_an_empty_answer_that_ends_after_its_stop_reason_gets_message_stop() -> None:
    m = machine()
    m.feed([start(), delta("end_turn")], 1.0)
    assert m.eof() == [Finish([MESSAGE_STOP])]


# -- after the commit ---------------------------------------------------------------------------


def committed() -> CommitMachine:
    m = machine()
    m.feed([start(), block(0)], 1.0)
    return m


def test_a_committed_stream_is_published_read_by_read_and_finishes_at_message_stop() -> None:
    m = committed()
    assert shape(m.feed([text(0, "a"), text(0, "b")], 2.0)) == [
        ("Publish", ["content_block_delta", "content_block_delta"])
    ]
    assert shape(m.feed([stop(0), delta(), END, PING], 3.0)) == [
        ("Finish", ["content_block_stop", "message_delta", "message_stop"])
    ]
    assert m.phase is Phase.FINISHED and m.stop_reason == "end_turn"
    assert m.feed([text(0, "late")], 4.0) == [] and m.eof() == []


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([text(1, "x")], "content_block_delta for block 1, not open"),
        ([stop(0), text(0, "x")], "content_block_delta for block 0, not open"),
        ([block(1)], "content block 1 started out of order"),
        ([stop(0), block(2)], "content block 2 started out of order"),
        ([delta()], "message_delta inside a content block"),
        ([start()], "a second message_start"),
        ([stop(0), END], "stream ended before message_delta"),
    ],
)
def test_an_out_of_grammar_event_after_the_commit_is_a_failure_never_forwarded(
    events: list[Event], message: str
) -> None:
    """Claude Code answers a malformed stream with a non-streaming retry of the whole request:
    what breaks the grammar never reaches it, what came before it does."""
    m = committed()
    commands = m.feed([text(0, "ok"), *events], 2.0)
    published = [e for c in commands if isinstance(c, Publish) for e in c.events]
    assert published[0].name == "content_block_delta"
    assert events[-1] not in published
    assert shape(commands)[-1] == ("Fail", ("UpstreamProtocolError", message))


def test_invalid_json_after_the_commit_is_a_failure() -> None:
    m = committed()
    bad = SSEParser().feed(b'event: content_block_delta\ndata: {"type": "content_bl\n\n')
    assert shape(m.feed(bad, 2.0)) == [
        ("Fail", ("UpstreamProtocolError", "invalid JSON in a content_block_delta event"))
    ]


def test_an_upstream_error_event_after_the_commit_fails_the_answer() -> None:
    m = committed()
    assert shape(m.feed([text(0, "a"), error()], 2.0)) == [
        ("Publish", ["content_block_delta"]),
        ("Fail", ("UpstreamStreamError", "overloaded_error: Overloaded")),
    ]


def test_a_clean_end_after_message_delta_is_complete_with_message_stop_added() -> None:
    m = committed()
    m.feed([stop(0), delta()], 2.0)
    assert m.eof() == [Finish([MESSAGE_STOP])]


def test_a_clean_end_before_message_delta_is_a_cut() -> None:
    m = committed()
    m.feed([text(0, "half")], 2.0)
    assert shape(m.eof()) == [
        ("Fail", ("UpstreamProtocolError", "stream ended before message_delta"))
    ]


def test_the_idle_deadline_is_rearmed_lazily_for_the_time_left() -> None:
    """Content keeps a stream alive without a timer per event: the deadline armed at the
    commit finds recent content when it fires and re-arms for what is left."""
    m = committed()  # committed at 1.0: deadline 121.0
    m.feed([text(0, "a")], 50.0)
    assert m.expired(121.0) == [Arm(170.0)]
    m.feed([text(0, "b")], 100.0)
    assert m.expired(170.0) == [Arm(220.0)]
    assert shape(m.expired(220.0)) == [("Expire", ("UpstreamTimeout", "idle timeout after 120s"))]


def test_pings_alone_after_the_commit_do_not_keep_the_stream_alive() -> None:
    m = committed()
    for at in range(2, 120, 10):
        assert shape(m.feed([PING], float(at))) == [("Publish", ["ping"])]  # forwarded...
    assert shape(m.expired(121.0)) == [  # ...but not activity
        ("Expire", ("UpstreamTimeout", "idle timeout after 120s"))
    ]
    timeout = UpstreamTimeout("a", "idle", READ)
    assert m.error(timeout) == [Fail(timeout)]


def test_a_data_only_frame_gets_its_event_name_from_the_json() -> None:
    m = committed()
    (event,) = SSEParser().feed(
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}'
        b"\n\n"
    )
    (command,) = m.feed([event], 2.0)
    assert isinstance(command, Publish)
    assert command.events[0].raw.startswith(b"event: content_block_delta\ndata: ")


def test_usage_is_read_from_message_start_and_replaced_by_message_delta() -> None:
    m = machine()
    cache = {"ephemeral_5m_input_tokens": 30, "ephemeral_1h_input_tokens": 10}
    m.feed(
        [
            start(
                {
                    "input_tokens": 7,
                    "cache_read_input_tokens": 100,
                    "cache_creation_input_tokens": 40,
                    "cache_creation": cache,
                    "output_tokens": 1,
                }
            ),
            block(0),
        ],
        1.0,
    )
    m.feed([stop(0), delta(output_tokens=25)], 2.0)
    u = m.usage
    assert (u.input_tokens, u.cache_read_input_tokens) == (7, 100)
    assert u.cache_creation_input_tokens == 40
    assert (u.cache_creation_5m, u.cache_creation_1h, u.output_tokens) == (30, 10, 25)
    assert u.total_input == 147


def test_an_estimated_message_start_usage_is_never_recorded() -> None:
    """A converted provider's message_start carries a local estimate for the client's
    context meter; the record waits for what the provider reports in message_delta."""
    m = machine(estimated=True)
    m.feed([start({"input_tokens": 999}), block(0)], 1.0)
    assert m.usage.input_tokens == 0
    m.feed([stop(0), delta(input_tokens=812, output_tokens=4)], 2.0)
    assert (m.usage.input_tokens, m.usage.output_tokens) == (812, 4)


# -- any valid stream, split anywhere ----------------------------------------------------------

_BLOCK = st.sampled_from(["text", "tool_use", "thinking"])


def _answer(kinds: list[str], deltas: int) -> list[Event]:
    events = [start()]
    for index, kind in enumerate(kinds):
        events.append(block(index, kind))
        events.extend(text(index, str(n)) for n in range(deltas))
        if index == 0:
            events.append(PING)
        events.append(stop(index))
    return [*events, delta(), END]


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(_BLOCK, max_size=4), deltas=st.integers(0, 3), data=st.data())
def test_any_valid_stream_split_anywhere_commits_once_and_forwards_every_event_in_order(
    kinds: list[str], deltas: int, data: st.DataObject
) -> None:
    events = _answer(kinds, deltas)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(events) - 1), max_size=len(events))))
    reads = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
    m = machine()
    forwarded: list[Event] = []
    commits = 0
    for at, read in enumerate(reads):
        for command in m.feed(read, float(at)):
            assert not isinstance(command, Fail | FailOver | Expire), shape([command])
            if isinstance(command, Commit):
                commits += 1
            if isinstance(command, Commit | Publish | Finish):
                forwarded.extend(command.events)
    assert commits == 1 and m.phase is Phase.FINISHED
    assert forwarded == events


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(_BLOCK, min_size=1, max_size=3), deltas=st.integers(0, 2), data=st.data())
def test_a_stream_cut_anywhere_fails_over_before_content_and_fails_after_it(
    kinds: list[str], deltas: int, data: st.DataObject
) -> None:
    """The decision at a cut depends only on where it fell: before the first block the client
    saw nothing (fail over), after it the answer failed, after message_delta it is complete."""
    events = _answer(kinds, deltas)
    at = data.draw(st.integers(0, len(events) - 1))
    m = machine()
    commands = m.feed(events[:at], 1.0) + m.eof()
    last = commands[-1] if commands else None
    first_block = next(i for i, e in enumerate(events) if e.name == "content_block_start")
    if at <= first_block:
        assert isinstance(last, FailOver)
        assert isinstance(last.error, UpstreamProtocolError)
    elif events[at - 1].name == "message_delta":
        assert last == Finish([MESSAGE_STOP])
    else:
        assert isinstance(last, Fail)


def test_stream_error_type_is_kept_for_the_client_frame() -> None:
    m = committed()
    (command,) = m.feed([error("api_error")], 2.0)
    assert isinstance(command, Fail) and isinstance(command.error, UpstreamStreamError)
    assert command.error.error_type == "api_error"


def test_a_timer_armed_for_an_earlier_deadline_only_rearms() -> None:
    """The driver keeps one timer per attempt: when it fires for a deadline that has moved
    on (first event -> content), the machine re-arms it instead of expiring the attempt."""
    m = machine()  # armed for the first event at 60
    m.feed([start()], 10.0)  # the deadline moves to 10 + READ
    assert m.expired(FIRST_EVENT) == [Arm(10.0 + READ)]
    assert shape(m.expired(10.0 + READ)) == [
        ("Expire", ("UpstreamTimeout", "first_content timeout after 120s"))
    ]
