"""The compact frame log: whatever goes in comes out byte for byte, before and after trimming,
and delta frames cost a fraction of their size."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ccbalancer.sharing.framelog import FRAME_OVERHEAD, FrameLog
from ccbalancer.sse.event import encode_event


def delta(index: int, kind: str, key: str, value: str) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}}
    return encode_event("content_block_delta", payload).raw


_deltas = st.builds(
    delta,
    st.integers(0, 20),
    st.sampled_from(["text_delta", "input_json_delta", "thinking_delta"]),
    st.sampled_from(["text", "partial_json", "thinking"]),
    st.text(max_size=40),
)
_other = st.one_of(
    st.binary(max_size=120),  # anything at all, even bytes no upstream would send
    st.builds(lambda t: b'data: {"delta":{"type":"' + t + b"\n\n", st.binary(max_size=30)),
    st.just(encode_event("ping", {"type": "ping"}).raw),
)
_frames = st.lists(st.one_of(_deltas, _other), max_size=60)


@given(_frames, st.data())
def test_every_frame_comes_back_exactly_even_after_trimming(frames: list[bytes], data) -> None:
    log = FrameLog()
    for i, raw in enumerate(frames):
        log.append(raw, float(i))
        assert log.last == raw
    assert [log.frame(i) for i in range(len(frames))] == frames
    drop = data.draw(st.integers(0, len(frames)))
    log.drop_oldest(drop)
    assert log.base == drop and log.end == len(frames)
    assert [log.frame(i) for i in range(drop, len(frames))] == frames[drop:]
    assert [log.received(i) for i in range(drop, len(frames))] == [
        float(i) for i in range(drop, len(frames))
    ]
    more = data.draw(_frames)
    for raw in more:
        log.append(raw, 0.0)
    assert [log.frame(i) for i in range(drop, log.end)] == frames[drop:] + more


def test_a_text_delta_costs_its_text_not_its_envelope() -> None:
    log = FrameLog()
    sizes = [log.append(delta(0, "text_delta", "text", f"word{i} "), 0.0) for i in range(50)]
    raw = delta(0, "text_delta", "text", "word7 ")
    stored = sizes[7] - FRAME_OVERHEAD
    assert len(raw) > 100 and stored == len(b'word7 "}}\n\n')  # the text and the frame's tail
    assert log.size(7) == sizes[7]
    text = orjson.loads(log.frame(7).split(b"data: ", 1)[1])["delta"]["text"]
    assert text == "word7 "


def test_arrival_times_stay_within_a_millisecond_for_an_hour_and_the_newest_is_exact() -> None:
    log = FrameLog()
    start = 86_400.123456  # a day of uptime, as perf_counter() reads on a server
    times = [start + k * 7.3 for k in range(500)]  # an hour-long stream
    for when in times:
        log.append(delta(0, "text_delta", "text", "x"), when)
    log.append(encode_event("error", {"type": "error"}).raw, 0.0)  # synthesised by us
    assert all(abs(log.received(i) - when) < 1e-3 for i, when in enumerate(times))
    assert abs(log.received(1) - times[1]) < 1e-5
    assert log.received(log.end - 1) == 0.0
    log.append(b"event: ping\ndata: {}\n\n", times[-1] + 0.1234567)
    assert log.received(log.end - 1) == times[-1] + 0.1234567
