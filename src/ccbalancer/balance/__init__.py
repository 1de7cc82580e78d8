"""Provider selection: which candidates a request tries, in which order.

Sans-IO. ``Planner.plan`` combines the route, provider health, per-provider concurrency,
a selection ``Strategy`` (one module each) and per-session stickiness into a ``Plan``.
"""

from ccbalancer.balance.base import Candidate, Strategy
from ccbalancer.balance.planner import STRATEGIES, Plan, Planner, make_strategy
from ccbalancer.balance.sticky import StickyTable

__all__ = ["STRATEGIES", "Candidate", "Plan", "Planner", "StickyTable", "Strategy", "make_strategy"]
