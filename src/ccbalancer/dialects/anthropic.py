"""The Anthropic dialect: bytes pass through untouched.

Requests keep every field the client sent (unknown ones included); only ``model`` may be mapped,
``stream`` is forced on (DESIGN.md section 5), our own ``provider`` field is removed, and
``max_tokens`` is lowered to the provider's ``max_tokens`` when that is set. Per provider, and
only when configured: ``anthropic-beta`` names are filtered (header and body ``anthropic_beta``),
thinking is left out for providers without it, and Claude Code's billing line is dropped from
``system`` for relays that cache by prefix (issue 15, items 5-7). Response
frames are forwarded exactly as received. A 200 that is not an event stream (a JSON error object
or a whole Message from a relay that ignored ``stream``) is turned into events at the end.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccbalancer.dialects.base import (
    BILLING_HEADER_PREFIX,
    DEFAULT_HEADER_OPTIONS,
    SYNTHETIC_SIGNATURE_PREFIX,
    BodyOptions,
    HeaderOptions,
    capped_max_tokens,
)
from ccbalancer.dialects.headers import forwardable
from ccbalancer.errors import error_type_for_status
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import SSEParser

MAX_JSON_BODY = 16 * 1024 * 1024
MIN_THINKING_BUDGET = 1024  # Anthropic rejects a smaller thinking.budget_tokens


class AnthropicDialect:
    kind = "anthropic"
    wants_input_estimate = False

    def url(self, base_url: str, query: str) -> str:
        return f"{base_url}/v1/messages?{query}" if query else f"{base_url}/v1/messages"

    def body(
        self,
        request: dict[str, Any],
        upstream_model: str,
        options: BodyOptions,
        *,
        session: str = "",
    ) -> bytes:
        out = dict(request)
        out.pop("provider", None)
        out["model"] = upstream_model
        out["stream"] = True
        capped = capped_max_tokens(request, options.max_tokens)
        if capped is not None:
            out["max_tokens"] = capped
            _fit_thinking_budget(out, capped)
        if not options.thinking:
            _leave_out_thinking(out)
        if options.strip_billing_header:
            _strip_billing_header(out)
        betas = out.get("anthropic_beta")
        if options.betas.active and isinstance(betas, list):
            out["anthropic_beta"] = options.betas.names(betas)
        messages = out.get("messages")
        if isinstance(messages, list) and _has_synthetic_thinking(messages):
            out["messages"] = [_strip_synthetic(m) for m in messages]
        return orjson.dumps(out)

    def headers(
        self,
        client_headers: dict[str, str],
        credential: str,
        auth_type: str,
        options: HeaderOptions = DEFAULT_HEADER_OPTIONS,
    ) -> dict[str, str]:
        headers = forwardable(client_headers)
        if options.betas.active and "anthropic-beta" in headers:
            kept = options.betas.header(headers["anthropic-beta"])
            if kept:
                headers["anthropic-beta"] = kept
            else:
                del headers["anthropic-beta"]
        headers["content-type"] = "application/json"
        headers.setdefault("anthropic-version", "2023-06-01")
        if credential:
            if auth_type == "auth_token":
                headers["authorization"] = f"Bearer {credential}"
            else:
                headers["x-api-key"] = credential
        return headers

    def decoder(
        self, client_model: str, content_type: str, *, input_estimate: int = 0
    ) -> AnthropicStream | AnthropicWholeBody:
        if "event-stream" in content_type:
            return AnthropicStream()
        return AnthropicWholeBody()  # Anthropic reports real usage up front

    def error(self, status: int, body: bytes) -> tuple[str, str]:
        return anthropic_error(status, body)


class AnthropicStream(SSEParser):
    """An event-stream answer: the SSE parser itself, so each read costs no extra call."""

    __slots__ = ()

    start_usage_estimated = False  # the provider's own message_start usage

    def close(self) -> list[Event]:
        if self.pending:
            raise ValueError("stream ended in the middle of an event")
        return super().close()


class AnthropicWholeBody:
    """A 200 that is not an event stream (a whole Message or an error object from a relay that
    ignored ``stream``): collected, then turned into events at the end."""

    __slots__ = ("_parts", "_size")

    start_usage_estimated = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes, received: float) -> list[Event]:
        self._size += len(chunk)
        if self._size > MAX_JSON_BODY:
            raise ValueError("non-streaming upstream body too large")
        self._parts.append(chunk)
        return []

    def close(self) -> list[Event]:
        return message_to_events(b"".join(self._parts))


def message_to_events(body: bytes) -> list[Event]:
    """A whole JSON answer -> events: an error object becomes an ``error`` event, a Message
    becomes the stream that would have produced it. Anything else is a ``ValueError``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValueError("upstream answered 200 with a body that is neither SSE nor JSON") from None
    if not isinstance(value, dict):
        raise ValueError("upstream answered 200 with JSON that is not an object")
    if value.get("type") == "error" or "error" in value:
        error = value.get("error")
        if not isinstance(error, dict):
            error = {"type": "api_error", "message": str(error)[:200]}
        return [encode_event("error", {"type": "error", "error": error})]
    if value.get("type") != "message":
        raise ValueError("upstream answered 200 with JSON that is not a Message")
    content = value.get("content") or []
    start = dict(value, content=[], stop_reason=None, stop_sequence=None)
    usage = dict(value.get("usage") or {})
    start["usage"] = dict(usage, output_tokens=0)
    events = [encode_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(content):
        events += _block_events(index, block)
    delta = {"stop_reason": value.get("stop_reason"), "stop_sequence": value.get("stop_sequence")}
    events.append(
        encode_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": usage.get("output_tokens", 0)},
            },
        )
    )
    events.append(encode_event("message_stop", {"type": "message_stop"}))
    return events


