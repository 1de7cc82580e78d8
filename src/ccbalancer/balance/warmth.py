"""Per session, how much of each prompt came from the provider's cache, and what a move cost.

A Claude Code session's prompt cache lives at one provider; moving the session elsewhere
starts a cold cache. ``CacheWarmth.answered`` is told every answer a session got (per route,
as stickiness is) and keeps the hit rate of each *stint*, a run of answers from one provider:
cache-read tokens over all prompt tokens. A new provider starts a new stint, so the hit rate
before and after every move stays visible (the last ``STINTS`` of them). In memory and bounded:
an LRU of ``max_sessions`` sessions. Sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

STINTS = 4  # stints kept per session: the current one and the three before it


@dataclass(slots=True)
class Stint:
    provider: str
    answers: int = 0
    read: int = 0  # cache_read_input_tokens, summed
    prompt: int = 0  # every prompt token (fresh, cache read, cache write), summed

    @property
    def hit_rate(self) -> float | None:
        return round(self.read / self.prompt, 3) if self.prompt else None

    def view(self) -> dict[str, Any]:
        return {"provider": self.provider, "answers": self.answers, "hit_rate": self.hit_rate}


@dataclass(slots=True)
class SessionCache:
    route: str
    session: str
    last: float  # wall-clock time of the last answer
    stints: deque[Stint] = field(default_factory=lambda: deque(maxlen=STINTS))
    moves: int = 0


class CacheWarmth:
    def __init__(self, max_sessions: int = 1000) -> None:
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[tuple[str, str], SessionCache] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def answered(
        self, route: str, session: str, provider: str, read: int, prompt: int, now: float
    ) -> bool:
        """Count one answer (``read`` of its ``prompt`` tokens from the cache); True when it
        came from another provider than the session's last answer."""
        key = (route, session)
        entry = self._sessions.get(key)
        if entry is None:
            entry = self._sessions[key] = SessionCache(route, session, now)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        moved = bool(entry.stints) and entry.stints[-1].provider != provider
        if moved:
            entry.moves += 1
        if not entry.stints or moved:
            entry.stints.append(Stint(provider))
        stint = entry.stints[-1]
        stint.answers += 1
        stint.read += read
        stint.prompt += prompt
        entry.last = now
        return moved

    def rows(self, limit: int | None = 50) -> list[dict[str, Any]]:
        """The most recently active sessions first (``limit`` of them; None: all): their
        provider now, the hit rate there, and for the last move the hit rate before (at the
        old provider) and after."""
        entries = list(self._sessions.values())
        if limit is not None:
            entries = entries[-limit:]
        out = []
        for entry in entries[::-1]:
            stints = list(entry.stints)
            current = stints[-1]
            row: dict[str, Any] = {
                "session": entry.session,
                "route": entry.route,
                "provider": current.provider,
                "answers": sum(s.answers for s in stints),
                "hit_rate": current.hit_rate,
                "moves": entry.moves,
                "last": entry.last,
                "stints": [s.view() for s in stints],
            }
            if len(stints) > 1:
                before = stints[-2]
                row["last_move"] = {
                    "from": before.provider,
                    "to": current.provider,
                    "hit_rate_before": before.hit_rate,
                    "hit_rate_after": current.hit_rate,
                }
            out.append(row)
        return out
