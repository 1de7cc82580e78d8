"""Candidates until one commits (DESIGN.md section 5, steps 4-7): the producer of an answer.

``Relay.produce`` asks the planner for the route's candidates and runs an ``AttemptRun`` for
each in turn. A failure before the commit moves on to the next candidate, invisible to the
client; a client error from upstream is returned as it is; after the commit a failure ends
the stream with an ``event: error``. Health is released exactly once per acquired attempt:
success, failure (when the error counts against the provider) or neutral. Every upstream
error is scrubbed the moment it is caught (``failures.Redaction``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from ccbalancer.balance import Candidate, Planner
from ccbalancer.balance.planner import Plan
from ccbalancer.config.schema import Config, ProviderConfig
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.capabilities import refused, request_needs
from ccbalancer.errors import UpstreamError, UpstreamStatusError
from ccbalancer.observe.record import Attempt
from ccbalancer.relay import failures
from ccbalancer.relay.attempt import AttemptRun, HeadersHook
from ccbalancer.relay.call import Call
from ccbalancer.relay.failures import Redaction
from ccbalancer.relay.hedge import race
from ccbalancer.relay.hold import ToolHold
from ccbalancer.relay.recovery import Recovery
from ccbalancer.relay.transport import UpstreamTransport
from ccbalancer.sharing.broadcast import Broadcast, State
from ccbalancer.timers import Scheduler
from ccbalancer.upstream.health import HealthRegistry, ProviderHealth


class Started:
    """A candidate about to be (or being) tried: its health slot is acquired."""

    __slots__ = ("candidate", "health", "hedged", "model", "provider")

    def __init__(
        self,
        candidate: Candidate,
        provider: ProviderConfig,
        model: str,
        health: ProviderHealth,
    ) -> None:
        self.candidate = candidate
        self.provider = provider
        self.model = model
        self.health = health
        self.hedged = False  # started beside a slow first candidate (relay.hedge)

    def start(self, at: Attempting, **options: Any) -> AttemptRun:
        through = ToolHold() if at.call.config.settings.recovery.hold_tool_input else None
        return at.run(self.candidate, self.provider, self.model, through=through, **options)


class Attempting:
    """One answer's attempts: what the candidate loop and a recovery share."""

    def __init__(self, relay: Relay, call: Call, broadcast: Broadcast, plan: Plan) -> None:
        self.relay = relay
        self.call = call
        self.broadcast = broadcast
        self.plan = plan
        self.health = relay.health
        self.scheduler: Scheduler = relay.scheduler or asyncio.get_running_loop()
        self.redaction = Redaction(relay.scrub, call.credential)
        self.last_error: UpstreamError | None = None
        self.last_stop_reason: str | None = None

    def run(
        self,
        candidate: Candidate,
        provider: ProviderConfig,
        model: str,
        **options: Any,
    ) -> AttemptRun:
        relay = self.relay
        return AttemptRun(
            relay.transport,
            self.scheduler,
            relay.dialects[provider.type],
            provider,
            model,
            self.call,
            self.broadcast,
            self.redaction,
            on_headers=relay.on_headers,
            **options,
        )

    def candidates(self, exclude: list[str]) -> Iterator[tuple[Candidate, ProviderConfig, str]]:
        """The route's candidates as the planner orders them now (health, room, stickiness),
        without ``exclude``."""
        call = self.call
        config = call.config
        for candidate in self.relay.planner.again(self.plan).candidates:
            if candidate.provider in exclude:
                continue
            provider = config.providers_by_name[candidate.provider]
            model = call.model if candidate.model == "passthrough" else candidate.model
            yield candidate, provider, model

    def release(self, health: ProviderHealth, error: UpstreamError, count: bool = True) -> None:
        """An attempt failed: a strike if ``error`` counts against the provider."""
        clock = self.health.clock
        self.last_error = error
        if count and _counts(error, self.call.config):
            health.release_failure(clock(), error.reason, error.retry_after)
        else:
            health.release_neutral(clock())

    def health_success(self, health: ProviderHealth, run: AttemptRun) -> None:
        self.last_stop_reason = run.machine.stop_reason
        health.release_success(self.health.clock(), run.content_after)

    def health_neutral(self, health: ProviderHealth) -> None:
        health.release_neutral(self.health.clock())


