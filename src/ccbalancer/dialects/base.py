"""The two small interfaces every provider format implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ccbalancer.dialects.betas import NO_BETA_FILTER, BetaFilter
from ccbalancer.sse.event import Event

# Thinking blocks that ccbalancer makes from an OpenAI provider's reasoning text carry a
# signature with this prefix. Claude Code echoes them back; the Anthropic dialect drops them
# from history, since an Anthropic upstream rejects a signature it did not issue.
SYNTHETIC_SIGNATURE_PREFIX = "ccbalancer-synthetic:"

# Claude Code's first system block: attribution that changes per conversation (CLAUDE_CODE.md
# section 4), so it defeats prefix caching wherever it is forwarded.
BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"


@dataclass(frozen=True, slots=True)
class BodyOptions:
    """One provider's choices for the body sent to it (from its config entry)."""

    max_tokens: int = 0  # > 0: ask for at most this many output tokens
    reasoning_effort: bool = True  # openai: Anthropic `thinking` -> `reasoning_effort`
    reasoning_history: bool = False  # openai: earlier thinking -> `reasoning_content`
    thinking: bool = True  # False: no thinking request at all (capabilities.thinking)
    files: bool = False  # openai: base64 PDFs -> `file` parts (capabilities.files)
    strip_billing_header: bool = False  # anthropic: drop Claude Code's billing line
    prompt_cache_key: bool = False  # openai: a per-session `prompt_cache_key`
    cache_control: bool = False  # openai: keep `cache_control` markers on parts
    betas: BetaFilter = NO_BETA_FILTER  # anthropic: the body's `anthropic_beta` list


DEFAULT_BODY_OPTIONS = BodyOptions()


@dataclass(frozen=True, slots=True)
class HeaderOptions:
    """One provider's choices for the headers sent to it (from its config entry)."""

    betas: BetaFilter = NO_BETA_FILTER  # anthropic: the `anthropic-beta` header


DEFAULT_HEADER_OPTIONS = HeaderOptions()


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

    ``start_usage_estimated``: True when ``message_start``'s ``input_tokens`` is the caller's
    local estimate rather than the provider's count (the real numbers come in
    ``message_delta``); records, costs and budgets must then ignore ``message_start`` usage.
    """

    start_usage_estimated: bool

    def feed(self, chunk: bytes, received: float) -> list[Event]: ...

    def close(self) -> list[Event]: ...


class Dialect(Protocol):
    """How to talk to one kind of provider."""

    kind: str
    # True when its decoders show an estimate of input tokens in message_start until the
    # provider reports usage at the end; the caller computes one only then (it costs CPU).
    wants_input_estimate: bool

    def url(self, base_url: str, query: str) -> str:
        """The upstream URL for a Messages call (``query`` is the client's query string)."""
        ...

    def body(
        self,
        request: dict[str, Any],
        upstream_model: str,
        options: BodyOptions,
        *,
        session: str = "",
    ) -> bytes:
        """The upstream request body. ``request`` is the client's parsed body (never mutated);
        ``upstream_model`` the model to ask for; ``options`` the provider's body settings;
        ``session`` the client's session (``session.cache_session``), for a provider-side
        cache key. The upstream call always streams."""
        ...

    def headers(
        self,
        client_headers: dict[str, str],
        credential: str,
        auth_type: str,
        options: HeaderOptions = DEFAULT_HEADER_OPTIONS,
    ) -> dict[str, str]:
        """Upstream request headers: forwarded client headers plus the credential."""
        ...

    def decoder(
        self, client_model: str, content_type: str, *, input_estimate: int = 0
    ) -> StreamDecoder:
        """A fresh decoder for one response (``content_type`` of the 200 answer);
        ``input_estimate`` goes into ``message_start`` where ``wants_input_estimate``."""
        ...

    def error(self, status: int, body: bytes) -> tuple[str, str]:
        """(Anthropic error type, message) for an error response body. Never raises."""
        ...
