"""Anthropic Messages request body -> OpenAI Chat Completions request body (PROTOCOL.md c.1).

A pure function over the client's parsed body: it builds a new dict and never mutates its
input (sub-objects such as tool schemas are shared, not copied, because the result is
serialised at once). Claude Code's quirks are handled here: the per-conversation billing block
in ``system[0]`` is dropped (it would defeat the upstream's prefix cache), ``role: system``
messages inside ``messages`` keep their position, and thinking blocks echoed back from earlier
turns are dropped (or, opt-in, sent as DeepSeek's ``reasoning_content``). Everything with no
OpenAI equivalent is dropped rather than rejected: ``cache_control``, ``metadata``,
``context_management``, ``output_config`` (except its effort), ``top_k``, server tools,
``document`` blocks that carry no plain text, and block types this module does not know.
"""

from __future__ import annotations

from typing import Any, TypeGuard

import orjson

from ccbalancer.dialects.base import capped_max_tokens

BILLING_HEADER_PREFIX = "x-anthropic-billing-header:"

# Text blocks of one message become one string: simple servers reject content arrays, and a
# blank line keeps Claude Code's <system-reminder> block visibly apart from the prompt.
_JOIN = "\n\n"

# Anthropic's output_config.effort -> the reasoning_effort values every OpenAI-compatible
# server knows (the newer "xhigh"/"max" are not accepted by older servers).
_EFFORT = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
    "max": "high",
}
_DEFAULT_EFFORT = "medium"
_MAX_STOP_SEQUENCES = 4  # OpenAI rejects more than four `stop` strings
_IMAGE_PLACEHOLDER = "(the tool returned an image; it follows in the next message)"