class Relay:
    def __init__(
        self,
        transport: UpstreamTransport,
        planner: Planner,
        health: HealthRegistry,
        dialects: dict[str, Dialect],
        scrub: Callable[[str], str] = lambda text: text,
        scheduler: Scheduler | None = None,
        on_headers: HeadersHook | None = None,
    ) -> None:
        self.transport = transport
        self.planner = planner
        self.health = health
        self.dialects = dialects
        self.scrub = scrub
        self.scheduler = scheduler  # None: the running loop
        self.on_headers = on_headers  # each upstream response's headers (rate-limit room)

    async def produce(self, call: Call, broadcast: Broadcast) -> None:
        config = call.config
        if call.forced is not None and call.forced not in config.providers_by_name:
            broadcast.fail(failures.unknown_provider(call.forced))
            return
        plan = self.planner.plan(config, call.model, call.session, call.forced, call)
        broadcast.outcome.kind, broadcast.outcome.rule = plan.kind, plan.rule_label
        if plan.route_key is None and not plan.candidates:
            broadcast.fail(failures.no_route(call.model))
            return
        at = Attempting(self, call, broadcast, plan)
        call.recoverable = config.settings.recovery.enabled and any(
            config.providers_by_name[c.provider].continues != "none" for c in plan.candidates[1:]
        )
        tally = _Tally(call, plan)
        queue = iter(plan.candidates)
        hedge_after = config.settings.hedge_after_for(plan.route_key)
        while (item := self._next(at, queue, tally)) is not None:
            if hedge_after > 0:
                hedge_after = 0.0  # at most one race per request
                if await race(at, item, lambda: self._next(at, queue, tally), _Settle(self, tally)):
                    return
                continue
            run = item.start(at)
            try:
                await run.run()
            except UpstreamError as error:
                if await self._failed(at, item, run, error, tally):
                    return
            except BaseException:  # cancelled (every client left): never the provider's fault
                at.health_neutral(item.health)
                raise
            else:
                self._succeeded(at, item, run)
                return
        self._all_failed(at, tally)

    def _next(self, at: Attempting, queue: Iterator[Candidate], tally: _Tally) -> Started | None:
        """The next candidate that can take the request, its health slot acquired."""
        config = at.call.config
        for candidate in queue:
            name = candidate.provider
            provider = config.providers_by_name[name]
            # a candidate that cannot take what the request holds (a PDF, a server tool...)
            # is passed over for one that can (issue 15, items 4-5)
            cannot = refused(tally.needs, provider.type, provider.accepts) if tally.needs else []
            if cannot:
                tally.refusals.append((name, cannot))
                tally.skipped.append(f"{name}: cannot take {', '.join(cannot)}")
                continue
            if not self.planner.has_room(at.plan, name):
                # it said it is full since the plan was made (a hedge or a failover comes
                # seconds later): not a failure, just not now
                tally.skipped.append(f"{name}: no rate-limit room")
                continue
            health = self.health.get(name)
            if not health.acquire(self.health.clock()):
                tally.skipped.append(f"{name}: busy (half-open probe or full)")
                continue
            model = at.call.model if candidate.model == "passthrough" else candidate.model
            return Started(candidate, provider, model, health)
        return None

    def _succeeded(self, at: Attempting, item: Started, run: AttemptRun) -> None:
        at.health_success(item.health, run)
        self.planner.succeeded(at.plan, item.provider.name, at.broadcast.outcome)

    async def _failed(
        self, at: Attempting, item: Started, run: AttemptRun, error: UpstreamError, tally: _Tally
    ) -> bool:
        """One attempt failed: True when that decides the answer (after its commit, or a
        client error), False to go on with the next candidate."""
        broadcast = at.broadcast
        name = item.provider.name
        attempts = broadcast.outcome.attempts
        at.redaction.error(error)
        at.release(item.health, error)
        if run.committed:
            self.planner.failed(at.plan, name)
            _replace_last(attempts, _record(name, "mid_stream", error, item.hedged))
            await self._committed_failure(at, run, error)
            return True
        if not _fails_over(error, item.provider):
            # a client error: the provider is fine and the session keeps it
            attempts.append(_record(name, "client_error", error, item.hedged))
            broadcast.fail(failures.client_error(error))
            return True
        self.planner.failed(at.plan, name)
        attempts.append(_record(name, "failover", error, item.hedged))
        tally.errors.append(error)
        return False

    def _all_failed(self, at: Attempting, tally: _Tally) -> None:
        call, broadcast, plan = at.call, at.broadcast, at.plan
        config = call.config
        refusals, needs = tally.refusals, tally.needs
        if refusals and len(refusals) == len(plan.candidates) and not tally.errors:
            # nobody could take it; unless a provider cooling down could, that will not change
            resting = [config.providers_by_name.get(n) for n, _ in plan.skipped]
            if not any(
                p is not None and p.enabled and not refused(needs, p.type, p.accepts)
                for p in resting
            ):
                broadcast.fail(failures.content_refused(call.model, refusals))
                return
        met = [e.provider for e in tally.errors] + [n for n, _ in plan.skipped]
        retry_after = self._retry_after(met, plan.retry_after)
        broadcast.fail(failures.all_failed(call.model, tally.errors, tally.skipped, retry_after))

    async def _committed_failure(
        self, at: Attempting, run: AttemptRun, error: UpstreamError
    ) -> None:
        """Finish the answer on another provider when recovery can; else end the stream with
        a proper ``event: error`` (never fake text, never an invented stop reason)."""
        call, broadcast = at.call, at.broadcast
        if call.recoverable:
            result = await Recovery(at, broadcast).finish(run, error)
            if result.recovered:
                # the client's next turn must go where its thinking signature is valid
                sticky = result.thinking_from or result.served_by
                self.planner.pin(at.plan, sticky)
                return
            broadcast.outcome.not_recovered = result.why
        if broadcast.state is State.COMMITTED:
            frame, failure = failures.mid_stream(error)
            broadcast.fail(failure, [frame])

    def _retry_after(self, providers: list[str], planned: float | None) -> float:
        """Shortest remaining cooldown among the providers this request met, 1-60 s."""
        now = self.health.clock()
        waits = [self.health.get(name).cooldown_remaining(now) for name in providers]
        waits = [w for w in waits if w > 0] + ([planned] if planned else [])
        return min(60.0, max(1.0, min(waits))) if waits else 1.0


