"""Completed answers kept for identical retries: bounded by TTL and by total bytes.

Only successful, untrimmed answers are stored (a failure must never be replayed: the retry
deserves a fresh attempt). Expired entries are swept on every put and lookup; the oldest go
first when the byte cap is reached. Sans-IO apart from the injected clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ccbalancer.sharing.broadcast import Broadcast


class ResponseCache:
    def __init__(self, ttl: float, max_bytes: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Broadcast]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def configure(self, ttl: float, max_bytes: int) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.sweep()

    def get(self, key: str) -> Broadcast | None:
        now = self._clock()
        self._expire_oldest(now)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            self._drop(key)
            return None
        return entry[1]

    def put(self, key: str, broadcast: Broadcast) -> bool:
        if self.ttl <= 0 or not broadcast.succeeded or broadcast.trimmed:
            return False
        if broadcast.bytes > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key)
        now = self._clock()
        self._entries[key] = (now + self.ttl, broadcast)
        self.bytes += broadcast.bytes
        # O(1) amortised on the request path: only the oldest entries can have expired
        self._expire_oldest(now)
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))
        return True

    def sweep(self) -> None:
        """Full scan (the periodic sweeper; also right after a TTL change)."""
        now = self._clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            self._drop(key)
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def _expire_oldest(self, now: float) -> None:
        """Entries are kept in insertion order, which is expiry order while the TTL is
        unchanged: a lookup pays only for what has expired, not for a scan of the cache."""
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            self._drop(key)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def _drop(self, key: str) -> None:
        _, broadcast = self._entries.pop(key)
        self.bytes -= broadcast.bytes
