"""One SSE event as it travels through the balancer.

``raw`` is what is written to a client: for Anthropic providers the exact upstream bytes of the
frame (framing included), for converted streams the encoding of ``payload``. The JSON is parsed
lazily and at most once, because most passthrough events never need it (issue 7: no JSON
parsing of passthrough events beyond the few that need it).
"""

from __future__ import annotations

from typing import Any

import orjson


class Event:
    __slots__ = ("_payload", "data", "name", "raw", "received")

    def __init__(
        self,
        name: str,
        data: bytes,
        raw: bytes,
        payload: dict[str, Any] | None = None,
        received: float = 0.0,
    ) -> None:
        self.name = name  # the `event:` field ('' when absent)
        self.data = data  # the joined `data:` lines
        self.raw = raw  # bytes to write to a client, one write per event
        self._payload = payload
        self.received = received  # perf_counter() when the upstream bytes arrived

    def json(self) -> dict[str, Any]:
        """The data as a JSON object. Raises ``ValueError`` when it is not one."""
        if self._payload is None:
            value = orjson.loads(self.data)
            if not isinstance(value, dict):
                raise ValueError("SSE data is not a JSON object")
            self._payload = value
        return self._payload

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
    raw = b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
    return Event(name, data, raw, payload, received)
