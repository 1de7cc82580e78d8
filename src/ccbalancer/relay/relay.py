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
from collections.abc import Callable

from ccbalancer.balance import Planner
from ccbalancer.config.schema import Config, ProviderConfig
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.capabilities import refused, request_needs
from ccbalancer.errors import UpstreamError, UpstreamStatusError
from ccbalancer.observe.record import Attempt
from ccbalancer.relay import failures
from ccbalancer.relay.attempt import AttemptRun, HeadersHook
from ccbalancer.relay.call import Call
from ccbalancer.relay.failures import Redaction
from ccbalancer.relay.transport import UpstreamTransport
from ccbalancer.sharing.broadcast import Broadcast
from ccbalancer.timers import Scheduler
from ccbalancer.upstream.health import HealthRegistry


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
        self._scheduler = scheduler
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
        scheduler = self._scheduler or asyncio.get_running_loop()
        redaction = Redaction(self.scrub, call.credential)
        attempts = broadcast.outcome.attempts
        errors: list[UpstreamError] = []
        skipped = [f"{name}: {why}" for name, why in plan.skipped]
        # a candidate that cannot take what the request holds (a PDF, a server tool...) is
        # passed over for one that can (issue 15, items 4-5)
        needs = request_needs(call.body)
        refusals: list[tuple[str, list[str]]] = []
        for candidate in plan.candidates:
            name = candidate.provider
            provider = config.providers_by_name[name]
            cannot = refused(needs, provider.type, provider.accepts) if needs else []
            if cannot:
                refusals.append((name, cannot))
                skipped.append(f"{name}: cannot take {', '.join(cannot)}")
                continue
            health = self.health.get(name)
            if not health.acquire(self.health.clock()):
                skipped.append(f"{name}: busy (half-open probe or full)")
                continue
            model = call.model if candidate.model == "passthrough" else candidate.model
            run = AttemptRun(
                self.transport,
                scheduler,
                self.dialects[provider.type],
                provider,
                model,
                call,
                broadcast,
                redaction,
                self.on_headers,
            )
            try:
                await run.run()
            except UpstreamError as error:
                redaction.error(error)
                if _counts(error, config):
                    health.release_failure(self.health.clock(), error.reason, error.retry_after)
                else:
                    health.release_neutral(self.health.clock())
                if run.committed:
                    self.planner.failed(plan, name)
                    _replace_last(attempts, _record(name, "mid_stream", error))
                    frame, failure = failures.mid_stream(error)
                    broadcast.fail(failure, [frame])
                    return
                if not _fails_over(error, provider):
                    # a client error: the provider is fine and the session keeps it
                    attempts.append(_record(name, "client_error", error))
                    broadcast.fail(failures.client_error(error))
                    return
                self.planner.failed(plan, name)
                attempts.append(_record(name, "failover", error))
                errors.append(error)
            except BaseException:  # cancelled (every client left): never the provider's fault
                health.release_neutral(self.health.clock())
                raise
            else:
                health.release_success(self.health.clock(), broadcast.outcome.ttfc)
                self.planner.succeeded(plan, name, broadcast.outcome)
                return
        if refusals and len(refusals) == len(plan.candidates) and not errors:
            # nobody could take it; unless a provider cooling down could, that will not change
            resting = [config.providers_by_name.get(n) for n, _ in plan.skipped]
            if not any(
                p is not None and p.enabled and not refused(needs, p.type, p.accepts)
                for p in resting
            ):
                broadcast.fail(failures.content_refused(call.model, refusals))
                return
        met = [e.provider for e in errors] + [n for n, _ in plan.skipped]
        broadcast.fail(
            failures.all_failed(
                call.model, errors, skipped, self._retry_after(met, plan.retry_after)
            )
        )

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


def _record(provider: str, outcome: str, error: UpstreamError) -> Attempt:
    return Attempt(provider, outcome, reason=error.reason, detail=error.short, status=error.status)


def _replace_last(attempts: list[Attempt], record: Attempt) -> None:
    """The committed attempt failed: one entry per attempt, keeping its time to headers."""
    last = attempts[-1] if attempts else None
    if last is not None and last.provider == record.provider and last.outcome == "ok":
        record.ttfb = last.ttfb
        attempts[-1] = record
    else:
        attempts.append(record)
