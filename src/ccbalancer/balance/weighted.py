"""``weighted``: smooth weighted round robin (nginx's algorithm), per route and priority.

Each plan adds every candidate's weight to its running score, picks the highest score and
subtracts the tier's total weight from it. Over any run the picks follow the weights exactly
and are spread out (weights 3:1 give A A B A, never B B). The rest of the tier follows in
descending score order, the next picks to come. Scores of providers that drop out of a tier
(unhealthy, full) are discarded, so state stays bounded by the config.
"""

from __future__ import annotations

from ccbalancer.balance.base import Candidate, tier_key


class WeightedStrategy:
    def __init__(self) -> None:
        self._scores: dict[tuple[str, int], dict[tuple[str, str], float]] = {}

    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        if not tier:
            return []
        key = tier_key(route_key, tier)
        old = self._scores.get(key, {})
        # The same provider may appear twice with different models: score each entry.
        scores = {(c.provider, c.model): old.get((c.provider, c.model), 0.0) for c in tier}
        for c in tier:
            scores[(c.provider, c.model)] += c.weight
        ranked = sorted(tier, key=lambda c: -scores[(c.provider, c.model)])  # stable: file order
        chosen = ranked[0]
        scores[(chosen.provider, chosen.model)] -= sum(c.weight for c in tier)
        self._scores[key] = scores
        return ranked
