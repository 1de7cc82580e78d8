"""The two small interfaces every provider format implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ccbalancer.sse.event import Event

# Thinking blocks that ccbalancer makes from an OpenAI provider's reasoning text carry a
# signature with this prefix. Claude Code echoes them back; the Anthropic dialect drops them
# from history, since an Anthropic upstream rejects a signature it did not issue.
SYNTHETIC_SIGNATURE_PREFIX = "ccbalancer-synthetic:"


@dataclass(frozen=True, slots=True)
class BodyOptions:
    """One provider's choices for the body sent to it (from its config entry)."""

    max_tokens: int = 0  # > 0: ask for at most this many output tokens
    reasoning_effort: bool = True  # openai: Anthropic `thinking` -> `reasoning_effort`
    reasoning_history: bool = False  # openai: earlier thinking -> `reasoning_content`


DEFAULT_BODY_OPTIONS = BodyOptions()


def capped_max_tokens(request: dict[str, Any], limit: int) -> int | None:
    """The ``max_tokens`` to send when the provider's limit is ``limit`` (0: none), or None
    when the client's value stands (absent, not an integer, or within the limit)."""
    value = request.get("max_tokens")
    if limit > 0 and isinstance(value, int) and not isinstance(value, bool) and value > limit:
        return limit
    return None


class StreamDecoder(Protocol):
    """Upstream response bytes -> Anthropic events, incrementally.

    ``feed`` returns the events completed by this chunk (never buffers a complete event);
    ``close`` is called at EOF and returns any final events. Raises ``ValueError`` (for
    example ``SSEError``) on bytes it cannot use. An upstream error frame becomes an Anthropic
    ``error`` event; a stream cut short simply ends without ``message_delta`` — deciding that
    it failed is the caller's job.

    ``start_usage_estimated``: the ``message_start`` usage is a local estimate (a converted
    provider reports usage only at the end); it is shown to the client, never recorded.
    """

    start_usage_estimated: bool

    def feed(self, chunk: bytes, received: float) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class Dialect(Protocol):
    """How to talk to one kind of provider."""

    kind: str

    def url(self, base_url: str, query: str) -> str:
        """The upstream URL for a Messages call (``query`` is the client's query string)."""
        ...

    def body(self, request: dict[str, Any], upstream_model: str, options: BodyOptions) -> bytes:
        """The upstream request body. ``request`` is the client's parsed body (never mutated);
        ``upstream_model`` the model to ask for; ``options`` the provider's body settings.
        The upstream call always streams."""
        ...

    def headers(
        self, client_headers: dict[str, str], credential: str, auth_type: str
    ) -> dict[str, str]:
        """Upstream request headers: forwarded client headers plus the credential."""
        ...

    def decoder(self, client_model: str, content_type: str) -> StreamDecoder:
        """A fresh decoder for one response (``content_type`` of the 200 answer)."""
        ...

    def error(self, status: int, body: bytes) -> tuple[str, str]:
        """(Anthropic error type, message) for an error response body. Never raises."""
        ...