def to_openai_request(
    request: dict[str, Any],
    upstream_model: str,
    *,
    reasoning_effort: bool = True,
    reasoning_history: bool = False,
    max_tokens_limit: int = 0,
) -> dict[str, Any]:
    """The chat.completions body for ``request``, always streaming with usage.

    ``reasoning_effort``: map Anthropic ``thinking`` (enabled/adaptive) to ``reasoning_effort``
    (``output_config.effort`` when given, else "medium"); turn it off for servers that reject
    the field on non-reasoning models. ``reasoning_history``: send earlier thinking blocks back
    as ``reasoning_content`` (DeepSeek's thinking mode requires it on tool-call turns).
    ``max_tokens_limit``: when > 0, the most output tokens to ask this server for (Claude Code
    asks for 32,000 and more; many servers reject a value above their model's limit).
    """
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": _messages(request, reasoning_history),
    }
    tools = _tools(request.get("tools"))
    if tools:
        body["tools"] = tools
        _tool_choice(request.get("tool_choice"), body)
    max_tokens = request.get("max_tokens")
    # `max_tokens`, not `max_completion_tokens`: OpenAI still accepts it and many compatible
    # servers (vLLM, Ollama, DeepSeek, older gateways) know only this name.
    if _is_int(max_tokens) and max_tokens > 0:
        body["max_tokens"] = capped_max_tokens(request, max_tokens_limit) or max_tokens
    for key in ("temperature", "top_p"):
        value = request.get(key)
        if _is_number(value):
            body[key] = value
    stop = request.get("stop_sequences")
    if isinstance(stop, list):
        strings = [s for s in stop if isinstance(s, str) and s][:_MAX_STOP_SEQUENCES]
        if strings:
            body["stop"] = strings
    if reasoning_effort:
        effort = _reasoning_effort(request)
        if effort is not None:
            body["reasoning_effort"] = effort
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def _messages(request: dict[str, Any], reasoning_history: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _system_text(request.get("system"))
    if system:
        out.append({"role": "system", "content": system})
    messages = request.get("messages")
    if not isinstance(messages, list):
        return out
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            out.extend(_user(content))
        elif role == "assistant":
            converted = _assistant(content, reasoning_history)
            if converted is not None:
                out.append(converted)
        elif role == "system":
            # Claude Code 2.1.x puts environment text here mid-conversation; its per-message
            # output_config has no OpenAI equivalent and is dropped.
            text = _joined_text(content)
            if text:
                out.append({"role": "system", "content": text})
    return out


def _system_text(system: object) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        return ""
    texts = []
    for block in system:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text and not text.startswith(BILLING_HEADER_PREFIX):
                texts.append(text)
    return _JOIN.join(texts)


def _joined_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                texts.append(text)
    return _JOIN.join(texts)


def _user(content: object) -> list[dict[str, Any]]:
    """One user message -> its tool results as ``tool`` messages, then one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        return []
    out: list[dict[str, Any]] = []
    moved_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "tool_result":
            # OpenAI wants the tool answers right after the assistant's tool_calls, so they
            # go before any other content of this message.
            out.append(_tool_message(block, moved_images))
        elif kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                parts.append({"type": "text", "text": text})
        elif kind == "image":
            image = _image_part(block)
            if image is not None:
                parts.append(image)
        elif kind == "document":
            text = _document_text(block)
            if text:
                parts.append({"type": "text", "text": text})
    # `tool` messages cannot carry images, so those from tool results follow as user content.
    parts = moved_images + parts
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def _tool_message(block: dict[str, Any], moved_images: list[dict[str, Any]]) -> dict[str, Any]:
    content = block.get("content")
    texts: list[str] = []
    had_image = False
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for item in content:
            if not isinstance(item, dict):
                continue
            if item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            elif item.get("type") == "image":
                image = _image_part(item)
                if image is not None:
                    moved_images.append(image)
                    had_image = True
    text = _JOIN.join(t for t in texts if t)
    if not text and had_image:
        text = _IMAGE_PLACEHOLDER
    if block.get("is_error") is True:
        # OpenAI has no error flag on tool messages; the model must still learn it failed.
        text = "Error: " + text
    tool_use_id = block.get("tool_use_id")
    return {
        "role": "tool",
        "tool_call_id": tool_use_id if isinstance(tool_use_id, str) else "",
        "content": text,
    }


def _image_part(block: dict[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    elif kind == "url":
        url = source.get("url")
        if isinstance(url, str) and url:
            return {"type": "image_url", "image_url": {"url": url}}
    return None


def _document_text(block: dict[str, Any]) -> str:
    """Plain-text documents survive as text; PDFs and files have no general equivalent."""
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        data = source.get("data")
        if isinstance(data, str):
            return data
    return ""


def _user_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(part["type"] == "text" for part in parts):
        return _JOIN.join(part["text"] for part in parts)
    return parts


def _assistant(content: object, reasoning_history: bool) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                texts.append(text)
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        elif kind == "thinking" and reasoning_history:
            thinking = block.get("thinking")
            if isinstance(thinking, str) and thinking:
                reasoning.append(thinking)
        # redacted_thinking, server tool blocks and unknown types: no OpenAI equivalent
    if not texts and not calls:
        return None  # e.g. a turn that held only thinking: an empty message would be rejected
    message: dict[str, Any] = {"role": "assistant", "content": _JOIN.join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = _JOIN.join(reasoning)
    return message


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    call_id = block.get("id")
    name = block.get("name")
    arguments = block.get("input")
    return {
        # The Anthropic id is kept so the later tool_result still matches it.
        "id": call_id if isinstance(call_id, str) else "",
        "type": "function",
        "function": {
            "name": name if isinstance(name, str) else "",
            "arguments": orjson.dumps(arguments if arguments is not None else {}).decode(),
        },
    }


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        return []
    out = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        # Server tools (web_search_*, code_execution_*, ...) carry a versioned `type` and no
        # input_schema; nothing on an OpenAI upstream could run them.
        if tool.get("type") not in (None, "custom"):
            continue
        name = tool.get("name")
        schema = tool.get("input_schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            continue
        function: dict[str, Any] = {"name": name}
        description = tool.get("description")
        if isinstance(description, str):
            function["description"] = description
        function["parameters"] = schema
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: object, body: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if choice.get("disable_parallel_tool_use") is True:
        body["parallel_tool_calls"] = False


def _reasoning_effort(request: dict[str, Any]) -> str | None:
    thinking = request.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return None
    config = request.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    return _EFFORT.get(effort, _DEFAULT_EFFORT) if isinstance(effort, str) else _DEFAULT_EFFORT


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
