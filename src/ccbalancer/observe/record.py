"""The summary of one request: what the log line, the metrics and the history row are made of."""

from __future__ import annotations

from dataclasses import dataclass, field

# Every string a client can choose (a model name, an error text quoting its input) is cut to
# this before it reaches the log, the dashboard's ring or the history (issue 14, item 5).
MAX_STORED_CHARS = 512


def capped(text: str, limit: int = MAX_STORED_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(slots=True)
class Attempt:
    provider: str
    outcome: str  # ok | continued | failover | client_error | mid_stream | cancelled
    reason: str = ""  # failure reason class: connect, timeout, status, stream_error, protocol
    detail: str = ""  # a few words; never a key or a body dump
    status: int | None = None
    ttfb: float | None = None  # seconds from send to response headers
    # a continuation of a cut answer (mid-stream recovery)
    mode: str = ""  # prefill | resume
    at: str = ""  # where the client's message was cut
    why: str = ""  # what cut it
    overlap: int = 0  # characters of repeated text removed
    gap: float | None = None  # seconds from the cut to the continuation's first content
    estimated: bool = False  # the cut provider's output tokens were estimated
    input_tokens: int = 0  # what a continuation itself consumed and produced (its cost)
    output_tokens: int = 0
    hedged: bool = False  # started beside a slow first candidate (settings.hedge_after)


@dataclass(frozen=True, slots=True)
class Charged:
    """What one provider made of an answer and what it costs there (``accounting``): one
    part for a plain answer; a recovered one has a part per provider that continued it."""

    provider: str
    fresh_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int
    usd: float | None  # None: no known price at this provider


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    model: str
    started: float  # wall clock (time.time()) at admission
    stream: bool = True
    role: str = "leader"  # leader | follower | cache | none (sharing off)
    status: int = 0  # HTTP status the client got
    outcome: str = "ok"  # ok | recovered | error | mid_stream_error | client_error | cancelled
    provider: str = ""  # the provider that served it ("" if none)
    attempts: list[Attempt] = field(default_factory=list)
    ttfb: float | None = None  # seconds: admission -> first byte written to the client
    ttfc: float | None = None  # seconds: upstream send -> first content block (leader only)
    duration: float = 0.0
    events: int = 0
    bytes: int = 0
    # how the answer's events were spaced as they arrived (leader only): a stream that stuttered
    gaps: int = 0  # gaps between consecutive events
    gap_p50: float | None = None  # seconds, the median gap
    gap_max: float | None = None  # seconds, the longest
    input_tokens: int = 0  # every prompt token: fresh, read from and written to the cache
    output_tokens: int = 0
    stop_reason: str | None = None
    error: str = ""  # what the client was told, in a few words
    kind: str = ""  # the request's kinds, comma-separated ("" for none): balance.kinds
    rule: str = ""  # the route rule that chose the route ("route_rules[0]"; "" = the model's)
    client: str = ""  # the configured client's name (``anonymous`` without one); never a key
    session: str = ""  # Claude Code's session id, else the client's name (or key's digest)
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0  # 5-minute and 1-hour writes
    cache_write_1h_tokens: int = 0
    cost_usd: float | None = None  # None: no upstream call of its own, or no known price
    charged: list[Charged] = field(default_factory=list)  # per provider; empty: no call

    def bound(self) -> None:
        """Cap the free-text fields (see ``MAX_STORED_CHARS``)."""
        self.model = capped(self.model)
        self.error = capped(self.error)
        self.provider = capped(self.provider)
        self.session = capped(self.session)  # a client's header
        if self.stop_reason is not None:
            self.stop_reason = capped(self.stop_reason)
        for attempt in self.attempts:
            attempt.detail = capped(attempt.detail)


@dataclass(slots=True)
class DailyUsage:
    """What one client added to one UTC day (a request, or an answer's usage), kept by the
    history in a table of its own so that budgets survive a restart."""

    client: str
    day: str  # 2026-12-07
    requests: int = 0
    fresh_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
