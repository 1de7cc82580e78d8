"""The planner: one request's ordered candidate list from config, health and stickiness.

``plan()`` resolves the route (``route_rules`` by the request's kind and size, else the model
name: ``balance.rules``), drops what cannot take the request now (disabled, cooling down,
half-open with its probe out, no rate-limit room, at ``max_concurrency``; each reported in
``skipped``), orders every priority tier with the configured strategy, members running out
of rate-limit room after the others, lower priorities strictly after higher ones, and puts
the session's sticky provider first. The caller acquires each candidate's health slot just
before sending and skips it if that fails. For a candidate asked for later (a hedge, a
recovery), ``again`` orders the same route afresh without needing the body and ``has_room``
answers for one provider; ``succeeded``/``failed`` report each attempt's end against the plan.
docs/routing.md tells the whole order.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from ccbalancer.balance import rules
from ccbalancer.balance.base import Candidate, Strategy
from ccbalancer.balance.kinds import Holder, Shape
from ccbalancer.balance.least_latency import LeastLatencyStrategy
from ccbalancer.balance.priority import PriorityStrategy
from ccbalancer.balance.random import RandomStrategy
from ccbalancer.balance.round_robin import RoundRobinStrategy
from ccbalancer.balance.sticky import StickyTable
from ccbalancer.balance.warmth import CacheWarmth
from ccbalancer.balance.weighted import WeightedStrategy
from ccbalancer.config.schema import Config, RouteEntry
from ccbalancer.sharing.outcome import Outcome
from ccbalancer.upstream.health import HealthRegistry, State
from ccbalancer.upstream.ratelimits import RateLimits

STRATEGIES = ("priority", "round_robin", "weighted", "random", "least_latency")
# A tier member with less than this fraction of its tightest rate limit left goes after the
# members with more (among themselves: more room first). Above it the strategy alone decides,
# so weights and rotations are not overruled by small differences in room.
LOW_ROOM = 0.2


def make_strategy(name: str, health: HealthRegistry, rng: random.Random | None = None) -> Strategy:
    rng = rng if rng is not None else random.Random()
    match name:
        case "priority":
            return PriorityStrategy()
        case "round_robin":
            return RoundRobinStrategy()
        case "weighted":
            return WeightedStrategy()
        case "random":
            return RandomStrategy(rng)
        case "least_latency":
            return LeastLatencyStrategy(health, rng)
    raise ValueError(f"unknown selection strategy {name!r}; expected one of {STRATEGIES}")


@dataclass
class Plan:
    route_key: str | None
    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (provider, few words)
    retry_after: float | None = None  # shortest cooldown left among skipped providers
    rule: int | None = None  # the route rule that chose the route; None: the model name did
    session: str = ""
    forced: bool = False  # a provider named in the request: a one-off, never sticks
    shape: Shape = field(default_factory=lambda: Shape({}), compare=False, repr=False)
    config: Config | None = field(default=None, compare=False, repr=False)
    entries: tuple[RouteEntry, ...] = field(default=(), compare=False, repr=False)

    @property
    def kind(self) -> str:
        """The request's kinds as the record shows them ("" for none)."""
        return ",".join(self.shape.kinds())

    @property
    def rule_label(self) -> str:
        return rules.rule_label(self.rule)


