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
        "_ttfb",
        "broadcast",
        "call",
        "committed",
        "dialect",
        "on_headers",
        "provider",
        "redaction",
        "scheduler",
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
        on_headers: HeadersHook | None = None,
    ) -> None:
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
        timeouts = call.config.settings.timeouts
        self._machine = CommitMachine(
            provider.name, timeouts.first_event_timeout, timeouts.streaming.read_timeout
        )
        self._clock = scheduler.time
        self._response: UpstreamCall | None = None
        self._decoder: StreamDecoder | None = None
        self._timer: Handle | None = None
        self._done: asyncio.Future[None] | None = None
        self._sent = 0.0
        self._ttfb = 0.0

    async def run(self) -> None:
        call, provider, dialect = self.call, self.provider, self.dialect
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
                        call.body,
                        self.upstream_model,
                        provider.body_options,
                        session=cache_session(call.headers, call.body),
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
            estimate = estimate_input_tokens(call.body) if dialect.wants_input_estimate else 0
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
            if len(commands) == 1 and type(commands[0]) is Publish:  # the usual case
                try:
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
        try:
            for command in commands:
                if isinstance(command, Publish):
                    broadcast.publish(command.events)
                elif isinstance(command, Commit):
                    self._commit(command.events)
                elif isinstance(command, Finish):
                    broadcast.outcome.stop_reason = self._machine.stop_reason
                    broadcast.finish(command.events)
                    done.set_result(None)
                elif isinstance(command, Arm):
                    self._arm(command.at)
                elif isinstance(command, Fail | FailOver):
                    done.set_exception(command.error)
        except Exception as bug:
            if not done.done():
                done.set_exception(bug)

    def _commit(self, events: list[Event]) -> None:
        self.committed = True
        self.call.release()  # no other attempt can start: the body is not needed
        name = self.provider.name
        outcome = self.broadcast.outcome
        outcome.ttfc = time.perf_counter() - self._sent
        outcome.provider = name
        outcome.usage = self._machine.usage
        outcome.stop_reason = self._machine.stop_reason
        outcome.attempts.append(Attempt(name, "ok", ttfb=self._ttfb))
        assert self._response is not None
        headers = self.redaction.headers(returned(self._response.headers))
        self.broadcast.commit(Head(name, headers), events)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
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
