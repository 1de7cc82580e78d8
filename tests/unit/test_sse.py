"""The SSE parser and the message accumulator: sans-IO, property-tested and fuzzed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ccbalancer.sse import MessageAccumulator, SSEError, SSEParser, encode_event

FIXTURES = Path(__file__).parent.parent / "fixtures"
SAMPLES = [FIXTURES / "mock-tool-use-stream.sse", FIXTURES / "mock-thinking-tool-stream.sse"]


def _parse(chunks: list[bytes]) -> list:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def _points(data: bytes, cuts: list[int]) -> set[int]:
    """Where ``_split`` cuts ``data``: any integer, folded onto 0..len(data)."""
    return {c % (len(data) + 1) for c in cuts}


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted(_points(data, cuts))
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_recorded_stream_parses_to_named_events_with_exact_raw_bytes(sample):
    raw = sample.read_bytes()
    events = _parse([raw])
    assert b"".join(e.raw for e in events) == raw
    assert events[0].name == "message_start" and events[-1].name == "message_stop"
    assert all(e.json()["type"] == e.name for e in events)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    ending=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
# a cut past the end that folds onto the last byte (2062 bytes with CRLF: 4124 -> 2061)
@example(sample=SAMPLES[0], ending=b"\r\n", cuts=[4124])
def test_any_byte_split_and_line_ending_parses_to_the_same_events(sample, ending, cuts):
    raw = sample.read_bytes()
    reference = [(e.name, e.data) for e in _parse([raw])]
    data = raw.replace(b"\n", ending)
    events = _parse(_split(data, cuts))
    assert [(e.name, e.data) for e in events] == reference
    forwarded = b"".join(e.raw for e in events)
    if ending == b"\r\n" and len(data) - 1 in _points(data, cuts):
        # The one byte that is not forwarded: the final frame is dispatched on the CR of its
        # blank line when a read ends there (never held back for a byte that may not come),
        # and the LF completing that CRLF, read alone at the very end, has no next frame to
        # go out with. Mid-stream it leads the next frame (the test below).
        assert forwarded + b"\n" == data
    else:
        assert forwarded == data  # byte-exact passthrough, any line ending


def test_a_crlf_blank_line_split_between_cr_and_lf_loses_no_byte():
    frames = [b"event: ping\r\ndata: {}\r\n\r\n", b'event: x\r\ndata: {"a":1}\r\n\r\n']
    data = b"".join(frames)
    cut = len(frames[0]) - 1  # the read ends on the blank line's CR; its LF comes next
    parser = SSEParser()
    first = parser.feed(data[:cut])
    assert [e.name for e in first] == ["ping"]  # dispatched on the CR, not held for the LF
    second = parser.feed(data[cut : cut + 1]) + parser.feed(data[cut + 1 :])
    assert [e.name for e in second] == ["x"] and second[0].json() == {"a": 1}
    assert b"".join(e.raw for e in first + second) == data


def test_comments_multiline_data_and_unknown_fields():
    raw = (
        b": keep-alive\n\nevent: x\nid: 7\nretry: 10\n"
        b'data: {"a":\ndata: 1}\n\n:c\nevent: y\ndata: 2\n\n'
    )
    events = _parse([raw])
    assert [(e.name, e.data) for e in events] == [("x", b'{"a":\n1}'), ("y", b"2")]
    assert events[0].json() == {"a": 1}


def test_utf8_split_across_reads_is_reassembled():
    payload = encode_event("content_block_delta", {"delta": {"text": "héllo 🚀 ünïcode"}}).raw
    for cut in range(1, len(payload)):
        events = _parse([payload[:cut], payload[cut:]])
        assert events[0].json()["delta"]["text"] == "héllo 🚀 ünïcode"


def test_invalid_json_and_invalid_utf8_are_value_errors_not_crashes():
    events = _parse([b"event: a\ndata: {broken\n\nevent: b\ndata: \xff\xfe\n\n"])
    assert len(events) == 2  # the boundary is never lost
    for event in events:
        with pytest.raises(ValueError):
            event.json()


def test_an_event_larger_than_the_limit_is_a_clean_error():
    parser = SSEParser(max_event_bytes=1024)
    parser.feed(b"event: big\ndata: " + b"x" * 600)
    with pytest.raises(SSEError):
        parser.feed(b"x" * 600)


def test_an_event_larger_than_one_read_is_assembled():
    big = encode_event("content_block_delta", {"t": "y" * 300_000}).raw
    chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    events = _parse(chunks)
    assert len(events) == 1 and events[0].raw == big


def test_a_line_with_no_end_is_pending_not_an_event():
    parser = SSEParser()
    assert parser.feed(b"event: message_stop\ndata: {}") == []
    assert parser.pending


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10))
def test_random_bytes_never_raise_anything_but_sse_error(data, cuts):
    parser = SSEParser(max_event_bytes=512)
    try:
        for chunk in _split(data, cuts):
            for event in parser.feed(chunk):
                assert event.data is not None
    except SSEError:
        pass


def test_accumulator_builds_the_message_the_sdk_would():
    events = _parse([(FIXTURES / "mock-thinking-tool-stream.sse").read_bytes()])
    acc = MessageAccumulator()
    for event in events:
        acc.add(event)
    message = acc.result()
    assert [b["type"] for b in message["content"]] == ["redacted_thinking", "thinking", "tool_use"]
    assert message["content"][1]["signature"]
    assert message["content"][2]["input"]["command"] == "echo THINK_TOOL_OK"
    assert message["stop_reason"] == "tool_use" and acc.finished and acc.stopped


def test_accumulator_ignores_unknown_event_and_delta_types():
    acc = MessageAccumulator()
    for name, payload in [
        (
            "message_start",
            {"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}},
        ),
        ("mystery", {"type": "mystery"}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "new_delta", "x": 1}},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "ok"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 3},
            },
        ),
    ]:
        acc.add(encode_event(name, payload))
    message = acc.result()
    assert message["content"] == [{"type": "text", "text": "ok"}]
    assert message["usage"]["output_tokens"] == 3
    assert orjson.dumps(message)
