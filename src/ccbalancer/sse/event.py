"""One SSE event as it travels through the balancer.

``raw`` is what is written to a client: for Anthropic providers the exact upstream bytes of the
frame (framing included), for converted streams the encoding of ``payload``. The JSON is parsed
lazily and at most once, because most passthrough events never need it (issue 7: no JSON
parsing of passthrough events beyond the few that need it).
"""

from __future__ import annotations

from typing import Any

import orjson
from orjson import loads


class Event:
    __slots__ = ("_data", "_end", "_payload", "_start", "name", "raw", "received")

    def __init__(
        self,
        name: str,
        data: bytes | None,
        raw: bytes,
        payload: dict[str, Any] | None = None,
        received: float = 0.0,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.name = name  # the `event:` field ('' when absent)
        self.raw = raw  # bytes to write to a client, one write per event
        # The data field is usually one slice of ``raw``: keep its offsets, not a copy (events
        # sit in logs and the replay cache, so per-event bytes matter).
        self._data = data
        self._start, self._end = span if span is not None else (0, 0)
        self._payload = payload
        self.received = received  # perf_counter() when the upstream bytes arrived

    @property
    def data(self) -> bytes:
        """The joined `data:` lines."""
        if self._data is not None:
            return self._data
        return self.raw[self._start : self._end]

    def json(self) -> dict[str, Any]:
        """The data as a JSON object (parsed once, then kept). Raises ``ValueError``."""
        payload = self._payload
        if payload is None:  # inlined: this runs for every event a stream forwards
            value = loads(
                self._data if self._data is not None else self.raw[self._start : self._end]
            )
            if type(value) is not dict:
                raise ValueError("SSE data is not a JSON object")
            self._payload = payload = value
        return payload

    def check(self) -> None:
        """Raise ``ValueError`` unless the data is a JSON object; keeps nothing."""
        if self._payload is None:
            self._parse()

    def _parse(self) -> dict[str, Any]:
        value = orjson.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError("SSE data is not a JSON object")
        return value

    @property
    def type(self) -> str:
        """The event type: the `event:` name, else the JSON ``type`` (data-only frames)."""
        if self.name:
            return self.name
        try:
            return str(self.json().get("type", ""))
        except ValueError:
            return ""

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {self.data[:60]!r})"


def encode_event(name: str, payload: dict[str, Any], received: float = 0.0) -> Event:
    """An Anthropic-style frame: ``event: <name>`` + one ``data:`` line + blank line."""
    data = orjson.dumps(payload)
    head = b"event: " + name.encode() + b"\ndata: "
    raw = head + data + b"\n\n"
    return Event(name, None, raw, payload, received, (len(head), len(head) + len(data)))