def _block_events(index: int, block: Any) -> list[Event]:
    """One whole content block as a stream would carry it: clients rebuild text, tool input
    and thinking from the deltas, not from ``content_block_start``."""

    def event(name: str, **fields: Any) -> Event:
        return encode_event(name, {"type": name, "index": index, **fields})

    def delta(**fields: Any) -> Event:
        return event("content_block_delta", delta=fields)

    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        start = dict(block, text="")
        deltas = [delta(type="text_delta", text=block.get("text", ""))]
    elif kind in ("tool_use", "server_tool_use"):
        start = dict(block, input={})
        arguments = orjson.dumps(block.get("input") or {}).decode()
        deltas = [delta(type="input_json_delta", partial_json=arguments)]
    elif kind == "thinking":
        start = dict(block, thinking="", signature="")
        deltas = [
            delta(type="thinking_delta", thinking=block.get("thinking", "")),
            delta(type="signature_delta", signature=block.get("signature", "")),
        ]
    else:  # redacted_thinking, server tool results, unknown kinds: whole in the start event
        start, deltas = block, []
    return [event("content_block_start", content_block=start), *deltas, event("content_block_stop")]


def anthropic_error(status: int, body: bytes) -> tuple[str, str]:
    """(error type, message) from an Anthropic-style error body; tolerant of anything."""
    fallback_type = error_type_for_status(status)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", "replace").strip()
        looks_html = text.lower().startswith(("<!doctype", "<html")) or "<html" in text.lower()
        if looks_html or not text:
            return fallback_type, f"HTTP {status} from upstream (non-JSON body)"
        return fallback_type, text
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            kind = error.get("type")
            return (
                str(kind) if isinstance(kind, str) and kind else fallback_type,
                str(message)[:500] if message else f"HTTP {status} from upstream",
            )
        if isinstance(error, str):
            return fallback_type, error[:500]
        if isinstance(value.get("message"), str):
            return fallback_type, value["message"][:500]
    return fallback_type, f"HTTP {status} from upstream"


def _fit_thinking_budget(out: dict[str, Any], max_tokens: int) -> None:
    """Anthropic wants ``thinking.budget_tokens`` below ``max_tokens`` (and at least 1,024):
    after a cap, lower the budget, or leave thinking out when no valid budget is left."""
    thinking = out.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or budget < max_tokens:
        return
    if max_tokens - 1 >= MIN_THINKING_BUDGET:
        out["thinking"] = {**thinking, "budget_tokens": max_tokens - 1}
    else:
        del out["thinking"]


def _leave_out_thinking(out: dict[str, Any]) -> None:
    """For a provider without extended thinking: no ``thinking`` request, and no context
    edits that only exist for thinking (Claude Code sends ``clear_thinking_*``)."""
    out.pop("thinking", None)
    management = out.get("context_management")
    edits = management.get("edits") if isinstance(management, dict) else None
    if isinstance(management, dict) and isinstance(edits, list):
        kept = [
            e
            for e in edits
            if not (isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking"))
        ]
        if kept:
            out["context_management"] = {**management, "edits": kept}
        else:
            del out["context_management"]


def _strip_billing_header(out: dict[str, Any]) -> None:
    """Claude Code's ``x-anthropic-billing-header`` line changes with every conversation
    (CLAUDE_CODE.md section 4); a relay that caches by prefix then never hits across them."""
    system = out.get("system")
    if isinstance(system, list):
        kept = [b for b in system if not _billing_block(b)]
        if len(kept) != len(system):
            out["system"] = kept
    elif isinstance(system, str) and system.startswith(BILLING_HEADER_PREFIX):
        out["system"] = system.partition("\n")[2].lstrip("\n")


def _billing_block(block: Any) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") == "text"
        and str(block.get("text", "")).startswith(BILLING_HEADER_PREFIX)
    )


def _synthetic(block: Any) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") == "thinking"
        and str(block.get("signature", "")).startswith(SYNTHETIC_SIGNATURE_PREFIX)
    )


def _blocks(message: Any) -> list[Any] | None:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else None


def _has_synthetic_thinking(messages: list[Any]) -> bool:
    return any(_synthetic(block) for m in messages for block in (_blocks(m) or ()))


def _strip_synthetic(message: Any) -> Any:
    blocks = _blocks(message)
    if blocks is None:
        return message
    return dict(message, content=[block for block in blocks if not _synthetic(block)])
