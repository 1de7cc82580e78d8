"""The planner: one request's ordered candidate list from config, health and stickiness.

``plan()`` resolves the route, drops what cannot take the request now (disabled, cooling
down, half-open with its probe out, at ``max_concurrency``; each reported in ``skipped``),
orders every priority tier with the configured strategy, lower priorities strictly after
higher ones, and puts the session's sticky provider first. The caller acquires each
candidate's health slot just before sending and skips it if that fails.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import groupby

from ccbalancer.balance.base import Candidate, Strategy
from ccbalancer.balance.least_latency import LeastLatencyStrategy
from ccbalancer.balance.priority import PriorityStrategy
from ccbalancer.balance.random import RandomStrategy
from ccbalancer.balance.round_robin import RoundRobinStrategy
from ccbalancer.balance.sticky import StickyTable
from ccbalancer.balance.weighted import WeightedStrategy
from ccbalancer.config.schema import Config, RouteEntry
from ccbalancer.upstream.health import HealthRegistry, State

STRATEGIES = ("priority", "round_robin", "weighted", "random", "least_latency")


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


class Planner:
    def __init__(self, health: HealthRegistry, rng: random.Random | None = None) -> None:
        self.health = health
        self.sticky = StickyTable()
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
        self, config: Config, model: str, session: str, forced_provider: str | None = None
    ) -> Plan:
        route = config.route_for(model)
        route_key, entries = route if route is not None else (None, ())
        if forced_provider is not None:
            if forced_provider not in config.providers_by_name:
                return Plan(route_key, [], [(forced_provider, "unknown provider")])
            entries = tuple(e for e in entries if e.provider == forced_provider) or (
                RouteEntry(provider=forced_provider),
            )
        elif route is None:
            return Plan(None)

        now = self.health.clock()
        plan = Plan(route_key)
        usable: list[Candidate] = []
        verdicts: dict[str, str | None] = {}  # provider -> reason skipped, None if usable
        for entry in entries:
            if entry.provider not in verdicts:
                verdicts[entry.provider] = self._skip_reason(config, entry.provider, now, plan)
            if verdicts[entry.provider] is None:
                weight = config.providers_by_name[entry.provider].weight
                usable.append(Candidate(entry.provider, entry.model, entry.priority, weight))

        key = route_key if route_key is not None else ""
        ordered: list[Candidate] = []
        for _, tier in groupby(sorted(usable, key=lambda c: c.priority), lambda c: c.priority):
            ordered.extend(self._strategy.order(key, list(tier)))

        sticky = self.sticky.get(route_key, session, now) if route_key and session else None
        if sticky is not None:
            ordered.sort(key=lambda c: c.provider != sticky)  # stable: sticky entries first
        plan.candidates = ordered
        return plan

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
            elif 0 < provider.max_concurrency <= health.in_flight:
                reason = f"at max_concurrency {provider.max_concurrency}"
        if reason is not None:
            plan.skipped.append((name, reason))
        return reason

    def succeeded(self, config: Config, route_key: str | None, session: str, provider: str) -> None:
        """Stick the session to ``provider`` for ``sticky_provider_duration`` (0 = off)."""
        if route_key is None or not session:
            return
        duration = config.settings.sticky_provider_duration
        self.sticky.set(route_key, session, provider, self.health.clock(), duration)

    def failed(self, route_key: str | None, session: str, provider: str) -> None:
        """Unstick the session if it pointed at ``provider``; other sessions keep theirs."""
        if route_key is not None:
            self.sticky.forget(route_key, session, provider)
