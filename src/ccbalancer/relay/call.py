"""What one answer needs from its request, fixed when the request is admitted.

A call keeps the config snapshot it started with, so a reload never changes a call in flight.
The request body is the large part (Claude Code sends 100-500 KB): the parsed form is let go
of as soon as an attempt commits, since no later attempt can start from the beginning. Only
when the answer could still be finished elsewhere (mid-stream recovery, ``recoverable``) are
the raw bytes and the headers kept until the stream ends: a continuation is built from them.
"""

from __future__ import annotations

from collections.abc import Callable
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
    raw: bytes = b""  # the body as received
    recoverable: bool = False  # set by the relay: a continuation could be asked for
    # told the bytes still kept (the in-flight body budget, ccbalancer.budget: Lease.keep)
    on_release: Callable[[int], None] = lambda kept: None

    def release(self, ended: bool = False) -> None:
        """Drop what no later attempt needs once an attempt has committed: the parsed body;
        the raw bytes and headers too unless a continuation may need them. ``ended``: the
        call is over, everything goes (the body budget is given back whatever happened)."""
        self.body = {}
        if ended or not self.recoverable:
            self.headers = {}
            self.raw = b""
        self.on_release(len(self.raw))
