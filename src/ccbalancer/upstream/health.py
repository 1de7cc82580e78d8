"""Per-provider health: consecutive-failure counter, circuit breaker and latency EWMA.

Sans-IO: every method takes ``now`` from the caller (the registry's injected clock), so tests
drive cooldowns without sleeping. States are HEALTHY -> COOLING_DOWN (``threshold`` failures)
-> HALF_OPEN (cooldown over; one probe request allowed) -> HEALTHY (probe succeeded) or back to
COOLING_DOWN (probe failed). COOLING_DOWN -> HALF_OPEN happens with time alone, so it is
noticed, and reported to ``on_transition`` once, by the first call that looks at the state.
Health is keyed by provider name and survives config reloads (``HealthRegistry.reconcile``).
"""

from __future__ import annotations

import enum
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ccbalancer.config.schema import Settings

EWMA_ALPHA = 0.3
RECENT_LATENCIES = 20
RECENT_OUTCOMES = 50

TransitionCallback = Callable[[str, "State", "State"], None]


class State(enum.StrEnum):
    HEALTHY = "healthy"
    COOLING_DOWN = "cooling_down"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class HealthPolicy:
    threshold: int = 2
    cooldown: float = 300
    reset_on_success: bool = True
    reset_timeout: float = 300  # 0 = failures are never forgotten
    max_retry_after: float = 600

    @classmethod
    def from_settings(cls, s: Settings) -> HealthPolicy:
        return cls(
            threshold=s.unhealthy_threshold,
            cooldown=s.failure_cooldown,
            reset_on_success=s.unhealthy_reset_on_success,
            reset_timeout=s.unhealthy_reset_timeout,
            max_retry_after=s.max_retry_after,
        )


