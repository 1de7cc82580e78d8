"""How much room each provider says it has left, kept per provider (issue 17).

``RateLimits.observe`` is told every upstream response's status and headers (the relay's
``on_headers`` hook) and keeps the latest ``Reading`` per provider
(``upstream.ratelimit_headers``). The planner asks ``wait`` (how long a provider has no room
for a request: requests or output tokens at 0, input tokens below the request's estimate, a
429 or a rejected subscription status until its reset; 0 when it has room) and ``room`` (the
fraction left of its tightest limit, to prefer the one with more). Sans-IO: both clocks are
injected (monotonic for deadlines, wall time for the absolute resets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from ccbalancer.upstream.ratelimit_headers import (
    Reading,
    input_side,
    parse,
    reset_wait,
    retry_after,
)


class RateLimits:
    """The latest reading per provider, by name (outlives config snapshots, like health)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._readings: dict[str, Reading] = {}

    def observe(self, provider: str, status: int, headers: Iterable[tuple[str, str]]) -> None:
        """One upstream response's headers (success or error), as soon as they arrive."""
        headers = list(headers)
        now, wall = self.clock(), self.wall()
        reading = parse(headers, now, wall)
        if status == 429:  # out of room until retry-after, else until the exhausted limit resets
            wait = retry_after(headers, wall)
            if wait is None:
                wait = reset_wait(headers, wall)
            if wait is not None:
                reading = reading or Reading(now)
                reading.blocked_until = max(reading.blocked_until, now + wait)
        if reading is not None:
            self._readings[provider] = reading
        elif status == 200:
            self._readings.pop(provider, None)  # it stopped reporting limits: nothing is known

    def retain(self, providers: Iterable[str]) -> None:
        """Forget providers that left the config."""
        keep = set(providers)
        for name in [n for n in self._readings if n not in keep]:
            del self._readings[name]

    def wait(self, provider: str, now: float, input_tokens: Callable[[], int]) -> float:
        """Seconds ``provider`` has no room for a request of ``input_tokens()`` (called only
        when a live token limit has to be compared); 0 when it has room or nothing is known."""
        reading = self._readings.get(provider)
        if reading is None:
            return 0.0
        waits = [reading.blocked_until - now]
        for name, lim in reading.limits.items():
            until = reading.expiry(lim.reset_at)
            if until <= now or lim.remaining is None:
                continue
            if name.startswith(("requests", "output-tokens")):
                full = lim.remaining == 0
            elif input_side(name):
                full = lim.remaining == 0 or lim.remaining < input_tokens()
            else:
                full = False
            if full:
                waits.append(until - now)
        return max(0.0, *waits)

    def room(self, provider: str, now: float) -> float | None:
        """The fraction left of the provider's tightest live limit; None when unknown."""
        reading = self._readings.get(provider)
        if reading is None:
            return None
        fractions = [
            fraction
            for lim in reading.limits.values()
            if (fraction := lim.fraction) is not None and reading.expiry(lim.reset_at) > now
        ]
        if reading.utilization is not None and reading.expiry(reading.unified_reset_at) > now:
            fractions.append(1.0 - reading.utilization)
        return min(fractions) if fractions else None

    def snapshot(self, provider: str, now: float) -> dict[str, Any] | None:
        """For ``/providers`` and the dashboard: the room left, per limit."""
        reading = self._readings.get(provider)
        if reading is None:
            return None
        limits = {
            name: {
                "remaining": lim.remaining,
                "limit": lim.limit,
                "reset_in_s": None if lim.reset_at is None else _left(lim.reset_at, now),
            }
            for name, lim in reading.limits.items()
        }
        unified = None
        if reading.unified_status or reading.utilization is not None:
            unified = {
                "status": reading.unified_status or None,
                "utilization": reading.utilization,
                "reset_in_s": None
                if reading.unified_reset_at is None
                else _left(reading.unified_reset_at, now),
            }
        room = self.room(provider, now)
        return {
            "room": None if room is None else round(room, 3),
            # for any request (a token limit counts only at 0: the size of the next is unknown)
            "no_room_for_s": round(self.wait(provider, now, lambda: 0), 1),
            "seen_s_ago": round(max(0.0, now - reading.seen), 1),
            "limits": limits,
            "unified": unified,
        }


def _left(at: float, now: float) -> float:
    return round(max(0.0, at - now), 1)
