"""Session stickiness: which provider a (route, Claude Code session) last succeeded on.

Sticking keeps the upstream prompt cache warm and thinking signatures valid. Entries are per
route and per session, never global, expire after the configured duration (renewed by each
success) and the table is a bounded LRU so many short sessions cannot grow it without end.
An entry is *warm* when the session's last answer there read from the provider's prompt cache
(issue 17): the planner then keeps the session there through one-off failures and answers
elsewhere, and lets it go only when the provider is unavailable or out of rate-limit room.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple


class Pin(NamedTuple):
    provider: str
    expires: float
    warm: bool


class StickyTable:
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], Pin] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def pin(self, route_key: str, session: str, now: float) -> Pin | None:
        key = (route_key, session)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry

    def get(self, route_key: str, session: str, now: float) -> str | None:
        entry = self.pin(route_key, session, now)
        return None if entry is None else entry.provider

    def set(
        self,
        route_key: str,
        session: str,
        provider: str,
        now: float,
        duration: float,
        warm: bool = False,
    ) -> None:
        if duration <= 0:
            return
        key = (route_key, session)
        self._entries[key] = Pin(provider, now + duration, warm)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, route_key: str, session: str, provider: str) -> None:
        """Drop the session's entry only if it still points at ``provider``."""
        key = (route_key, session)
        entry = self._entries.get(key)
        if entry is not None and entry.provider == provider:
            del self._entries[key]
