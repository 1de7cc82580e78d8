"""What one upstream call needs, fixed when the request is admitted.

A job keeps the config snapshot it started with, so a reload never changes a call in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ccbalancer.config.schema import Config
from ccbalancer.observe.record import Attempt


@dataclass(slots=True)
class Outcome:
    """Facts the producer learns, read by every subscriber's request record."""

    provider: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    ttfc: float | None = None  # send -> first content block, seconds
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    events: int = 0


@dataclass(slots=True)
class Job:
    config: Config
    body: dict[str, Any]
    model: str
    query: str
    headers: dict[str, str]  # client headers, lower-case names
    credential: str  # the client's own credential (sent only to passthrough providers)
    session: str  # stickiness key: Claude Code session id, else a hash of the credential
    forced: str | None
    request_id: str
    outcome: Outcome = field(default_factory=Outcome)
    # gives the body's share of the in-flight body budget back (ccbalancer.budget); idempotent
    on_release: Callable[[], None] = lambda: None

    def release(self) -> None:
        """Drop the request body and headers once an attempt has committed (no later attempt
        needs them) or the call has ended: a long stream should not hold a request of
        hundreds of KB all along, nor count it against the body budget."""
        self.body = {}
        self.headers = {}
        self.on_release()
