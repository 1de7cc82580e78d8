"""Session stickiness: which provider a (route, Claude Code session) last succeeded on.

Sticking keeps the upstream prompt cache warm and thinking signatures valid. Entries are per
route and per session, never global, expire after the configured duration (renewed by each
success) and the table is a bounded LRU so many short sessions cannot grow it without end.
"""

from __future__ import annotations

from collections import OrderedDict


class StickyTable:
    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, route_key: str, session: str, now: float) -> str | None:
        key = (route_key, session)
        entry = self._entries.get(key)
        if entry is None:
            return None
        provider, expires = entry
        if now >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return provider

    def set(self, route_key: str, session: str, provider: str, now: float, duration: float) -> None:
        if duration <= 0:
            return
        key = (route_key, session)
        self._entries[key] = (provider, now + duration)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget(self, route_key: str, session: str, provider: str) -> None:
        """Drop the session's entry only if it still points at ``provider``."""
        key = (route_key, session)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == provider:
            del self._entries[key]
