"""Incremental SSE parser (WHATWG event-stream rules), byte-exact and memory-bounded.

``feed(chunk)`` returns the events completed by that chunk. Each event keeps the exact bytes of
its frame (``raw``) so passthrough never re-encodes. Any byte split parses to the same events
(property-tested). Line ends may be LF, CRLF or bare CR; ``:`` comment lines and frames without
data are dropped; multi-line ``data:`` is joined with LF. A frame larger than ``max_event_bytes``
raises ``SSEError`` instead of growing without bound. A frame is dispatched on the CR of a
CRLF blank line when a read ends there (never held for a byte that may not come); the LF that
follows leads the next frame's ``raw``, so the only byte not forwarded is such an LF read alone
after the stream's last frame.
"""

from __future__ import annotations

import re

from ccbalancer.sse.event import Event

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEError(ValueError):
    """The byte stream cannot be parsed as SSE within the limits."""


class SSEParser:
    __slots__ = ("_buf", "_cr_mode", "max_event_bytes")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._buf = b""
        self._cr_mode = False  # once a CR is seen, use the general line scanner

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished frame are buffered (stream cut mid-event)."""
        return bool(self._buf.strip(b"\r\n"))

    def feed(self, chunk: bytes, received: float = 0.0) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if not self._cr_mode and b"\r" in chunk:
            self._cr_mode = True
        events: list[Event] = []
        start = 0
        if not self._cr_mode:
            find = buf.find
            while True:
                end = find(b"\n\n", start)
                if end < 0:
                    break
                end += 2
                # a read that is exactly one frame (the usual case) is not copied
                frame = buf if start == 0 and end == len(buf) else buf[start:end]
                event = _lf_frame(frame, received)
                if event is not None:
                    events.append(event)
                start = end
            if start == len(buf):
                self._buf = b""
                return events
        else:
            start = self._scan_general(buf, events, received)
        rest = buf[start:]
        if len(rest) > self.max_event_bytes:
            self._buf = b""
            raise SSEError(f"SSE event larger than {self.max_event_bytes} bytes")
        self._buf = rest
        return events

    def _scan_general(self, buf: bytes, events: list[Event], received: float) -> int:
        """Frame boundaries with any line ending; returns the offset of unconsumed bytes."""
        start = 0
        line_start = 0
        for match in _LINE_END.finditer(buf):
            blank = match.start() == line_start
            if not blank and match.end() == len(buf) and match.group() == b"\r":
                # may be the first half of CRLF; were it taken as a line end, a following LF
                # would read as a blank line and dispatch early. A blank line is safe: an LF
                # after it only adds an empty line to the next frame.
                line_start = match.start()
                break
            if blank and line_start > start:  # empty line after a field: dispatch the frame
                event = parse_frame(buf[start : match.end()], received)
                if event is not None:
                    events.append(event)
                start = match.end()
            # An empty line before any field stays in the buffer and goes out at the head of
            # the next frame, as in the LF-only scan: when a frame was dispatched on a CR that
            # ended a read, the LF that completes that CRLF arrives here and is not lost.
            line_start = match.end()
        return start

    def close(self) -> list[Event]:
        """End of stream. A final frame without its blank line is discarded, as browsers do;
        callers learn of it through ``pending`` beforehand."""
        self._buf = b""
        return []


# The names Anthropic streams repeat thousands of times, decoded once here (a constant);
# any other name is decoded per frame.
_KNOWN_NAMES = {
    name.encode(): name
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    )
}


def parse_frame(frame: bytes, received: float) -> Event | None:
    """One frame (its blank line included) -> an event, or None for a frame without data."""
    if b"\r" in frame:
        return _parse_lines(frame, received)
    return _lf_frame(frame, received)


def _lf_frame(frame: bytes, received: float) -> Event | None:
    """A frame without CR that ends in its blank line (``\\n\\n``)."""
    # The shape every Anthropic-format provider sends: `event: <name>`, one `data:` line.
    if frame.startswith(b"event: "):
        eol = frame.find(b"\n", 7)
        start = eol + 7
        end = len(frame) - 2
        if frame.startswith(b"data: ", eol + 1) and frame.find(b"\n", start) == end:
            raw_name = frame[7:eol]
            name = _KNOWN_NAMES.get(raw_name) or raw_name.decode("utf-8", "replace")
            return Event(name, None, frame, None, received, (start, end))
    return _parse_lines(frame, received)


def _parse_lines(frame: bytes, received: float) -> Event | None:
    name = ""
    data_lines: list[bytes] = []
    span = (0, 0)
    if b"\r" in frame:
        lines = _LINE_END.split(frame)
        offsets = None
    else:
        lines = frame.split(b"\n")
        offsets = 0  # LF-only: track where each line starts, to point into the frame
    for line in lines:
        start = offsets
        if offsets is not None:
            offsets += len(line) + 1
        if not line or line[0] == 0x3A:  # empty or ':' comment
            continue
        field, sep, value = line.partition(b":")
        skip = len(field) + len(sep)
        if sep and value[:1] == b" ":
            value = value[1:]
            skip += 1
        if field == b"data":
            data_lines.append(value)
            if start is not None:
                span = (start + skip, start + len(line))
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data_lines:
        return None
    if len(data_lines) == 1 and offsets is not None:
        return Event(name, None, frame, None, received, span)
    return Event(name, b"\n".join(data_lines), frame, None, received)
