"""Mid-stream recovery: a committed answer that fails is finished on another provider.

``Recovery.finish`` is what the relay does instead of ending the stream with ``event: error``
when ``settings.recovery`` allows it: rebuild what the client holds from the answer's log
(``Cut``), pick the next candidate that can continue (planner rules, never a provider that
failed this answer, at most ``max_attempts`` continuations), send it the continuation request
(``relay.continuation``) and stream its answer into the same broadcast through a ``Splice``.
While a continuation starts the client gets ``ping``s, so no idle watchdog fires. A
continuation that fails before its first content moves on to the next candidate; one that
fails after it is a new cut, recovered the same way while attempts are left. A 4xx answer to a
continuation is not the provider's fault (the request is ours): the stream then ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from ccbalancer.errors import UpstreamError, UpstreamStatusError
from ccbalancer.observe.record import Attempt
from ccbalancer.relay.attempt import AttemptRun, EventFilter
from ccbalancer.relay.continuation import Cut, continuation_body, mode_for, why_not
from ccbalancer.relay.hold import ToolHold
from ccbalancer.relay.splice import Splice
from ccbalancer.sharing.broadcast import Broadcast, Lagged
from ccbalancer.sse.accumulate import MessageAccumulator
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.timers import Handle

if TYPE_CHECKING:
    from ccbalancer.relay.relay import Attempting

PING = encode_event("ping", {"type": "ping"})
PING_EVERY = 15.0  # seconds between pings while a continuation starts
_CHARS_PER_TOKEN = 4  # the output estimate when the cut provider reported none


@dataclass
class Result:
    """How a recovery went, for the relay's health and stickiness bookkeeping."""

    recovered: bool
    served_by: str = ""  # the provider whose continuation finished the answer
    thinking_from: str = ""  # the provider whose thinking the client holds
    why: str = ""  # why it was not (or could not be) recovered
    failed: list[str] = field(default_factory=list)


class Recovery:
    def __init__(self, attempting: Attempting, broadcast: Broadcast) -> None:
        self.attempting = attempting
        self.broadcast = broadcast

    async def finish(self, cut_run: AttemptRun, error: UpstreamError) -> Result:
        """Try to finish the answer ``cut_run`` was producing when ``error`` cut it."""
        at = self.attempting
        call = at.call
        settings = call.config.settings.recovery
        first = cut_run.machine.usage
        failed = [cut_run.provider.name]
        thinking_from = ""
        left = settings.max_attempts
        while True:
            cut = self._cut(cut_run)
            if cut is None:
                return Result(False, why="the answer's log was trimmed", failed=failed)
            if cut.thinking and not thinking_from:
                thinking_from = cut_run.provider.name
            why = why_not(cut, settings.hold_tool_input)
            if why is not None:
                return Result(False, why=why, failed=failed)
            if not call.raw:
                return Result(False, why="the request was not kept", failed=failed)
            body = orjson.loads(call.raw)
            body.pop("provider", None)
            estimated = cut.output_tokens == 0
            first_output = cut.output_tokens or math.ceil(cut.text_chars() / _CHARS_PER_TOKEN)
            cut_at = _where(cut)
            next_run: AttemptRun | None = None
            for candidate, provider, model in at.candidates(exclude=failed):
                mode = mode_for(provider.continues, provider.type, model, body, cut)
                if mode == "none":
                    continue
                if left == 0:
                    return Result(False, why="no continuation attempts left", failed=failed)
                health = at.health.get(provider.name)
                if not health.acquire(at.health.clock()):
                    continue
                left -= 1
                request, stripped = continuation_body(body, cut, mode)
                step = _Continuation(
                    self.broadcast,
                    Splice(cut, mode, stripped, first, first_output),
                    Attempt(provider.name, "continued", mode=mode, at=cut_at, why=error.short),
                    _Pings(at, self.broadcast),
                    estimated,
                )
                run = at.run(
                    candidate, provider, model, body=request,
                    through=_Chain(step.splice, ToolHold()) if settings.hold_tool_input
                    else step.splice,
                    continuing=True, on_content=step.pings.stop, before_finish=step.finishing,
                )  # fmt: skip
                step.pings.start()
                try:
                    await run.run()
                except UpstreamError as failure:
                    at.redaction.error(failure)
                    client_side = _refused(failure)
                    at.release(health, failure, count=not client_side)
                    step.failed(run, failure, client_side)
                    failed.append(provider.name)
                    if run.committed:  # it delivered content, then it was cut too
                        next_run, error = run, failure
                        break
                    if client_side:
                        return Result(False, why=f"{provider.name}: {failure.short}", failed=failed)
                    continue
                except BaseException:
                    at.health_neutral(health)
                    raise
                finally:
                    step.pings.stop()
                at.health_success(health, run)
                return Result(
                    True, served_by=provider.name, thinking_from=thinking_from, failed=failed
                )
            if next_run is None:
                return Result(False, why="no provider could continue", failed=failed)
            cut_run = next_run

    def _cut(self, run: AttemptRun) -> Cut | None:
        """What the client holds, rebuilt from the log (None if the log was trimmed)."""
        accumulator = MessageAccumulator()
        broadcast = self.broadcast
        try:
            for index in range(broadcast.end):
                accumulator.add(broadcast.get(index))
        except Lagged:
            return None
        blocks = accumulator.done_blocks()
        opened = accumulator.open_block()
        cut = Cut(blocks=blocks, next_index=len(blocks) + (opened is not None))
        if opened is not None:
            cut.open_kind = str(opened[1].get("type"))
            cut.open_text = str(opened[1].get("text", ""))
        cut.thinking = any(b.get("type") == "thinking" for b in blocks) or (
            cut.open_kind == "thinking"
        )
        machine = run.machine
        if machine.saw_delta:
            cut.output_tokens = machine.usage.output_tokens
        return cut


