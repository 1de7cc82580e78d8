"""From what the clients saw to the numbers in the table (sans-IO).

Each stamped text delta reads ``"k:monotonic_ns;"``: its sequence number and the mock's clock
just before it wrote the event. An event's latency is the read time of the chunk that
completed its frame (the blank line that ends it) minus that stamp. Completeness is judged
per stream: every number ``0..N-1`` exactly once and in order, the stream ended with
``message_stop`` and no ``event: error``. Non-streaming answers carry the same stamps in
their text and are checked the same way.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import orjson

from ccbalancer.bench.client import Record

_STREAM_STAMP = re.compile(rb'"text_delta","text":"(\d+):(\d+);"')
_TEXT_STAMP = re.compile(r"(\d+):(\d+);")
PERCENTILES = (("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9))
NS_PER_MS = 1_000_000


@dataclass(slots=True)
class Completeness:
    """Counted over all streams (or requests) of a run."""

    streams: int = 0
    finished: int = 0
    missing: int = 0
    duplicated: int = 0
    reordered: int = 0
    unexpected: int = 0  # a sequence number outside 0..N-1
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return self.finished == self.streams and not (
            self.missing or self.duplicated or self.reordered or self.unexpected
        )

    def tally(self, seqs: Iterable[int], expected: int) -> None:
        seen: set[int] = set()
        previous = -1
        for seq in seqs:
            if seq >= expected:
                self.unexpected += 1
                continue
            if seq in seen:
                self.duplicated += 1
            seen.add(seq)
            if seq < previous:
                self.reordered += 1
            previous = seq
        self.missing += expected - len(seen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "streams": self.streams,
            "finished": self.finished,
            "missing": self.missing,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "unexpected": self.unexpected,
            "errors": dict(self.errors),
        }


# Slices of ``timeline``: short enough to see a ramp, long enough for a p99 of its own.
TIMELINE_WINDOW = 0.5


def percentiles(values: Sequence[int], scale: float = NS_PER_MS) -> dict[str, float | None]:
    """Nearest-rank p50/p99/p99.9 and the max, divided by ``scale`` (ns -> ms by default)."""
    if not values:
        empty: dict[str, float | None] = {name: None for name, _ in PERCENTILES}
        return empty | {"max": None}
    ordered = sorted(values)
    count = len(ordered)
    out: dict[str, float | None] = {
        name: ordered[max(0, math.ceil(p / 100 * count) - 1)] / scale for name, p in PERCENTILES
    }
    out["max"] = ordered[-1] / scale
    return out


@dataclass(slots=True)
class StreamSeen:
    """One parsed stream: per-event latencies (ns), SSE frames, time to the first byte and to
    the first stamped text delta (ns)."""

    latencies: list[int]
    reads: list[int]  # when each of those events was read (CLOCK_MONOTONIC ns)
    frames: int
    ttfb: int | None
    ttft: int | None
    finished: bool


def parse_stream(record: Record, expected: int, completeness: Completeness) -> StreamSeen:
    raw = b"".join(record.chunks)
    ends = list(accumulate(len(chunk) for chunk in record.chunks))
    times = record.times
    latencies: list[int] = []
    reads: list[int] = []
    seqs: list[int] = []
    ttft: int | None = None
    for match in _STREAM_STAMP.finditer(raw):
        boundary = raw.find(b"\n\n", match.end())
        if boundary < 0:
            break  # the stream was cut inside this event: it never arrived whole
        read_at = times[bisect_right(ends, boundary + 1)]
        if ttft is None:
            ttft = read_at - record.started
        latencies.append(read_at - int(match[2]))
        reads.append(read_at)
        seqs.append(int(match[1]))
    finished = (
        record.status == 200
        and not record.error
        and b"event: message_stop" in raw
        and b"event: error" not in raw
    )
    completeness.streams += 1
    completeness.finished += finished
    completeness.tally(seqs, expected)
    _note_error(record, completeness, finished)
    ttfb = times[0] - record.started if times else None
    return StreamSeen(latencies, reads, raw.count(b"\n\n"), ttfb, ttft, finished)


def parse_whole(record: Record, expected: int, completeness: Completeness) -> bool:
    """A non-streaming answer: status 200, a stop reason, every stamp once and in order."""
    seqs: list[int] = []
    finished = False
    if record.status == 200 and not record.error:
        try:
            message = orjson.loads(b"".join(record.chunks))
            text = "".join(
                block.get("text", "") for block in message["content"] if block["type"] == "text"
            )
            seqs = [int(match[1]) for match in _TEXT_STAMP.finditer(text)]
            finished = message.get("stop_reason") is not None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            finished = False
    completeness.streams += 1
    completeness.finished += finished
    completeness.tally(seqs, expected)
    _note_error(record, completeness, finished)
    return finished


def _note_error(record: Record, completeness: Completeness, finished: bool) -> None:
    if record.error:
        completeness.errors[record.error] += 1
    elif record.status != 200:
        completeness.errors[f"HTTP {record.status}"] += 1
    elif not finished:
        completeness.errors["unfinished"] += 1


def _wall(records: Sequence[Record]) -> float:
    if not records:
        return 0.0
    return (max(r.ended for r in records) - min(r.started for r in records)) / 1e9


def stream_run(records: Sequence[Record], expected: int) -> dict[str, Any]:
    """The metrics of one streaming run (one row of the table)."""
    completeness = Completeness()
    latencies: list[int] = []
    reads: list[int] = []
    ttfbs: list[int] = []
    ttfts: list[int] = []
    frames = 0
    for record in records:
        seen = parse_stream(record, expected, completeness)
        latencies.extend(seen.latencies)
        reads.extend(seen.reads)
        frames += seen.frames
        if seen.ttfb is not None:
            ttfbs.append(seen.ttfb)
        if seen.ttft is not None:
            ttfts.append(seen.ttft)
    wall = _wall(records)
    roles = Counter(r.shared for r in records if r.shared)
    return {
        "latency_ms": percentiles(latencies),
        "ttfb_ms": percentiles(ttfbs),
        "first_event_ms": percentiles(ttfts),
        "events": frames,
        "stamped_events": len(latencies),
        "wall_s": round(wall, 3),
        "events_per_s": round(frames / wall, 1) if wall else None,
        "completeness": completeness.as_dict(),
        "shared_roles": dict(roles),
        "timeline": timeline(reads, latencies, min((r.started for r in records), default=0)),
    }


def timeline(
    reads: Sequence[int], latencies: Sequence[int], start: int, window: float = TIMELINE_WINDOW
) -> list[dict[str, Any]]:
    """Per-event latency by when the event was read, in ``window``-second slices from
    ``start``: where in a run the tail comes from (stream set-up, steady state, the end)."""
    slices: dict[int, list[int]] = {}
    width = window * 1e9
    for read_at, latency in zip(reads, latencies, strict=True):
        slices.setdefault(int((read_at - start) // width), []).append(latency)
    return [
        {"t_s": round(index * window, 2), "events": len(values), **percentiles(values)}
        for index, values in sorted(slices.items())
    ]


def whole_run(records: Sequence[Record], expected: int) -> dict[str, Any]:
    """The metrics of one non-streaming run: request latency instead of event latency."""
    completeness = Completeness()
    durations = [r.ended - r.started for r in records]
    for record in records:
        parse_whole(record, expected, completeness)
    wall = _wall(records)
    ttfbs = [r.times[0] - r.started for r in records if r.times]
    return {
        "latency_ms": percentiles(durations),
        "ttfb_ms": percentiles(ttfbs),
        "first_event_ms": percentiles(durations),
        "events": len(records),
        "stamped_events": 0,
        "wall_s": round(wall, 3),
        "events_per_s": round(len(records) / wall, 1) if wall else None,
        "completeness": completeness.as_dict(),
        "shared_roles": dict(Counter(r.shared for r in records if r.shared)),
    }


def added(direct: dict[str, Any], balancer: dict[str, Any]) -> dict[str, Any]:
    """Balancer minus direct, per percentile of latency, TTFB and first event, and the rate."""

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 3)

    out: dict[str, Any] = {}
    for key in ("latency_ms", "ttfb_ms", "first_event_ms"):
        out[key] = {name: minus(balancer[key][name], direct[key][name]) for name in direct[key]}
    out["events_per_s"] = minus(balancer["events_per_s"], direct["events_per_s"])
    return out
