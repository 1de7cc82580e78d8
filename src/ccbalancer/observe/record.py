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
    outcome: str  # "ok" | "failover" | "client_error" | "mid_stream" | "cancelled"
    reason: str = ""  # failure reason class: connect, timeout, status, stream_error, protocol
    detail: str = ""  # a few words; never a key or a body dump
    status: int | None = None
    ttfb: float | None = None  # seconds from send to response headers


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    model: str
    started: float  # wall clock (time.time()) at admission
    stream: bool = True
    role: str = "leader"  # leader | follower | cache | none (sharing off)
    status: int = 0  # HTTP status the client got
    outcome: str = "ok"  # ok | error | mid_stream_error | client_error | cancelled
    provider: str = ""  # the provider that served it ("" if none)
    attempts: list[Attempt] = field(default_factory=list)
    ttfb: float | None = None  # seconds: admission -> first byte written to the client
    ttfc: float | None = None  # seconds: upstream send -> first content block (leader only)
    duration: float = 0.0
    events: int = 0
    bytes: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    error: str = ""  # what the client was told, in a few words

    def bound(self) -> None:
        """Cap the free-text fields (see ``MAX_STORED_CHARS``)."""
        self.model = capped(self.model)
        self.error = capped(self.error)
        self.provider = capped(self.provider)
        if self.stop_reason is not None:
            self.stop_reason = capped(self.stop_reason)
        for attempt in self.attempts:
            attempt.detail = capped(attempt.detail)
