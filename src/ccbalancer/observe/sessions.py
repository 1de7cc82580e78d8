"""The Claude Code sessions seen lately, for the dashboard: what each cost, its cache hit rate.

A session is the request record's ``session`` (Claude Code's session id, else the client's
name). Only requests that made an upstream call of their own count (a shared or replayed
answer cost nothing more). Bounded: the ``size`` sessions used most recently are kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ccbalancer.observe.record import RequestRecord

_UPSTREAM_ROLES = ("leader", "none")


@dataclass(slots=True)
class _Session:
    client: str
    model: str
    first: float
    provider: str = ""  # the provider that served its last answer
    last: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    unpriced: int = 0  # answers whose model had no known price


class RecentSessions:
    def __init__(self, size: int = 200) -> None:
        self._size = size
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def add(self, record: RequestRecord) -> None:
        if not record.session or record.role not in _UPSTREAM_ROLES or not record.provider:
            return
        session = self._sessions.get(record.session)
        if session is None:
            session = self._sessions[record.session] = _Session(
                record.client, record.model, record.started
            )
            if len(self._sessions) > self._size:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(record.session)
        session.model = record.model
        session.provider = record.provider
        session.last = record.started + record.duration
        session.requests += 1
        session.prompt_tokens += record.input_tokens
        session.cache_read_tokens += record.cache_read_tokens
        session.output_tokens += record.output_tokens
        if record.cost_usd is None:
            session.unpriced += 1
        else:
            session.usd += record.cost_usd

    def rows(self, limit: int = 30, client: str | None = None) -> list[dict[str, Any]]:
        """The most recently used first; of every client, or of ``client`` only."""
        out = []
        keys = [k for k in reversed(self._sessions) if client in (None, self._sessions[k].client)]
        for key in keys[:limit]:
            s = self._sessions[key]
            out.append(
                {
                    "session": key,
                    "client": s.client,
                    "model": s.model,
                    "provider": s.provider,
                    "first": s.first,
                    "last": s.last,
                    "requests": s.requests,
                    "prompt_tokens": s.prompt_tokens,
                    "output_tokens": s.output_tokens,
                    "cache_hit_rate": (
                        round(s.cache_read_tokens / s.prompt_tokens, 4) if s.prompt_tokens else None
                    ),
                    "usd": round(s.usd, 6),
                    "unpriced": s.unpriced,
                }
            )
        return out
