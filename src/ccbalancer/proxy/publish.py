"""Decoded upstream events -> the broadcast, for one attempt.

``Publisher`` holds ``message_start`` and ``ping`` until the first ``content_block_start`` (the
commit, DESIGN.md section 5.5), validates each event's JSON without keeping the parse, notes
usage and stop reason for the request record, and turns an upstream ``error`` event or a short
stream into our exceptions. Frames without an ``event:`` line get their name from the JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ccbalancer.errors import UpstreamProtocolError, UpstreamStreamError
from ccbalancer.observe.record import Attempt
from ccbalancer.proxy.job import Outcome
from ccbalancer.sharing.broadcast import Broadcast, Head
from ccbalancer.sse.event import Event, encode_event

_MESSAGE_STOP = encode_event("message_stop", {"type": "message_stop"})


class Publisher:
    """Decoded events -> the broadcast. Holds ``message_start``/``ping`` until the first
    content block (the commit), validates JSON, and notes usage and stop reason."""

    __slots__ = (
        "broadcast", "head", "held", "on_commit", "on_first_event", "outcome", "saw_delta",
        "seen_event", "sent", "ttfb",
    )  # fmt: skip

    def __init__(
        self,
        broadcast: Broadcast,
        outcome: Outcome,
        head: Head,
        sent: float,
        ttfb: float,
        on_first_event: Callable[[], None],
        on_commit: Callable[[], None],
    ) -> None:
        self.broadcast = broadcast
        self.outcome = outcome
        self.head = head
        self.sent = sent
        self.ttfb = ttfb
        self.on_first_event = on_first_event
        self.on_commit = on_commit
        self.held: list[Event] = []
        self.seen_event = False
        self.saw_delta = False

    def push(self, event: Event) -> bool:
        """Publish or hold one event; True once the stream is complete (message_stop)."""
        provider = self.head.provider
        kind = event.name or _name_of(event)
        broadcast = self.broadcast
        if broadcast.head is None:
            if not self.seen_event:
                self.seen_event = True
                self.on_first_event()
            if kind == "error":
                raise _stream_error(event, provider)
            _checked(event, provider)
            if kind == "message_start":
                _read_start(event, self.outcome, provider)
            self.held.append(event)
            if kind == "content_block_start":
                self.on_commit()
                outcome = self.outcome
                outcome.ttfc = time.perf_counter() - self.sent
                outcome.provider = provider
                outcome.attempts.append(Attempt(provider, "ok", ttfb=self.ttfb))
                outcome.events = len(self.held)
                broadcast.commit(self.head, self.held)
                self.held = []
            return False
        if kind == "error":
            raise _stream_error(event, provider, append_to=broadcast)
        _checked(event, provider)
        if kind == "message_delta":
            self.saw_delta = True
            _read_delta(event, self.outcome)
        broadcast.add(event)  # offered to the readers by the attempt, once per upstream read
        self.outcome.events += 1
        if kind == "message_stop":
            broadcast.finish()
            return True
        return False

    def end(self) -> None:
        """Clean EOF: complete only after message_delta (message_stop is added if missing)."""
        provider = self.head.provider
        if self.broadcast.head is None:
            raise UpstreamProtocolError(provider, "stream ended before any content")
        if not self.saw_delta:
            raise UpstreamProtocolError(provider, "stream ended before message_delta")
        self.broadcast.append(_MESSAGE_STOP)  # complete without it: DESIGN.md section 5.7
        self.outcome.events += 1
        self.broadcast.finish()


def _name_of(event: Event) -> str:
    """A frame without an ``event:`` line (data-only) gets its name from the JSON type; the
    raw bytes are re-encoded with the name, since Claude Code ignores unnamed frames."""
    try:
        payload = event.json()
    except ValueError:
        return ""
    kind = str(payload.get("type", ""))
    if kind:
        fixed = encode_event(kind, payload, event.received)
        event.name, event.raw = kind, fixed.raw
    return kind


def _checked(event: Event, provider: str) -> Event:
    try:
        event.check()
    except ValueError:
        raise UpstreamProtocolError(
            provider, f"invalid JSON in a {event.name or 'data'} event"
        ) from None
    return event


def _stream_error(
    event: Event, provider: str, append_to: Broadcast | None = None
) -> UpstreamStreamError:
    error: dict[str, object] = {}
    try:
        found = event.json().get("error")
        if isinstance(found, dict):
            error = found
    except ValueError:
        pass
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or "upstream sent an error event")[:300]
    exc = UpstreamStreamError(provider, f"{error_type}: {message}", error_type=error_type)
    if append_to is not None:
        # forward the provider's own error frame, normalised to the two types Claude Code
        # reacts to with an immediate non-streaming retry
        kind = error_type if error_type in ("overloaded_error", "api_error") else "api_error"
        append_to.append(
            encode_event("error", {"type": "error", "error": {"type": kind, "message": message}})
        )
        exc.published = True
    return exc


def _read_start(event: Event, outcome: Outcome, provider: str) -> None:
    try:
        message = event.json().get("message") or {}
        usage = message.get("usage") or {}
        outcome.input_tokens = (
            int(usage.get("input_tokens") or 0)
            + int(usage.get("cache_read_input_tokens") or 0)
            + int(usage.get("cache_creation_input_tokens") or 0)
        )
    except (ValueError, TypeError, AttributeError):
        raise UpstreamProtocolError(provider, "invalid message_start") from None


def _read_delta(event: Event, outcome: Outcome) -> None:
    try:
        payload = event.json()
        usage = payload.get("usage") or {}
        if usage.get("output_tokens") is not None:
            outcome.output_tokens = int(usage["output_tokens"])
        if usage.get("input_tokens") is not None:
            outcome.input_tokens = max(outcome.input_tokens, int(usage["input_tokens"]))
        outcome.stop_reason = (payload.get("delta") or {}).get("stop_reason") or outcome.stop_reason
    except (ValueError, TypeError, AttributeError):
        pass
