"""One attempt at one provider: the thin driver of a ``CommitMachine``.

``run`` opens the upstream call and awaits the attempt's end. The body is pushed to the
attempt (it is the call's ``BodySink``): each arrival goes through the provider's decoder into
the machine, and what the machine decides is carried out at once, in the transport's own
callback: commit, publish and finish go to the broadcast; a failure ends ``run`` with the
``UpstreamError`` it is (``committed`` tells the relay whether the client already has
events). The single deadline is one timer on the ``Scheduler``; its expiry is one more input
to the machine. No task wakes up per event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ccbalancer.config.schema import Config, ProviderConfig
from ccbalancer.dialects.base import Dialect, StreamDecoder
from ccbalancer.dialects.estimate import estimate_input_tokens
from ccbalancer.dialects.headers import returned
from ccbalancer.dialects.session import cache_session
from ccbalancer.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from ccbalancer.observe.record import Attempt
from ccbalancer.relay.call import Call
from ccbalancer.relay.failures import Redaction, parse_retry_after
from ccbalancer.relay.machine import (
    Arm,
    Command,
    Commit,
    CommitMachine,
    Expire,
    Fail,
    FailOver,
    Finish,
    Publish,
)
from ccbalancer.relay.transport import UpstreamCall, UpstreamTransport
from ccbalancer.sharing.broadcast import Broadcast, Head
from ccbalancer.sse.event import Event
from ccbalancer.timers import Handle, Scheduler
from ccbalancer.upstream.ratelimit_headers import reset_wait

# Told (provider, status, headers) of every upstream response, success or error, before
# anything else looks at it: the rate-limit room (``upstream.ratelimits``).
HeadersHook = Callable[[str, int, list[tuple[str, str]]], None]

if TYPE_CHECKING:
    from ccbalancer.relay.hedge import Gate


class Lost(Exception):
    """Another attempt of a hedged race committed first (``relay.hedge``)."""


class EventFilter(Protocol):
    """Events on their way to the client: a continuation's splice, held tool calls."""

    def feed(self, events: list[Event]) -> list[Event]: ...


