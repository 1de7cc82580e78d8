"""A continuation's events spliced into the message the client already holds (sans-IO).

The continuation is a whole new answer from another provider; the client must see one message:
exactly one ``message_start``, ``message_delta`` and ``message_stop``, block indices 0..n-1
without gaps or repeats, nothing sent twice and nothing invented. ``Splice.feed`` turns the
continuation's events (already checked by its own commit machine) into what the client gets:

* its ``message_start`` is not forwarded, nor any thinking block (thinking is off for it);
* its first text continues the client's open text block: no second start, its deltas carry
  that block's index, minus the whitespace a prefill stripped or, for a resume, the tail of
  what was delivered that the model repeated (the longest repeat within ``WINDOW``
  characters, at least ``MIN_OVERLAP`` long: the start of the text is held until that is
  known);
* other blocks are renumbered after the client's; the client's open text block is closed
  (``content_block_stop``) before a new block starts;
* ``message_delta`` reports the first provider's input and cache counts and the output of both
  (``first_output`` + the continuation's); a message that holds tool calls the client must run
  keeps ``tool_use`` as its stop reason.

Every byte of text the client sees came from a model; the splice only drops, renumbers and
re-frames.
"""

from __future__ import annotations

from typing import Any

from ccbalancer.relay.continuation import Cut
from ccbalancer.sharing.outcome import Usage
from ccbalancer.sse.event import Event, encode_event

WINDOW = 256  # characters of a resume's start held to look for a repeated tail
MIN_OVERLAP = 4  # a shorter match is as likely chance as a repeat


class Splice:
    __slots__ = (
        "_held",
        "_index",
        "_join",
        "_joined",
        "_next",
        "_open",
        "_skip",
        "_strip",
        "_tail",
        "_tools",
        "first",
        "first_output",
        "overlap",
        "started",
        "stop_reason",
    )

    def __init__(self, cut: Cut, mode: str, stripped: str, first: Usage, first_output: int) -> None:
        self.first = first  # the first provider's usage: its input and cache counts stand
        self.first_output = first_output
        self._next = cut.next_index
        self._open: int | None = cut.next_index - 1 if cut.open_kind == "text" else None
        self._join = self._open is not None  # the first text continues the open block
        self._joined: int | None = None  # the continuation's index of that first text
        self._index: dict[int, int] = {}  # continuation block index -> client index
        self._skip: set[int] = set()  # thinking blocks, never forwarded
        self._strip = stripped if mode == "prefill" else ""
        # resume: hold the start of the text until a repeat of this tail can be told
        self._tail = cut.open_text[-WINDOW:] if mode == "resume" and self._join else ""
        self._held: list[str] | None = [] if self._tail else None
        self._tools = bool(cut.tools)
        self.overlap = 0  # characters of repeated tail removed (for the record)
        self.started = False  # the continuation has produced content
        self.stop_reason: str | None = None  # the one the client was told

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            made = len(out)
            self._one(event, out)
            for rewritten in out[made:]:  # when the bytes arrived: the per-event timing
                rewritten.received = rewritten.received or event.received
        return out

    def _one(self, event: Event, out: list[Event]) -> None:
        kind = event.name
        if kind == "message_start":
            return
        if kind in ("ping", "message_stop"):
            out.append(event)
            return
        payload = event.json()
        if kind == "content_block_start":
            self._start(payload, out)
        elif kind == "content_block_delta":
            self._delta(event, payload, out)
        elif kind == "content_block_stop":
            self._stop(event, payload, out)
        elif kind == "message_delta":
            self._release(out)
            self._close_open(out)
            out.append(self._final_delta(payload))
        else:
            out.append(event)  # an event type this code does not know: as it came

    def _start(self, payload: dict[str, Any], out: list[Event]) -> None:
        index = payload["index"]
        block = payload.get("content_block") or {}
        kind = block.get("type")
        if kind in ("thinking", "redacted_thinking"):
            self._skip.add(index)
            return
        self.started = True
        if self._join and kind == "text":
            self._join = False
            self._joined = index
            assert self._open is not None
            self._index[index] = self._open
            return  # the client's block is already open
        self._join = False
        self._release(out)
        self._close_open(out)
        if kind == "tool_use":
            self._tools = True
        self._index[index] = self._next
        out.append(_with_index(payload, self._next))
        self._next += 1

    def _delta(self, event: Event, payload: dict[str, Any], out: list[Event]) -> None:
        index = payload["index"]
        if index in self._skip:
            return
        if index != self._joined:
            out.append(_with_index(payload, self._index[index]))
            return
        delta = payload.get("delta") or {}
        text = delta.get("text")
        if delta.get("type") != "text_delta" or not isinstance(text, str):
            out.append(_with_index(payload, self._index[index]))
            return
        if self._strip:
            kept = 0
            while kept < len(text) and self._strip and text[kept] == self._strip[0]:
                self._strip = self._strip[1:]
                kept += 1
            if kept < len(text):
                self._strip = ""  # the continuation went another way: stop stripping
            text = text[kept:]
        if self._held is not None:
            self._held.append(text)
            if sum(len(t) for t in self._held) >= WINDOW:
                self._release(out)
            return
        if text:
            out.append(_text(self._index[index], text))

    def _stop(self, event: Event, payload: dict[str, Any], out: list[Event]) -> None:
        index = payload["index"]
        if index in self._skip:
            return
        if index == self._joined:
            self._release(out)
            self._open = None
        out.append(_with_index(payload, self._index[index]))

    def _release(self, out: list[Event]) -> None:
        """The held start of a resumed text, without the tail it repeated."""
        held = self._held
        if held is None:
            return
        self._held = None
        text = "".join(held)
        self.overlap = _overlap(self._tail, text)
        text = text[self.overlap :]
        if text and self._joined is not None:
            out.append(_text(self._index[self._joined], text))

    def _close_open(self, out: list[Event]) -> None:
        if self._open is not None:
            stop = {"type": "content_block_stop", "index": self._open}
            out.append(encode_event("content_block_stop", stop))
            self._open = None
            self._joined = None

    def _final_delta(self, payload: dict[str, Any]) -> Event:
        delta = dict(payload.get("delta") or {})
        if delta.get("stop_reason") == "end_turn" and self._tools:
            delta["stop_reason"] = "tool_use"  # the client still has tool calls to run
        self.stop_reason = delta.get("stop_reason")
        usage = dict(payload.get("usage") or {})
        usage["output_tokens"] = self.first_output + int(usage.get("output_tokens") or 0)
        first = self.first
        usage["input_tokens"] = first.input_tokens
        if first.cache_read_input_tokens or "cache_read_input_tokens" in usage:
            usage["cache_read_input_tokens"] = first.cache_read_input_tokens
        if first.cache_creation_input_tokens or "cache_creation_input_tokens" in usage:
            usage["cache_creation_input_tokens"] = first.cache_creation_input_tokens
        return encode_event("message_delta", {**payload, "delta": delta, "usage": usage})


def _overlap(tail: str, text: str) -> int:
    """The length of the longest start of ``text`` that ``tail`` ends with (0 if shorter than
    ``MIN_OVERLAP``)."""
    for size in range(min(len(tail), len(text)), MIN_OVERLAP - 1, -1):
        if tail.endswith(text[:size]):
            return size
    return 0


def _with_index(payload: dict[str, Any], index: int) -> Event:
    return encode_event(payload["type"], {**payload, "index": index})


def _text(index: int, text: str) -> Event:
    delta = {"type": "text_delta", "text": text}
    return encode_event(
        "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
    )
