"""The memory that request bodies in flight may hold, all requests together (issue 14, item 4).

A JSON body costs far more parsed than raw: 31 MB of tiny objects became ~520 MB of Python
dicts. Each request reserves what its body really costs (``proxy.body`` measures it) and gives
it back when it lets go of the body: a follower or a cache hit at once, a leader when its call
commits (``Job.release``) or ends. A reservation that would pass the limit is refused, and the
request is answered 429 before it can allocate. The limit comes with each request's config
snapshot, so a reload changes it for new requests only. Sans-IO: plain counting on the loop.
"""

from __future__ import annotations


class Lease:
    """One request's share of the budget; ``release`` is idempotent."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget: BodyBudget | None = budget
        self.size = 0

    def resize(self, size: int, limit: int) -> bool:
        """Hold ``size`` bytes from now on. Growing past ``limit`` (counting every other
        request's share) is refused: the lease keeps its old size and this returns False."""
        budget = self._budget
        if budget is None:
            return False
        grow = size - self.size
        if grow > 0 and budget.used + grow > limit:
            return False
        budget.used += grow
        self.size = size
        return True

    def keep(self, size: int) -> None:
        """Hold only ``size`` bytes from now on (a leader that lets go of its parsed body but
        keeps the raw bytes for a possible continuation); 0 gives everything back."""
        if size <= 0:
            self.release()
        elif self._budget is not None and size < self.size:
            self._budget.used -= self.size - size
            self.size = size

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.used -= self.size
            self.size = 0


class BodyBudget:
    """Bytes held by request bodies in flight (raw while reading, then parsed)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    def lease(self) -> Lease:
        return Lease(self)
