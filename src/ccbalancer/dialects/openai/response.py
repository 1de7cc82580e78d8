"""A whole ``chat.completion`` -> the chunk that the stream translator would have received.

Some OpenAI-compatible servers ignore ``stream: true`` and answer with one JSON document
(PROTOCOL.md c.2, "Non-streaming OpenAI response"). Rewriting it as a single chunk (reasoning,
content as a string or a list of parts, tool calls with complete arguments, finish_reason and
usage) lets the same ``OpenAIStreamTranslator`` produce the Anthropic event sequence, so both
paths share every mapping rule. Arguments that are not valid JSON are kept as a string under
``RAW_ARGUMENTS_KEY`` instead of failing a request the model did answer.
"""

from __future__ import annotations

from typing import Any

import orjson

RAW_ARGUMENTS_KEY = "_raw_arguments"


def completion_chunks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Chunks equivalent to ``body``; a body that is not a completion is returned as is
    (an error object, or a server that sent one stream chunk as JSON)."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if body.get("error") or not isinstance(choice, dict) or not isinstance(message, dict):
        return [body]
    delta: dict[str, Any] = {}
    for key in ("reasoning_content", "reasoning", "refusal"):
        if isinstance(message.get(key), str):
            delta[key] = message[key]
    content = message.get("content")
    if isinstance(content, str | list):  # a list of parts: Mistral's reasoning models
        delta["content"] = content
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [
            _tool_call(index, call) for index, call in enumerate(calls) if isinstance(call, dict)
        ]
    reason = choice.get("finish_reason")
    if not isinstance(reason, str) or not reason:
        # A complete document is a finished answer even when a server omits the reason.
        reason = "tool_calls" if delta.get("tool_calls") else "stop"
    return [
        {
            "id": body.get("id"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": reason}],
            "usage": body.get("usage"),
        }
    ]


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict):
        function = {}
    return {
        "index": index,
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function.get("name"), "arguments": _arguments(function)},
    }


def _arguments(function: dict[str, Any]) -> str:
    arguments = function.get("arguments")
    if isinstance(arguments, dict):
        return orjson.dumps(arguments).decode()
    if not isinstance(arguments, str) or not arguments.strip():
        return ""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return arguments
    return orjson.dumps({RAW_ARGUMENTS_KEY: arguments}).decode()
