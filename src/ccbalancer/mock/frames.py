"""SSE framing for the mock, with the wire quirks a Script can ask for.

Every frame of a response is encoded here once, before the first write, so the writer's
per-event work is a single ``write`` (plus a splice for benchmark stamps). The quirks —
CRLF/CR line endings, ``:`` comment frames, JSON split over several ``data:`` lines, one
broken JSON payload — are all things real providers or proxies emit and Claude Code either
tolerates or chokes on (CLAUDE_CODE.md section 6), so the balancer's parser must meet them.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from ccbalancer.mock.plan import STAMP_MARKER
from ccbalancer.mock.script import Script

_EOL = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
_MARKER = STAMP_MARKER.encode()


class Frame:
    """One event's bytes. A stamped frame is ``head + stamp + tail``; otherwise ``tail`` is
    ``None`` and ``head`` is the whole frame."""

    __slots__ = ("head", "tail")

    def __init__(self, head: bytes, tail: bytes | None = None) -> None:
        self.head = head
        self.tail = tail

    def half(self) -> bytes:
        """The first half of the frame, for a cut in the middle of an event."""
        return self.head[: max(1, len(self.head) // 2)]


def _split_members(data: bytes) -> list[bytes]:
    """A JSON object as several lines, one top-level member each. Joined with LF (as SSE
    joins ``data:`` lines) it is the same JSON: the breaks fall between members, never inside
    a string, where a raw newline would be invalid."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [data]
    if not isinstance(value, dict) or not value:
        return [data]
    members = [orjson.dumps({key: item})[1:-1] for key, item in value.items()]
    return [b"{", members[0], *(b"," + member for member in members[1:]), b"}"]


def encode(name: str | None, data: bytes, script: Script, *, first: bool, broken: bool) -> Frame:
    """One event (``name`` ``None``: a data-only OpenAI frame) framed as ``script`` asks."""
    eol = _EOL[script.line_ending]
    if broken:
        data = data[:-1]  # an object without its closing brace: invalid for every parser
    lines = _split_members(data) if script.split_data else [data]
    parts = [b": keep-alive" + eol + eol] if script.comments and not first else []
    if name is not None:
        parts.append(b"event: " + name.encode() + eol)
    parts.extend(b"data: " + line + eol for line in lines)
    parts.append(eol)
    raw = b"".join(parts)
    if script.stamp and _MARKER in raw:
        head, _, tail = raw.partition(_MARKER)
        return Frame(head, tail)
    return Frame(raw)


def encode_all(events: Iterable[tuple[str | None, bytes]], script: Script) -> list[Frame]:
    """All frames of a response; ``script.invalid_json_at`` (1-based) breaks one of them."""
    broken_at = script.invalid_json_at
    return [
        encode(name, data, script, first=number == 1, broken=number == broken_at)
        for number, (name, data) in enumerate(events, start=1)
    ]
