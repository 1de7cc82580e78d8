"""``priority``: the tier in file order, so the first listed provider takes all traffic."""

from __future__ import annotations

from ccbalancer.balance.base import Candidate


class PriorityStrategy:
    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        return list(tier)