# The words each transport failure answers to in ``unhealthy_exception_patterns`` (the
# original balancer matched exception texts; ours are classified, so the words are given).
_PATTERN_WORDS = {"connect": "connection network", "timeout": "timeout network"}


def _counts(error: UpstreamError, config: Config) -> bool:
    if not error.counts_against_health:
        return False
    if isinstance(error, UpstreamStatusError):
        return error.unhealthy
    words = _PATTERN_WORDS.get(error.reason)
    if words is None:
        return True  # stream errors, malformed or truncated streams always count
    text = f"{words} {error.message}".lower()
    return any(p.lower() in text for p in config.settings.unhealthy_exception_patterns)


def _fails_over(error: UpstreamError, provider: ProviderConfig) -> bool:
    if not error.failover:
        return False
    if isinstance(error, UpstreamStatusError):
        if error.status in (401, 403) and provider.passthrough_auth:
            return False  # the client's own credential was refused: its problem to see
        return error.unhealthy
    return True


def _record(provider: str, outcome: str, error: UpstreamError, hedged: bool = False) -> Attempt:
    return Attempt(
        provider,
        outcome,
        reason=error.reason,
        detail=error.short,
        status=error.status,
        hedged=hedged,
    )


class _Tally:
    """What the candidate loop learns on its way: failures, skips, refused content."""

    __slots__ = ("errors", "needs", "refusals", "skipped")

    def __init__(self, call: Call, plan: Plan) -> None:
        self.errors: list[UpstreamError] = []
        self.skipped = [f"{name}: {why}" for name, why in plan.skipped]
        self.refusals: list[tuple[str, list[str]]] = []
        self.needs = request_needs(call.body)


class _Settle:
    """How a race's attempts end, the candidate loop's way (relay.hedge does not decide)."""

    __slots__ = ("relay", "tally")

    def __init__(self, relay: Relay, tally: _Tally) -> None:
        self.relay = relay
        self.tally = tally

    def succeeded(self, at: Attempting, item: Started, run: AttemptRun) -> None:
        self.relay._succeeded(at, item, run)

    async def failed(
        self, at: Attempting, item: Started, run: AttemptRun, error: UpstreamError
    ) -> bool:
        return await self.relay._failed(at, item, run, error, self.tally)


def _replace_last(attempts: list[Attempt], record: Attempt) -> None:
    """The committed attempt failed: one entry per attempt, keeping its time to headers."""
    last = attempts[-1] if attempts else None
    if last is not None and last.provider == record.provider and last.outcome == "ok":
        record.ttfb = last.ttfb
        attempts[-1] = record
    else:
        attempts.append(record)
