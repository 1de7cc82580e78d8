"""One attempt at one provider: the thin async loop that drives a ``CommitMachine``.

It opens the upstream call, feeds each read through the provider's decoder into the machine
and carries out what the machine decides: commit, publish and finish go to the broadcast;
a failure is raised as the ``UpstreamError`` it is (``committed`` tells the relay whether
the client already has events); the single deadline is one timer on the ``Scheduler``, and
when it expires the pending read is aborted with the machine's timeout error.
"""

from __future__ import annotations

import asyncio
import time

from ccbalancer.config.schema import Config, ProviderConfig
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.headers import returned
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


class AttemptRun:
    """Run with ``await run()``: returns when the answer finished, raises the attempt's
    ``UpstreamError`` otherwise (``committed`` says whether the client got events)."""

    __slots__ = (
        "_call",
        "_machine",
        "_timer",
        "broadcast",
        "call",
        "committed",
        "dialect",
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
    ) -> None:
        self.transport = transport
        self.scheduler = scheduler
        self.dialect = dialect
        self.provider = provider
        self.upstream_model = upstream_model
        self.call = call
        self.broadcast = broadcast
        self.redaction = redaction
        self.committed = False
        timeouts = call.config.settings.timeouts
        self._machine = CommitMachine(
            provider.name, timeouts.first_event_timeout, timeouts.streaming.read_timeout
        )
        self._call: UpstreamCall | None = None
        self._timer: Handle | None = None

    async def run(self) -> None:
        call, provider, dialect = self.call, self.provider, self.dialect
        timeouts = call.config.settings.timeouts
        machine = self._machine
        sent = time.perf_counter()
        deadline = machine.start(self.scheduler.time())
        try:
            # The status line is awaited under the first-event deadline too; the encoded
            # body and headers are referenced by the open call only (freed once sent).
            async with asyncio.timeout(timeouts.first_event_timeout):
                response = await self.transport.open(
                    provider,
                    dialect.url(provider.base_url, call.query),
                    self._headers(),
                    dialect.body(call.body, self.upstream_model, provider.body_options),
                    timeouts.streaming,
                )
        except TimeoutError:
            raise UpstreamTimeout(
                provider.name, "first_event", timeouts.first_event_timeout
            ) from None
        self._call = response
        try:
            ttfb = time.perf_counter() - sent
            if response.status != 200:
                raise await _status_error(response, dialect, provider.name, call.config)
            decoder = dialect.decoder(call.model, response.content_type)
            machine.start_usage_estimated = decoder.start_usage_estimated
            self._arm(deadline.at)
            clock = self.scheduler.time
            while True:
                try:
                    chunk = await response.chunk()
                    if chunk:
                        events = decoder.feed(chunk, time.perf_counter())
                        commands = machine.feed(events, clock()) if events else []
                    else:
                        commands = machine.feed(decoder.close(), clock())
                        commands += machine.eof()
                except UpstreamError as error:
                    commands = machine.error(error)
                except ValueError as exc:  # bytes the decoder cannot use
                    commands = machine.error(UpstreamProtocolError(provider.name, f"{exc}"))
                if commands and self._apply(commands, sent, ttfb):
                    return
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            response.close()

    def _apply(self, commands: list[Command], sent: float, ttfb: float) -> bool:
        """Carry out the machine's decisions; True once the answer is complete."""
        broadcast = self.broadcast
        for command in commands:
            if isinstance(command, Publish):
                broadcast.publish(command.events)
            elif isinstance(command, Commit):
                self._commit(command.events, sent, ttfb)
            elif isinstance(command, Finish):
                broadcast.outcome.stop_reason = self._machine.stop_reason
                broadcast.finish(command.events)
                return True
            elif isinstance(command, Arm):
                self._arm(command.at)
            elif isinstance(command, Fail | FailOver):
                raise command.error
        return False

    def _commit(self, events: list[Event], sent: float, ttfb: float) -> None:
        self.committed = True
        self.call.release()  # no other attempt can start: the body is not needed
        name = self.provider.name
        outcome = self.broadcast.outcome
        outcome.ttfc = time.perf_counter() - sent
        outcome.provider = name
        outcome.usage = self._machine.usage
        outcome.stop_reason = self._machine.stop_reason
        outcome.attempts.append(Attempt(name, "ok", ttfb=ttfb))
        assert self._call is not None
        headers = self.redaction.headers(returned(self._call.headers))
        self.broadcast.commit(Head(name, headers), events)

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.scheduler.call_at(at, self._expired)

    def _expired(self) -> None:
        self._timer = None
        for command in self._machine.expired(self.scheduler.time()):
            if isinstance(command, Arm):
                self._arm(command.at)
            elif isinstance(command, Expire) and self._call is not None:
                self._call.abort(command.error)

    def _headers(self) -> dict[str, str]:
        call, provider = self.call, self.provider
        credential = call.credential if provider.passthrough_auth else provider.auth_value
        headers = self.dialect.headers(call.headers, credential, provider.auth_type)
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
    return UpstreamStatusError(
        name,
        message,
        status=response.status,
        retry_after=parse_retry_after(
            response.header("retry-after"), response.header("retry-after-ms")
        ),
        error_type=error_type,
        headers=returned(response.headers),
        body=body,
        unhealthy=unhealthy,
    )
