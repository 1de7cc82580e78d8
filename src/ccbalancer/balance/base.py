"""What a selection strategy sees and promises: ``Candidate`` and the ``Strategy`` protocol.

A strategy orders one priority tier of candidates that can all take the request right now;
the planner has already removed unhealthy, disabled and full providers, and applies
stickiness afterwards. Strategies keep their own per-route state and do no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Candidate:
    provider: str
    model: str  # "passthrough" or the model name to send to this provider
    priority: int
    weight: float


class Strategy(Protocol):
    def order(self, route_key: str, tier: list[Candidate]) -> list[Candidate]:
        """``tier`` in the order to try it; one priority level, every member available."""
        ...


def tier_key(route_key: str, tier: list[Candidate]) -> tuple[str, int]:
    """Per-route, per-priority state key for stateful strategies."""
    return route_key, tier[0].priority if tier else 0
