"""What the producer of an answer learns, read by every subscriber's request record.

The producer (``relay``, or a follower of another instance) fills one ``Outcome`` per answer;
each subscriber's handler reads it when its request ends. Plain data, no behaviour beyond the
sums that every reader needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ccbalancer.observe.record import Attempt


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them (Anthropic's meaning: ``input_tokens``
    excludes cache reads and writes). Cumulative: a later report replaces an earlier one."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_creation_5m: int = 0  # cache_creation.ephemeral_5m_input_tokens
    cache_creation_1h: int = 0  # cache_creation.ephemeral_1h_input_tokens

    @property
    def total_input(self) -> int:
        """Every prompt token, fresh or from or into the cache."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass(slots=True)
class Outcome:
    provider: str = ""  # the provider whose attempt committed
    attempts: list[Attempt] = field(default_factory=list)
    ttfc: float | None = None  # upstream send -> first content, seconds
    usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    remote: bool = False  # produced by another instance (sharing through Redis)
    recovered: bool = False  # finished on another provider after a mid-stream cut
    not_recovered: str = ""  # why a cut answer could not be finished elsewhere
    kind: str = ""  # the request's kinds ("background", ...; "" for none), issue 17
    rule: str = ""  # the route rule that chose the route ("" when the model name did)
