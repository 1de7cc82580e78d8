"""``least_latency``: lowest EWMA of time to first content first, with some exploration.

Providers never measured go first (in file order) so they get measured. A provider that was
slow keeps its old EWMA until it is used again, so with probability ``epsilon`` one random
member of the tier is put first: a recovered provider is measured again and can win back
traffic. The EWMA itself lives in ``HealthRegistry``.
"""

from __future__ import annotations

import random

from ccbalancer.balance.base import Candidate
from ccbalancer.upstream.health import HealthRegistry


class LeastLatencyStrategy:
    def __init__(self, health: HealthRegistry, rng: random.Random, epsilon: float = 0.1) -> None:
        self._health = health
        self._rng = rng
        self.epsilon = epsilon

    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        def latency(c: Candidate) -> float:
            ewma = self._health.get(c.provider).ewma_ttfc
            return -1.0 if ewma is None else ewma

        ranked = sorted(tier, key=latency)
        if len(ranked) > 1 and self._rng.random() < self.epsilon:
            ranked.insert(0, ranked.pop(self._rng.randrange(len(ranked))))
        return ranked