class _Continuation:
    """One continuation attempt's parts: its splice, its pings and its record."""

    __slots__ = ("broadcast", "estimated", "pings", "record", "splice")

    def __init__(
        self,
        broadcast: Broadcast,
        splice: Splice,
        record: Attempt,
        pings: _Pings,
        estimated: bool,
    ) -> None:
        self.broadcast = broadcast
        self.splice = splice
        self.record = record
        self.pings = pings
        self.estimated = estimated

    def finishing(self, run: AttemptRun) -> None:
        """The answer is about to finish: the record and the usage the client was told go into
        the outcome before any subscriber reads it (a client may be done, and recorded, before
        the relay hears that the run ended)."""
        made = run.machine.usage
        record, splice = self.record, self.splice
        record.gap, record.overlap, record.estimated = (
            self.pings.gap,
            splice.overlap,
            self.estimated,
        )
        record.input_tokens, record.output_tokens = made.total_input, made.output_tokens
        outcome = self.broadcast.outcome
        outcome.attempts.append(record)
        outcome.recovered = True
        outcome.stop_reason = splice.stop_reason or run.machine.stop_reason
        # what the client was told: the first provider's input, both providers' output
        outcome.usage.output_tokens = splice.first_output + made.output_tokens

    def failed(self, run: AttemptRun, failure: UpstreamError, client_side: bool) -> None:
        record = self.record
        if run.committed:
            record.outcome = "mid_stream"
        else:
            record.outcome = "client_error" if client_side else "failover"
        record.reason, record.detail, record.status = failure.reason, failure.short, failure.status
        record.overlap = self.splice.overlap
        self.broadcast.outcome.attempts.append(record)


def _refused(failure: UpstreamError) -> bool:
    """A 4xx to a continuation: the request was ours to get right, not the provider's fault."""
    return (
        isinstance(failure, UpstreamStatusError)
        and 400 <= (failure.status or 0) < 500
        and not failure.unhealthy
    )


def _where(cut: Cut) -> str:
    if cut.open_kind is None:
        return f"after block {cut.next_index - 1}"
    return f"block {cut.next_index - 1} ({cut.open_kind}) +{len(cut.open_text)} chars"


class _Chain:
    """A splice, then held tool calls."""

    __slots__ = ("_first", "_then")

    def __init__(self, first: EventFilter, then: EventFilter) -> None:
        self._first = first
        self._then = then

    def feed(self, events: list[Event]) -> list[Event]:
        return self._then.feed(self._first.feed(events))


class _Pings:
    """``ping`` every ``PING_EVERY`` seconds until the continuation's first content, and
    how long that took (``gap``)."""

    __slots__ = ("_broadcast", "_handle", "_scheduler", "_started", "gap")

    def __init__(self, attempting: Attempting, broadcast: Broadcast) -> None:
        self._scheduler = attempting.scheduler
        self._broadcast = broadcast
        self._handle: Handle | None = None
        self._started = 0.0
        self.gap: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()
        self._arm()

    def _arm(self) -> None:
        self._handle = self._scheduler.call_at(self._scheduler.time() + PING_EVERY, self._ping)

    def _ping(self) -> None:
        if self._handle is None:
            return
        self._broadcast.publish([PING])
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self.gap = time.perf_counter() - self._started
