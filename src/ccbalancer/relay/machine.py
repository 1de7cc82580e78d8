"""The commit machine: one attempt's upstream events and deadline expiries in, decisions out.

Sans-IO (STYLE.md): it never reads a socket or touches a timer. Its driver (``relay.attempt``)
feeds it what one upstream read decoded into, the end of the stream, transport errors, and
the expiry of the attempt's single deadline; it answers with commands::

    Commit(events)   the attempt is the answer: send the head, the held events and these
    Publish(events)  forward these (one write per client for the whole batch)
    Finish(events)   forward these, then the answer is complete
    FailOver(error)  nothing was sent: count the failure, try the next candidate
    Fail(error)      a committed answer failed: end it with an ``event: error``
    Arm(at)          (re)arm the deadline at this time
    Expire(error)    the deadline passed: abort the upstream read with this error

Until the first content block nothing is forwarded (DESIGN.md 5.5): ``message_start`` and
pings are held, so any failure fails over invisibly. A stream that reaches ``message_delta``
with a stop reason and no content block is a complete, empty answer and commits there.

Deadlines, one at a time: the first event must come within ``first_event_timeout`` of the
send; content must follow the first event within ``read_timeout`` (pings do not extend it);
after the commit, no content event for ``read_timeout`` is an idle failure, pings or not.
The idle deadline is re-armed lazily on expiry, never per event.

After the commit every event is checked before it is forwarded: valid JSON and the stream
grammar (one ``message_start``; blocks opened in index order, deltas and stops only for the
open block, ``message_delta`` outside blocks, ``message_stop`` after it). Claude Code answers
a malformed stream with a non-streaming retry of the whole request, so a violation is a
mid-stream failure, never forwarded. Events our own OpenAI translator made carry their
payload already and are not parsed again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from ccbalancer.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from ccbalancer.sharing.outcome import Usage
from ccbalancer.sse.event import Event, encode_event


class Phase(enum.Enum):
    WAITING = "waiting"  # sent; no event yet
    OPENING = "opening"  # events arrived and are held until content
    COMMITTED = "committed"
    FINISHED = "finished"
    FAILED = "failed"


@dataclass(slots=True)
class Commit:
    events: list[Event]


@dataclass(slots=True)
class Publish:
    events: list[Event]


@dataclass(slots=True)
class Finish:
    events: list[Event]


@dataclass(slots=True)
class FailOver:
    error: UpstreamError


@dataclass(slots=True)
class Fail:
    error: UpstreamError


@dataclass(slots=True)
class Arm:
    at: float


@dataclass(slots=True)
class Expire:
    error: UpstreamError


Command = Commit | Publish | Finish | FailOver | Fail | Arm | Expire

MESSAGE_STOP = encode_event("message_stop", {"type": "message_stop"})

# Events that show the answer is moving; pings and unknown event types do not.
_CONTENT = frozenset(
    ("content_block_start", "content_block_delta", "content_block_stop", "message_delta")
)


class CommitMachine:
    __slots__ = (
        "_active",
        "_deadline",
        "_held",
        "_next_index",
        "_open",
        "_saw_delta",
        "_started",
        "first_event_timeout",
        "phase",
        "provider",
        "read_timeout",
        "start_usage_estimated",
        "stop_reason",
        "usage",
    )

    def __init__(
        self,
        provider: str,
        first_event_timeout: float,
        read_timeout: float,
        start_usage_estimated: bool = False,
    ) -> None:
        self.provider = provider
        self.first_event_timeout = first_event_timeout
        self.read_timeout = read_timeout
        # a converted provider's message_start carries a local estimate: never recorded
        self.start_usage_estimated = start_usage_estimated
        self.phase = Phase.WAITING
        self.usage = Usage()
        self.stop_reason: str | None = None
        self._held: list[Event] = []
        self._deadline = 0.0
        self._active = 0.0  # when the last content event arrived (after the commit)
        self._open: int | None = None  # the index of the open content block
        self._next_index = 0
        self._saw_delta = False
        self._started = False  # message_start was seen

    @property
    def committed(self) -> bool:
        return self.phase is Phase.COMMITTED

    @property
    def saw_delta(self) -> bool:
        """A ``message_delta`` arrived (its usage is the provider's final count)."""
        return self._saw_delta

    def start(self, now: float) -> Arm:
        """The request was sent at ``now``."""
        self._deadline = now + self.first_event_timeout
        return Arm(self._deadline)

    # -- inputs ----------------------------------------------------------------------------

    def feed(self, events: list[Event], now: float) -> list[Command]:
        """What one upstream read decoded into, arriving at ``now``."""
        if self.phase is Phase.COMMITTED:
            return self._forward(events, now)
        if self.phase is not Phase.WAITING and self.phase is not Phase.OPENING:
            return []
        out: list[Command] = []
        for position, event in enumerate(events):
            if self.phase is Phase.WAITING:
                self.phase = Phase.OPENING
                # pings do not extend this: content must follow within read_timeout
                self._deadline = now + self.read_timeout
                out.append(Arm(self._deadline))
            try:
                kind = self._hold(event)
            except UpstreamError as error:
                return [*out, self._fail(error)]
            if kind == "content_block_start" or (kind == "message_delta" and self.stop_reason):
                self.phase = Phase.COMMITTED
                self._active = now
                self._deadline = now + self.read_timeout
                held, self._held = self._held, []
                out.append(Commit(held))
                out.append(Arm(self._deadline))
                rest = events[position + 1 :]
                if rest:
                    out.extend(self._forward(rest, now))
                return out
        return out

    def eof(self) -> list[Command]:
        """The upstream body ended cleanly."""
        if self.phase is Phase.COMMITTED:
            if self._saw_delta:  # complete without message_stop: DESIGN.md 5.7
                self.phase = Phase.FINISHED
                return [Finish([MESSAGE_STOP])]
            return [self._fail(UpstreamProtocolError(self.provider, _CUT))]
        if self.phase is Phase.WAITING or self.phase is Phase.OPENING:
            ended = UpstreamProtocolError(self.provider, "stream ended before any content")
            return [self._fail(ended)]
        return []

    def error(self, error: UpstreamError) -> list[Command]:
        """The transport failed (or the driver aborted it for an ``Expire``)."""
        if self.phase is Phase.FINISHED or self.phase is Phase.FAILED:
            return []
        return [self._fail(error)]

    def expired(self, now: float) -> list[Command]:
        """The deadline timer fired at ``now``. A timer armed for an earlier deadline than the
        current one only re-arms: deadlines move later (first event, then content, then
        activity), and the driver keeps one timer rather than replacing it at each move."""
        if self.phase is Phase.COMMITTED:
            due = self._active + self.read_timeout
            if now < due:  # content came since it was armed: re-arm for the time left
                self._deadline = due
                return [Arm(due)]
            return [Expire(UpstreamTimeout(self.provider, "idle", self.read_timeout))]
        if self.phase is Phase.WAITING or self.phase is Phase.OPENING:
            if now < self._deadline:
                return [Arm(self._deadline)]
            if self.phase is Phase.WAITING:
                error = UpstreamTimeout(self.provider, "first_event", self.first_event_timeout)
            else:
                error = UpstreamTimeout(self.provider, "first_content", self.read_timeout)
            return [Expire(error)]
        return []

    # -- before the commit -----------------------------------------------------------------

    def _hold(self, event: Event) -> str:
        kind = _kind(event, self.provider)
        if kind == "error":
            raise _stream_error(event, self.provider)
        payload = _payload(event, self.provider)
        if kind == "message_start":
            if self._started:
                raise UpstreamProtocolError(self.provider, "a second message_start")
            self._started = True
            self._read_start(payload)
        elif kind in _CONTENT or kind == "message_stop":
            if not self._started:
                raise UpstreamProtocolError(self.provider, f"{kind} before message_start")
            if kind == "content_block_start":
                self._grammar(kind, payload)
            elif kind == "message_delta":
                self._grammar(kind, payload)
                if not self.stop_reason:
                    raise UpstreamProtocolError(self.provider, "message_delta without content")
            else:
                raise UpstreamProtocolError(self.provider, f"{kind} before any content block")
        self._held.append(event)
        return kind

    # -- after the commit: the hot path ----------------------------------------------------

    def _forward(self, events: list[Event], now: float) -> list[Command]:
        active = False
        for position, event in enumerate(events):
            try:
                kind = event.name or _kind(event, self.provider)
                try:
                    payload = event.json()  # every event: valid JSON or nothing
                except ValueError:
                    raise _invalid(event, self.provider) from None
                if kind == "content_block_delta":  # most events: checked here, no call
                    if payload.get("index") != self._open or self._open is None:
                        self._grammar(kind, payload)  # raises with the reason
                    active = True
                elif kind == "ping":
                    continue
                elif kind == "error":
                    raise _stream_error(event, self.provider)
                elif kind == "message_stop":
                    if not self._saw_delta:
                        raise UpstreamProtocolError(self.provider, _CUT)
                    self.phase = Phase.FINISHED
                    return [Finish(events[: position + 1])]
                elif kind in _CONTENT:
                    self._grammar(kind, payload)
                    active = True
                elif kind == "message_start":
                    raise UpstreamProtocolError(self.provider, "a second message_start")
            except UpstreamError as error:
                # what came before the bad event is good and goes out; the bad one never does
                good = events[:position]
                return [Publish(good), self._fail(error)] if good else [self._fail(error)]
        if active:
            self._active = now
        return [Publish(events)]

    def _grammar(self, kind: str, payload: dict[str, Any]) -> None:
        """One content event against the block grammar; raises on a violation."""
        if kind == "message_delta":
            if self._open is not None:
                raise UpstreamProtocolError(self.provider, "message_delta inside a content block")
            self._read_delta(payload)
            return
        index = payload.get("index")
        if kind == "content_block_start":
            if self._open is not None or index != self._next_index:
                raise UpstreamProtocolError(
                    self.provider, f"content block {index!r} started out of order"
                )
            self._open = index
            self._next_index += 1
        elif index != self._open or self._open is None:
            raise UpstreamProtocolError(self.provider, f"{kind} for block {index!r}, not open")
        elif kind == "content_block_stop":
            self._open = None

    def _read_start(self, payload: dict[str, Any]) -> None:
        message = payload.get("message")
        if not isinstance(message, dict):
            raise UpstreamProtocolError(self.provider, "invalid message_start")
        usage = message.get("usage")
        if isinstance(usage, dict) and not self.start_usage_estimated:
            _read_usage(self.usage, usage, self.provider)

    def _read_delta(self, payload: dict[str, Any]) -> None:
        self._saw_delta = True
        delta = payload.get("delta")
        if isinstance(delta, dict) and delta.get("stop_reason"):
            self.stop_reason = str(delta["stop_reason"])
        usage = payload.get("usage")
        if isinstance(usage, dict):
            _read_usage(self.usage, usage, self.provider)

    def _fail(self, error: UpstreamError) -> Command:
        committed = self.phase is Phase.COMMITTED
        self.phase = Phase.FAILED
        self._held = []
        return Fail(error) if committed else FailOver(error)


_CUT = "stream ended before message_delta"


def _kind(event: Event, provider: str) -> str:
    """The event's type. A frame without an ``event:`` line (data-only) gets its name from
    the JSON, and its bytes are re-encoded with it: Claude Code ignores unnamed frames."""
    if event.name:
        return event.name
    payload = _payload(event, provider)
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        raise UpstreamProtocolError(provider, "an event without a type")
    fixed = encode_event(kind, payload, event.received)
    event.name, event.raw = kind, fixed.raw
    return kind


def _payload(event: Event, provider: str) -> dict[str, Any]:
    try:
        return event.json()
    except ValueError:
        raise _invalid(event, provider) from None


def _invalid(event: Event, provider: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(provider, f"invalid JSON in a {event.name or 'data'} event")


def _stream_error(event: Event, provider: str) -> UpstreamStreamError:
    error: dict[str, Any] = {}
    try:
        found = event.json().get("error")
        if isinstance(found, dict):
            error = found
    except ValueError:
        pass
    error_type = str(error.get("type") or "api_error")
    message = str(error.get("message") or "upstream sent an error event")[:300]
    return UpstreamStreamError(provider, f"{error_type}: {message}", error_type=error_type)


_USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def _read_usage(usage: Usage, reported: dict[str, Any], provider: str) -> None:
    """Cumulative counts: what is reported replaces what was known."""
    try:
        for name in _USAGE_FIELDS:
            value = reported.get(name)
            if value is not None:
                setattr(usage, name, int(value))
        creation = reported.get("cache_creation")
        if isinstance(creation, dict):
            usage.cache_creation_5m = int(creation.get("ephemeral_5m_input_tokens") or 0)
            usage.cache_creation_1h = int(creation.get("ephemeral_1h_input_tokens") or 0)
    except (TypeError, ValueError):
        raise UpstreamProtocolError(provider, "invalid usage numbers") from None
