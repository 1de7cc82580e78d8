"""What one answer needs from its request, fixed when the request is admitted.

A call keeps the config snapshot it started with, so a reload never changes a call in flight.
The request body and headers are the large part (Claude Code sends 100-500 KB): they are let
go of as soon as an attempt commits, since no later attempt can start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ccbalancer.config.schema import Config


@dataclass(slots=True)
class Call:
    config: Config
    body: dict[str, Any]
    model: str
    query: str
    headers: dict[str, str]  # client headers, lower-case names
    credential: str  # the client's own credential (sent only to passthrough providers)
    session: str  # stickiness key: dialects.session.session_key
    forced: str | None  # a provider named in the body: only that one is tried
    request_id: str

    def release(self) -> None:
        """Drop the request body and headers once an attempt has committed."""
        self.body = {}
        self.headers = {}
