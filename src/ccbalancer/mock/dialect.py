"""The interface each simulated wire format implements, and the facts of one call.

The server has one code path for every model call; what differs between Anthropic Messages and
OpenAI chat completions — reading the request, rendering a Plan as events or as one JSON body,
error bodies, response headers — sits behind ``MockDialect`` (``anthropic.py``, ``openai.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ccbalancer.mock.act import Turn, user_words, working_directory
from ccbalancer.mock.continuation import Continuation
from ccbalancer.mock.plan import Plan
from ccbalancer.mock.script import Script

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """Per-response facts the renderers need besides the Plan."""

    model: str  # echoed as asked, as real providers do
    request_id: str
    message_id: str
    include_usage: bool  # OpenAI: stream_options.include_usage was requested
    input_tokens: int
    cache_read: int = 0  # of the prompt, read from the cache (Anthropic: not in input_tokens)


class MockDialect(Protocol):
    kind: str  # "anthropic" | "openai"
    id_prefix: str  # of message / completion ids

    def directive_text(self, body: Json) -> str:
        """The text of the last user message, where a ``<<mock ...>>`` directive may sit."""
        ...

    def continuation(self, body: Json) -> Continuation | None:
        """The continuation ``body`` asks for (a prefill or a resume), if it is one."""
        ...

    def refusal(self, body: Json) -> str | None:
        """Why the real API would answer ``body`` with a 400, or None."""
        ...

    def tool_result(self, body: Json) -> str | None:
        """The tool result content the last turn sent back, if it holds one."""
        ...

    def turn(self, body: Json) -> Turn:
        """What ``act`` needs: the user's words, the offered tools, the tool results."""
        ...

    def headers(self, call: Call) -> dict[str, str]:
        """Headers of every model-call response (errors included)."""
        ...

    def events(self, plan: Plan, script: Script, call: Call) -> list[tuple[str | None, bytes]]:
        """The stream as (event name or ``None`` for data-only frames, JSON data) pairs."""
        ...

    def error_event(self, error_type: str, message: str) -> tuple[str | None, bytes]:
        """The in-stream error frame."""
        ...

    def message(self, plan: Plan, call: Call) -> Json:
        """The non-streaming response body."""
        ...

    def error_body(self, status: int, error_type: str | None, message: str, call: Call) -> Json:
        """The JSON body of an error response (``error_type`` ``None``: the status's default)."""
        ...


def content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or the text of its ``text`` blocks/parts
    (Anthropic blocks and OpenAI content parts share that shape)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def messages_of(body: Json) -> list[Json]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def last_message(body: Json, role: str) -> Json | None:
    for message in reversed(messages_of(body)):
        if message.get("role") == role:
            return message
    return None


def prompt_texts(body: Json) -> list[str]:
    """The text of the system prompt and of every message (Claude Code states its working
    directory in the system prompt or, since 2.1.3xx, in a reminder in the first message)."""
    return [content_text(body.get("system"))] + [
        content_text(message.get("content")) for message in messages_of(body)
    ]


def last_user_text(body: Json) -> str:
    """The text of the last user message, where both formats carry ``<<mock …>>`` directives."""
    message = last_message(body, "user")
    return content_text(message.get("content")) if message else ""


def turn_of(
    body: Json,
    tool_names: list[Any],
    tool_result: str | None,
    called: tuple[str, dict[str, object]] | None,
    results: list[str],
) -> Turn:
    """A ``Turn`` from what each wire format reads its own way (the offered tools' names, the
    tool results, the last call) and what both read alike: the user's words, the working
    directory."""
    return Turn(
        words=user_words(last_user_text(body)),
        tools=frozenset(name for name in tool_names if isinstance(name, str)),
        tool_result=tool_result,
        called=called,
        results=tuple(results),
        cwd=working_directory(*prompt_texts(body)),
    )
