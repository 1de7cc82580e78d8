"""OpenAI-style error bodies and in-stream error frames -> Anthropic (error type, message).

Error bodies from OpenAI-compatible servers range from OpenAI's ``{"error": {...}}`` through
vLLM's top-level ``{"object": "error", "message": ...}`` to a gateway's HTML page. The type
follows the HTTP status exactly as Anthropic's does (``ccbalancer.errors`` holds that table);
the message is the upstream's own, cleaned: one line, key-like tokens redacted, at most
``MAX_MESSAGE_CHARS`` characters, so nothing long or secret reaches a client or a log. Nothing
here raises: a body that cannot be read still yields a useful message.
"""

from __future__ import annotations

import re

import orjson

from ccbalancer.errors import error_type_for_status

MAX_MESSAGE_CHARS = 200

_WHITESPACE = re.compile(r"\s+")
# OpenAI echoes (partly masked) keys in 401 messages: "Incorrect API key provided: sk-pr***".
_SECRET = re.compile(r"\b(?:sk|pk|rk|key)-[\w\-\*\.]{5,}[\w\*]|\bBearer\s+\S+", re.IGNORECASE)
_OVERLOAD_WORDS = ("overload", "rate limit", "rate_limit", "capacity", "too many requests")
_OVERLOAD_CODES = frozenset({429, 503, 529, "429", "503", "529"})


def map_openai_error(status: int, body: bytes) -> tuple[str, str]:
    """(Anthropic error type, message) for a non-2xx OpenAI-compatible response."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        kind = "non-JSON body" if body.strip() else "empty body"
        return error_type_for_status(status), f"HTTP {status} from upstream ({kind})"
    error = value.get("error", value) if isinstance(value, dict) else value
    message, code, _ = _error_fields(error)
    if isinstance(code, str) and code and code.lower() not in message.lower():
        message = f"{message} ({code})" if message else code
    return error_type_for_status(status), clean_message(message) or f"HTTP {status} from upstream"


def map_stream_error(error: object) -> tuple[str, str]:
    """(type, message) for an ``{"error": ...}`` frame received after a 200.

    Only ``overloaded_error`` and ``api_error`` make sense mid-stream: Claude Code answers
    both with an immediate non-streaming retry (CLAUDE_CODE.md section 6).
    """
    message, code, kind = _error_fields(error)
    text = f"{message} {code} {kind}".lower()
    overloaded = code in _OVERLOAD_CODES or any(word in text for word in _OVERLOAD_WORDS)
    return (
        "overloaded_error" if overloaded else "api_error",
        clean_message(message) or "upstream stream error",
    )


def clean_message(text: str) -> str:
    """One line, secrets redacted, at most ``MAX_MESSAGE_CHARS`` characters."""
    text = _SECRET.sub("[redacted]", _WHITESPACE.sub(" ", text).strip())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _error_fields(error: object) -> tuple[str, str | int | None, str]:
    """(message, code, type) from the shapes servers use for an error object: OpenAI's
    ``{"message","type","code"}``, vLLM's top-level variant, FastAPI's ``detail``, a string."""
    if isinstance(error, str):
        return error, None, ""
    if not isinstance(error, dict):
        return "", None, ""
    message = next(
        (v for k in ("message", "detail", "error") if isinstance(v := error.get(k), str) and v),
        "",
    )
    code = error.get("code")
    if not isinstance(code, str | int) or isinstance(code, bool):
        code = None
    kind = error.get("type")
    return message, code, kind if isinstance(kind, str) else ""
