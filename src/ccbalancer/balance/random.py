"""``random``: a uniform shuffle of the tier from an injected ``random.Random``."""

from __future__ import annotations

import random

from ccbalancer.balance.base import Candidate


class RandomStrategy:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        return self._rng.sample(tier, len(tier))
