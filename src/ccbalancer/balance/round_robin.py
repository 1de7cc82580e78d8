"""``round_robin``: each plan of a route starts one place further along its tier.

The rotation counter is kept per route and priority level, so a fallback tier rotates on its
own and one route's traffic does not shift another's.
"""

from __future__ import annotations

from ccbalancer.balance.base import Candidate, tier_key


class RoundRobinStrategy:
    def __init__(self) -> None:
        self._next: dict[tuple[str, int], int] = {}

    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        if not tier:
            return []
        key = tier_key(route_key, tier)
        start = self._next.get(key, 0) % len(tier)
        self._next[key] = start + 1
        return tier[start:] + tier[:start]