class AttemptRun:
    """Run with ``await run()``: returns when the answer finished, raises the attempt's
    ``UpstreamError`` otherwise (``committed`` says whether the client got events)."""

    __slots__ = (
        "_clock",
        "_decoder",
        "_done",
        "_machine",
        "_response",
        "_sent",
        "_timer",
        "_timer_at",
        "_ttfb",
        "before_finish",
        "body",
        "broadcast",
        "call",
        "committed",
        "content_after",
        "continuing",
        "dialect",
        "gate",
        "hedged",
        "lost",
        "on_content",
        "on_headers",
        "provider",
        "redaction",
        "scheduler",
        "through",
        "transport",
        "upstream_model",
    )

    def __init__(
        self,
        transport: UpstreamTransport,
        scheduler: Scheduler,
        dialect: Dialect,
        provider: ProviderConfig,
        upstream_model: str,
        call: Call,
        broadcast: Broadcast,
        redaction: Redaction,
        *,
        body: dict[str, Any] | None = None,
        through: EventFilter | None = None,
        continuing: bool = False,
        on_content: Callable[[], None] | None = None,
        before_finish: Callable[[AttemptRun], None] | None = None,
        gate: Gate | None = None,
        hedged: bool = False,
        on_headers: HeadersHook | None = None,
    ) -> None:
        self.body = body  # None: the call's own body
        # what the events pass through before the client gets them (a continuation's
        # splice, held tool calls); None on a plain attempt
        self.through = through
        self.continuing = continuing  # the answer is committed already: publish, never commit
        self.on_content = on_content  # called once, when the attempt's first content arrives
        # called just before the answer is finished: what the subscribers' records read must
        # be in place by then (a client may finish and be recorded before run() returns)
        self.before_finish = before_finish
        self.gate = gate  # a hedged race: only the first attempt to commit may
        self.lost = False  # set by the gate when another attempt won the race
        self.hedged = hedged  # this attempt is the hedge of a slow first one
        self.transport = transport
        self.scheduler = scheduler
        self.dialect = dialect
        self.provider = provider
        self.upstream_model = upstream_model
        self.call = call
        self.broadcast = broadcast
        self.redaction = redaction
        self.on_headers = on_headers
        self.committed = False
        self.content_after: float | None = None  # send -> first content, seconds
        timeouts = call.config.settings.timeouts
        self._machine = CommitMachine(
            provider.name, timeouts.first_event_timeout, timeouts.streaming.read_timeout
        )
        self._clock = scheduler.time
        self._response: UpstreamCall | None = None
        self._decoder: StreamDecoder | None = None
        self._timer: Handle | None = None
        self._timer_at = 0.0
        self._done: asyncio.Future[None] | None = None
        self._sent = 0.0
        self._ttfb = 0.0

    async def run(self) -> None:
        call, provider, dialect = self.call, self.provider, self.dialect
        body = call.body if self.body is None else self.body
        timeouts = call.config.settings.timeouts
        self._sent = time.perf_counter()
        deadline = self._machine.start(self._clock())
        try:
            # The status line is awaited under the first-event deadline too; the encoded
            # body and headers are referenced by the open call only (freed once sent).
            async with asyncio.timeout(timeouts.first_event_timeout):
                response = await self.transport.open(
                    provider,
                    dialect.url(provider.base_url, call.query),
                    self._headers(),
                    dialect.body(
                        body,
                        self.upstream_model,
                        provider.body_options,
                        session=cache_session(call.headers, body),
                    ),
                    timeouts.streaming,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                provider.name, "first_event", timeouts.first_event_timeout
            ) from None
        self._response = response
        try:
            if self.on_headers is not None:
                self.on_headers(provider.name, response.status, response.headers)
            self._ttfb = time.perf_counter() - self._sent
            if response.status != 200:
                raise await _status_error(response, dialect, provider.name, call.config)
            # an early input estimate for providers that report usage only at the end
            # (computed only for them: it costs CPU on a large body)
            estimate = estimate_input_tokens(body) if dialect.wants_input_estimate else 0
            del body  # this frame lasts as long as the stream; the body must not
            self._decoder = decoder = dialect.decoder(
                call.model, response.content_type, input_estimate=estimate
            )
            self._machine.start_usage_estimated = decoder.start_usage_estimated
            self._done = asyncio.get_running_loop().create_future()
            self._arm(deadline.at)
            response.stream(self)
            await self._done
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            response.close()

    # -- the body, pushed by the transport --------------------------------------------------

    def data(self, chunk: bytes) -> None:
        done = self._done
        if done is None or done.done():
            return
        assert self._decoder is not None
        try:
            events = self._decoder.feed(chunk, time.perf_counter())
        except ValueError as exc:  # bytes the decoder cannot use
            self._unusable(exc)
            return
        if events:
            commands = self._machine.feed(events, self._clock())
            if len(commands) == 1 and type(commands[0]) is Publish and self.through is None:
                try:  # the usual case: no dispatch
                    self.broadcast.publish(commands[0].events)
                except Exception as bug:
                    done.set_exception(bug)
            elif commands:
                self._carry_out(commands)

    def end(self) -> None:
        if self._ended():
            return
        assert self._decoder is not None
        machine = self._machine
        try:
            tail = self._decoder.close()  # a whole-body (JSON) answer decodes only here
        except ValueError as exc:
            self._unusable(exc)
            return
        self._carry_out(machine.feed(tail, self._clock()) + machine.eof())

    def failed(self, error: UpstreamError) -> None:
        if not self._ended():
            self._carry_out(self._machine.error(error))

    def _unusable(self, exc: ValueError) -> None:
        error = UpstreamProtocolError(self.provider.name, str(exc))
        self._carry_out(self._machine.error(error))

    def _expired(self) -> None:
        self._timer = None
        if self._ended():
            return
        for command in self._machine.expired(self._clock()):
            if isinstance(command, Expire):
                self._carry_out(self._machine.error(command.error))
            else:
                self._carry_out([command])

    def _ended(self) -> bool:
        return self._done is None or self._done.done()

    def _carry_out(self, commands: list[Command]) -> None:
        """The machine's decisions, in order. A bug of ours here ends the attempt with that
        bug (never lost in the transport's callback)."""
        done = self._done
        assert done is not None
        broadcast = self.broadcast
        through = self.through
        try:
            for command in commands:
                if isinstance(command, Publish):
                    events = command.events if through is None else through.feed(command.events)
                    broadcast.publish(events)
                elif isinstance(command, Commit):
                    self._commit(command.events)
                elif isinstance(command, Finish):
                    events = command.events if through is None else through.feed(command.events)
                    if self.before_finish is not None:
                        self.before_finish(self)
                    else:
                        broadcast.outcome.stop_reason = self._machine.stop_reason
                    broadcast.finish(events)
                    done.set_result(None)
                elif isinstance(command, Arm):
                    self._arm(command.at)
                elif isinstance(command, Fail | FailOver):
                    done.set_exception(command.error)
        except Exception as bug:
            if not done.done():
                done.set_exception(bug)

    def _commit(self, events: list[Event]) -> None:
        if self.gate is not None and not self.gate.claim(self):
            self.lost = True
            assert self._done is not None
            self._done.set_exception(Lost())
            return
        self.committed = True
        self.content_after = time.perf_counter() - self._sent
        if self.on_content is not None:
            self.on_content()
        through = self.through
        if through is not None:
            events = through.feed(events)
        if self.continuing:  # the client has the head and part of the message already
            self.broadcast.publish(events)
            return
        self.call.release()  # no other attempt can start from the beginning
        name = self.provider.name
        outcome = self.broadcast.outcome
        outcome.ttfc = self.content_after
        outcome.provider = name
        outcome.usage = self._machine.usage
        outcome.stop_reason = self._machine.stop_reason
        outcome.attempts.append(Attempt(name, "ok", ttfb=self._ttfb, hedged=self.hedged))
        assert self._response is not None
        headers = self.redaction.headers(returned(self._response.headers))
        self.broadcast.commit(Head(name, headers), events)

    @property
    def machine(self) -> CommitMachine:
        return self._machine

    @property
    def ttfb(self) -> float:
        return self._ttfb

    def _arm(self, at: float) -> None:
        """One timer per attempt: one already due no later than ``at`` stays (when it fires
        the machine re-arms it for what is left), so a moving deadline costs no timer."""
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.scheduler.call_at(at, self._expired)

    def _headers(self) -> dict[str, str]:
        call, provider = self.call, self.provider
        credential = call.credential if provider.passthrough_auth else provider.auth_value
        headers = self.dialect.headers(
            call.headers, credential, provider.auth_type, provider.header_options
        )
        headers.update(provider.headers)
        return headers


async def _status_error(
    response: UpstreamCall, dialect: Dialect, name: str, config: Config
) -> UpstreamStatusError:
    body = await response.body()
    error_type, message = dialect.error(response.status, body)
    settings = config.settings
    text = body[:8192].decode("utf-8", "replace")
    unhealthy = response.status in settings.unhealthy_http_codes or any(
        p.search(text) for p in settings.body_patterns
    )
    retry_after = parse_retry_after(
        response.header("retry-after"), response.header("retry-after-ms")
    )
    if retry_after is None and response.status == 429:  # the rate-limit headers' reset instead
        retry_after = reset_wait(response.headers)
    return UpstreamStatusError(
        name,
        message,
        status=response.status,
        retry_after=retry_after,
        error_type=error_type,
        headers=returned(response.headers),
        body=body,
        unhealthy=unhealthy,
    )