class ProviderHealth:
    """Breaker, counters and latency samples of one provider."""

    def __init__(
        self, name: str, policy: HealthPolicy, on_transition: TransitionCallback | None = None
    ) -> None:
        self.name = name
        self.policy = policy
        self.in_flight = 0
        self.failure_count = 0  # consecutive, as of the last verdict; see failure_count_at()
        self.ewma_ttfc: float | None = None
        self.requests = 0  # attempts released, whatever the verdict
        self.failures = 0
        self.last_failure_reason: str | None = None
        self._on_transition = on_transition
        self._state = State.HEALTHY
        self._last_failure_at: float | None = None
        self._open_until = 0.0
        self._probe_out = False
        # Requests still in flight from before the current half-open period. Releases carry no
        # token, so a neutral release is charged to them first: the probe slot is only freed
        # when it is certainly the probe that left (never two probes at once).
        self._stale = 0
        self._ttfc: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._ttfb: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._outcomes: deque[bool] = deque(maxlen=RECENT_OUTCOMES)  # True = failure

    def _set_state(self, new: State) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_transition is not None:
            self._on_transition(self.name, old, new)

    def _advance(self, now: float) -> None:
        if self._state is State.COOLING_DOWN and now >= self._open_until:
            self._probe_out = False
            self._stale = self.in_flight
            self._set_state(State.HALF_OPEN)

    def state(self, now: float) -> State:
        self._advance(now)
        return self._state

    def cooldown_remaining(self, now: float) -> float:
        self._advance(now)
        if self._state is not State.COOLING_DOWN:
            return 0.0
        return max(0.0, self._open_until - now)

    def failure_count_at(self, now: float) -> int:
        """``failure_count`` with failures older than ``reset_timeout`` forgotten."""
        if self.state(now) is State.HEALTHY and self._expired(now):
            return 0
        return self.failure_count

    def _expired(self, now: float) -> bool:
        timeout = self.policy.reset_timeout
        last = self._last_failure_at
        return timeout > 0 and last is not None and now - last > timeout

    def available(self, now: float) -> bool:
        state = self.state(now)
        return state is State.HEALTHY or (state is State.HALF_OPEN and not self._probe_out)

    def acquire(self, now: float) -> bool:
        if not self.available(now):
            return False
        if self._state is State.HALF_OPEN:
            self._probe_out = True
        self.in_flight += 1
        return True

    def _release(self, now: float) -> None:
        self._advance(now)
        self.in_flight = max(0, self.in_flight - 1)
        self.requests += 1

    def release_success(self, now: float, ttfc: float | None, ttfb: float | None = None) -> None:
        self._release(now)
        self._outcomes.append(False)
        if ttfc is not None:
            self._ttfc.append(ttfc)
            prev = self.ewma_ttfc
            self.ewma_ttfc = ttfc if prev is None else EWMA_ALPHA * ttfc + (1 - EWMA_ALPHA) * prev
        if ttfb is not None:
            self._ttfb.append(ttfb)
        if self._state is State.HALF_OPEN:
            self.failure_count, self._probe_out, self._stale = 0, False, 0
            self._set_state(State.HEALTHY)
        elif self._state is State.HEALTHY and self.policy.reset_on_success:
            self.failure_count = 0
        # COOLING_DOWN: a request that started before the breaker opened; the probe decides.

    def release_failure(self, now: float, reason: str, retry_after: float | None = None) -> None:
        self._release(now)
        self._outcomes.append(True)
        self.failures += 1
        self.last_failure_reason = reason
        if self._state is State.HEALTHY and self._expired(now):
            self.failure_count = 0
        self.failure_count += 1
        self._last_failure_at = now
        extra = min(retry_after, self.policy.max_retry_after) if retry_after else 0.0
        if self._state is State.COOLING_DOWN:
            # A late failure of an older request: only a longer retry-after moves the end.
            self._open_until = max(self._open_until, now + extra)
        elif self._state is State.HALF_OPEN or self.failure_count >= self.policy.threshold:
            self._open_until = now + max(self.policy.cooldown, extra)
            self._probe_out = False
            self._set_state(State.COOLING_DOWN)

    def open_elsewhere(self, now: float, seconds: float, reason: str) -> None:
        """Another instance's breaker for this provider opened (shared through Redis): stay
        out for its remaining cooldown, then probe as after a cooldown of our own."""
        self._advance(now)
        until = now + seconds
        if self._state is State.COOLING_DOWN and until <= self._open_until:
            return
        self._open_until = max(self._open_until, until)
        self.last_failure_reason = reason
        self._probe_out = False
        self._set_state(State.COOLING_DOWN)

    def release_neutral(self, now: float) -> None:
        self._release(now)
        if self._state is State.HALF_OPEN and self._probe_out:
            if self._stale > 0:
                self._stale -= 1
            else:
                self._probe_out = False
        if self.in_flight == 0:  # nothing can still be the probe
            self._probe_out = False
        self._stale = min(self._stale, self.in_flight - self._probe_out)

    def snapshot(self, now: float) -> dict[str, Any]:
        """For ``/providers``. ``ttft_ms_recent`` is the median time to first *content*."""
        outcomes = self._outcomes
        return {
            "state": str(self.state(now)),
            "failure_count": self.failure_count_at(now),
            "cooldown_remaining_s": round(self.cooldown_remaining(now), 1),
            "in_flight": self.in_flight,
            "ttft_ms_recent": _median_ms(self._ttfc),
            "ttfb_ms_recent": _median_ms(self._ttfb),
            "ewma_ttfc_ms": None if self.ewma_ttfc is None else round(self.ewma_ttfc * 1000, 1),
            "error_rate_recent": round(sum(outcomes) / len(outcomes), 3) if outcomes else None,
            "requests": self.requests,
            "failures": self.failures,
            "last_failure_reason": self.last_failure_reason,
        }


def _median_ms(samples: Iterable[float]) -> float | None:
    values = list(samples)
    return round(statistics.median(values) * 1000, 1) if values else None


class HealthRegistry:
    """Every provider's health, by name; outlives config snapshots."""

    def __init__(
        self,
        policy: HealthPolicy,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionCallback | None = None,
    ) -> None:
        self.policy = policy
        self.clock = clock
        self._on_transition = on_transition
        self._providers: dict[str, ProviderHealth] = {}
        self._retired: set[str] = set()  # removed from config, kept until their requests end

    def get(self, name: str) -> ProviderHealth:
        health = self._providers.get(name)
        if health is None:
            health = ProviderHealth(name, self.policy, self._on_transition)
            self._providers[name] = health
        return health

    def __contains__(self, name: object) -> bool:
        return name in self._providers and name not in self._retired

    def reconcile(self, names: Iterable[str], policy: HealthPolicy) -> None:
        """Adopt a new config: unchanged names keep their state, removed ones go when idle."""
        wanted = set(names)
        self.policy = policy
        for name in wanted:
            self.get(name).policy = policy
        self._retired = {name for name in self._providers if name not in wanted}
        self._prune()

    def _prune(self) -> None:
        for name in [n for n in self._retired if self._providers[n].in_flight == 0]:
            del self._providers[name]
            self._retired.discard(name)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        self._prune()
        now = self.clock()
        return {
            name: health.snapshot(now)
            for name, health in self._providers.items()
            if name not in self._retired
        }