class Planner:
    def __init__(
        self,
        health: HealthRegistry,
        rng: random.Random | None = None,
        ratelimits: RateLimits | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.health = health
        self.ratelimits = ratelimits if ratelimits is not None else RateLimits(health.clock)
        self.sticky = StickyTable()
        self.warmth = CacheWarmth()
        self._wall = wall
        self._rng = rng
        self._strategy_name = "priority"
        self._strategy = make_strategy("priority", health, rng)

    @property
    def strategy_name(self) -> str:
        return self._strategy_name

    def set_strategy(self, name: str) -> None:
        """Switch strategy on (re)load; the same name keeps its rotation state."""
        if name != self._strategy_name:
            self._strategy = make_strategy(name, self.health, self._rng)
            self._strategy_name = name

    def plan(
        self,
        config: Config,
        model: str,
        session: str,
        forced_provider: str | None = None,
        request: Holder | dict[str, Any] | None = None,
    ) -> Plan:
        """``request``: the body, or what holds it (read lazily, only as the rules need)."""
        shape = Shape(request if request is not None else {})
        route = rules.choose(config, model, shape)
        plan = Plan(
            route.key if route is not None else None,
            rule=route.rule if route is not None else None,
            session=session,
            forced=forced_provider is not None,
            shape=shape,
            config=config,
        )
        entries = route.entries if route is not None else ()
        if forced_provider is not None:
            if forced_provider not in config.providers_by_name:
                plan.skipped.append((forced_provider, "unknown provider"))
                return plan
            entries = tuple(e for e in entries if e.provider == forced_provider) or (
                RouteEntry(provider=forced_provider),
            )
        elif route is None:
            return plan
        plan.entries = entries
        return self._fill(plan)

    def again(self, plan: Plan) -> Plan:
        """The same request's route ordered afresh, as health, room and stickiness stand now
        (for a candidate asked for while others run): no body needed, the route stays."""
        fresh = Plan(
            plan.route_key,
            rule=plan.rule,
            session=plan.session,
            forced=plan.forced,
            shape=plan.shape,
            config=plan.config,
            entries=plan.entries,
        )
        return self._fill(fresh) if fresh.entries else fresh

    def _fill(self, plan: Plan) -> Plan:
        """The plan's usable candidates, ordered; the others in ``skipped`` with a reason."""
        config, session = plan.config, plan.session
        assert config is not None
        now = self.health.clock()
        usable: list[Candidate] = []
        verdicts: dict[str, str | None] = {}  # provider -> reason skipped, None if usable
        for entry in plan.entries:
            if entry.provider not in verdicts:
                verdicts[entry.provider] = self._skip_reason(config, entry.provider, now, plan)
            if verdicts[entry.provider] is None:
                weight = config.providers_by_name[entry.provider].weight
                usable.append(Candidate(entry.provider, entry.model, entry.priority, weight))

        route_key = plan.route_key
        key = route_key if route_key is not None else ""
        ordered: list[Candidate] = []
        for _, tier in groupby(sorted(usable, key=lambda c: c.priority), lambda c: c.priority):
            ordered.extend(self._order_tier(key, list(tier), now))

        if route_key and session and not plan.forced:
            sticky = self.sticky.get(route_key, session, now)
            if sticky is not None:
                ordered.sort(key=lambda c: c.provider != sticky)  # stable: sticky entries first
        plan.candidates = ordered
        return plan

    def has_room(self, plan: Plan, provider: str) -> bool:
        """Whether ``provider`` has rate-limit room for the plan's request now."""
        return self._room_wait(plan, provider, self.health.clock()) == 0

    def _room_wait(self, plan: Plan, provider: str, now: float) -> float:
        shape = plan.shape
        return self.ratelimits.wait(provider, now, lambda: shape.input_tokens)

    def _order_tier(self, key: str, tier: list[Candidate], now: float) -> list[Candidate]:
        """The strategy's order of the members with room; those running low after them."""
        ample: list[Candidate] = []
        low: list[tuple[float, Candidate]] = []
        for candidate in tier:
            room = self.ratelimits.room(candidate.provider, now)
            if room is None or room >= LOW_ROOM:
                ample.append(candidate)
            else:
                low.append((room, candidate))
        if not low:
            return self._strategy.order(key, tier)
        low.sort(key=lambda pair: -pair[0])  # stable: equal room keeps the file order
        return self._strategy.order(key, ample) + [candidate for _, candidate in low]

    def _skip_reason(self, config: Config, name: str, now: float, plan: Plan) -> str | None:
        provider = config.providers_by_name.get(name)
        reason: str | None = None
        if provider is None:
            reason = "unknown provider"
        elif not provider.enabled:
            reason = "disabled"
        else:
            health = self.health.get(name)
            if not health.available(now):
                if health.state(now) is State.HALF_OPEN:
                    reason = "half-open probe in flight"
                else:
                    left = health.cooldown_remaining(now)
                    reason = f"cooling down {math.ceil(left)}s"
                    if plan.retry_after is None or left < plan.retry_after:
                        plan.retry_after = left
            elif (wait := self._room_wait(plan, name, now)) > 0:
                # not a failure: the provider said so itself; back in the plan at its reset
                reason = f"no rate-limit room for {math.ceil(wait)}s"
                if plan.retry_after is None or wait < plan.retry_after:
                    plan.retry_after = wait
            elif 0 < provider.max_concurrency <= health.in_flight:
                reason = f"at max_concurrency {provider.max_concurrency}"
        if reason is not None:
            plan.skipped.append((name, reason))
        return reason

    def succeeded(self, plan: Plan, provider: str, outcome: Outcome | None = None) -> None:
        """``provider`` answered the plan's request (``outcome``: its final usage and stop).

        The session sticks to it for ``sticky_provider_duration`` (0 = off), warm when the
        answer read from the prompt cache. A warm session answered elsewhere only this once
        (its provider failed once, was full, could not take the content) stays where its
        cache is while that provider is available and has room — unless that answer stopped
        for a tool call: its continuation carries the answer's thinking, which belongs with
        the provider that wrote it. A forced provider is a one-off: it neither moves nor
        renews the session's provider."""
        route_key, session = plan.route_key, plan.session
        if plan.forced or route_key is None or not session or plan.config is None:
            return
        usage = outcome.usage if outcome is not None else None
        read = usage.cache_read_input_tokens if usage is not None else 0
        if usage is not None:
            prompt = usage.total_input
            self.warmth.answered(route_key, session, provider, read, prompt, self._wall())
        now = self.health.clock()
        pin = self.sticky.pin(route_key, session, now)
        if (
            pin is not None
            and pin.provider != provider
            and pin.warm
            and (outcome is None or outcome.stop_reason != "tool_use")
            and self._can_serve(plan, pin.provider, now)
        ):
            return
        duration = plan.config.settings.sticky_provider_duration
        self.sticky.set(route_key, session, provider, now, duration, warm=read > 0)

    def pin(self, plan: Plan, provider: str) -> None:
        """The session's next request must go to ``provider`` (the thinking of its answer is
        valid only there, e.g. after a recovery finished it): moves even a warm session."""
        if plan.forced or plan.route_key is None or not plan.session or plan.config is None:
            return
        duration = plan.config.settings.sticky_provider_duration
        now = self.health.clock()
        self.sticky.set(plan.route_key, plan.session, provider, now, duration)

    def failed(self, plan: Plan, provider: str) -> None:
        """An attempt at ``provider`` failed: a session stuck to it there is let go, unless
        its cache is warm there (then the provider's health decides when it must leave)."""
        route_key = plan.route_key
        if plan.forced or route_key is None:
            return
        pin = self.sticky.pin(route_key, plan.session, self.health.clock())
        if pin is not None and pin.provider == provider and not pin.warm:
            self.sticky.forget(route_key, plan.session, provider)

    def _can_serve(self, plan: Plan, name: str, now: float) -> bool:
        """The provider is in the plan's route, enabled, available and has room."""
        assert plan.config is not None
        provider = plan.config.providers_by_name.get(name)
        return (
            any(entry.provider == name for entry in plan.entries)
            and provider is not None
            and provider.enabled
            and self.health.get(name).available(now)
            and self._room_wait(plan, name, now) == 0
        )
