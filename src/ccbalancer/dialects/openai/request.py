"""Anthropic Messages request body -> OpenAI Chat Completions request body (PROTOCOL.md c.1).

A pure function over the client's parsed body: it builds a new dict and never mutates its
input (sub-objects such as tool schemas are shared, not copied, because the result is
serialised at once). Claude Code's quirks are handled here: the per-conversation billing block
in ``system[0]`` is dropped (it would defeat the upstream's prefix cache), ``role: system``
messages inside ``messages`` keep their position, and thinking blocks echoed back from earlier
turns are dropped (or, opt-in, sent as DeepSeek's ``reasoning_content``). Fields that only
steer Anthropic's API are left out: ``metadata``, ``context_management``, ``output_config``
(except its effort), ``top_k``, and ``cache_control`` unless the provider keeps it.

Content is never dropped silently (issue 15, item 4): a request holding blocks with no OpenAI
form (server tools and their history blocks, PDFs by URL or file id, PDFs for a provider
without files, unknown block types) raises ``Untranslatable``, naming them, before anything is
built; ``capabilities.refused`` gives the relay the same answer up front, so it skips such a
provider instead. User content is converted in ``content``.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeGuard

import orjson

from ccbalancer.dialects.base import BILLING_HEADER_PREFIX, capped_max_tokens
from ccbalancer.dialects.capabilities import Capabilities, refused, request_needs
from ccbalancer.dialects.openai.content import JOIN, Content

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
_PROMPT_CACHE_KEY_PREFIX = "ccb-"


class Untranslatable(ValueError):
    """The request holds content this provider cannot be sent (``labels`` names it)."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__("no OpenAI form for: " + ", ".join(labels))
        self.labels = labels


def to_openai_request(
    request: dict[str, Any],
    upstream_model: str,
    *,
    reasoning_effort: bool = True,
    reasoning_history: bool = False,
    max_tokens_limit: int = 0,
    files: bool = False,
    cache_control: bool = False,
    cache_key: str = "",
) -> dict[str, Any]:
    """The chat.completions body for ``request``, always streaming with usage.

    ``reasoning_effort``: map Anthropic ``thinking`` (enabled/adaptive) to ``reasoning_effort``
    (``output_config.effort`` when given, else "medium"); turn it off for servers that reject
    the field on non-reasoning models. ``reasoning_history``: send earlier thinking blocks back
    as ``reasoning_content`` (DeepSeek's thinking mode requires it on tool-call turns).
    ``max_tokens_limit``: when > 0, the most output tokens to ask this server for (Claude Code
    asks for 32,000 and more; many servers reject a value above their model's limit).
    ``files``: base64 PDFs become ``file`` parts (else they raise ``Untranslatable``).
    ``cache_control``: keep Anthropic's cache markers on text parts. ``cache_key``: sent as
    ``prompt_cache_key`` (a hash of the client's session; "" sends none).
    """
    missing = refused(request_needs(request), "openai", Capabilities(files=files))
    if missing:
        raise Untranslatable(missing)
    content = Content(cache_control)
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": _messages(request, reasoning_history, content),
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
    if cache_key:
        body["prompt_cache_key"] = (
            _PROMPT_CACHE_KEY_PREFIX + hashlib.sha256(cache_key.encode()).hexdigest()[:32]
        )
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


def _messages(
    request: dict[str, Any], reasoning_history: bool, user: Content
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = _system(request.get("system"), user)
    if system:
        out.append({"role": "system", "content": system})
    messages = request.get("messages")
    if not isinstance(messages, list):
        return out
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        blocks = message.get("content")
        if role == "user":
            out.extend(user.user(blocks))
        elif role == "assistant":
            converted = _assistant(blocks, reasoning_history)
            if converted is not None:
                out.append(converted)
        elif role == "system":
            # Claude Code 2.1.x puts environment text here mid-conversation; its per-message
            # output_config has no OpenAI equivalent and is dropped.
            text = _joined_text(blocks)
            if text:
                out.append({"role": "system", "content": text})
    return out


def _system(system: object, user: Content) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        return ""
    parts = []
    for block in system:
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str) and text and not text.startswith(BILLING_HEADER_PREFIX):
                parts.append(user.text_part(text, block))
    return user.joined(parts) if parts else ""


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
    return JOIN.join(texts)


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
    message: dict[str, Any] = {"role": "assistant", "content": JOIN.join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = JOIN.join(reasoning)
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
