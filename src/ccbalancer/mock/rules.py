"""Requests the real APIs refuse with a 400, refused the same way by the mock (sans-IO).

A balancer that builds a request the real provider would refuse must fail its tests, not pass
them against a lenient mock: above all the continuation requests of mid-stream recovery
(``relay/continuation.py``), whose prefill the Anthropic API accepts only under narrow rules.
The messages are the real API's, as users reported them (cited per rule); ``messages.N`` is
the index of the message at fault, as the API gives it.
"""

from __future__ import annotations

from typing import Any

from ccbalancer.relay.continuation import accepts_prefill, thinking_on

Json = dict[str, Any]

# github.com/smallmain/vscode-unify-chat-provider/issues/249 (Claude 4.6 and later, 5.x)
NO_PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
# github.com/anomalyco/opencode/issues/3077, github.com/n8n-io/n8n/issues/22550
THINKING_FIRST = (
    "messages.{index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found "
    "`{found}`. When `thinking` is enabled, a final `assistant` message must start with a "
    "thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We "
    "recommend you include thinking blocks from previous turns. To avoid this requirement, "
    "disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)
# github.com/tailcallhq/forgecode/issues/1872
TRAILING_WHITESPACE = "messages: final assistant content cannot end with trailing whitespace"
# github.com/Kilo-Org/kilocode/issues/5163, github.com/anthropics/claude-code/issues/5989
NO_TOOL_RESULT = (
    "messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
    "after: {ids}. Each `tool_use` block must have a corresponding `tool_result` block in the "
    "next message."
)
# github.com/BerriAI/litellm/issues/10083, github.com/router-for-me/CLIProxyAPI/issues/2798
NO_TOOL_MESSAGE = (
    "An assistant message with 'tool_calls' must be followed by tool messages responding to "
    "each 'tool_call_id'. The following tool_call_ids did not have response messages: {ids}"
)
# OpenAI's chat completions answers a new assistant message after a final one; DeepSeek's
# prefix completion and vLLM's continue_final_message need flags a plain server does not know.
# Refused here so a test notices a prefill sent to an OpenAI-format provider.
OPENAI_PREFILL = (
    "messages: the conversation ends with an assistant message; this server does not continue "
    "a final assistant message"
)


def _messages(body: Json) -> list[Json]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def anthropic_refusal(body: Json) -> str | None:
    """What the Anthropic Messages API answers 400 to in ``body``, or None."""
    messages = _messages(body)
    if messages and messages[-1].get("role") == "assistant":
        refused = _prefill_refusal(body, len(messages) - 1, _blocks(messages[-1].get("content")))
        if refused is not None:
            return refused
    for index, message in enumerate(messages[:-1]):
        if message.get("role") != "assistant":
            continue
        called = [
            b.get("id") for b in _blocks(message.get("content")) if b.get("type") == "tool_use"
        ]
        following = messages[index + 1]
        answered = {
            b.get("tool_use_id")
            for b in _blocks(following.get("content"))
            if following.get("role") == "user" and b.get("type") == "tool_result"
        }
        missing = [str(tool_id) for tool_id in called if tool_id not in answered]
        if missing:
            return NO_TOOL_RESULT.format(index=index, ids=", ".join(missing))
    return None


def _prefill_refusal(body: Json, index: int, blocks: list[Json]) -> str | None:
    if not accepts_prefill(str(body.get("model") or "")):
        return NO_PREFILL
    if (
        thinking_on(body)
        and blocks
        and blocks[0].get("type") not in ("thinking", "redacted_thinking")
    ):
        return THINKING_FIRST.format(index=index, found=blocks[0].get("type"))
    last = blocks[-1] if blocks else None
    text = last.get("text") if last is not None and last.get("type") == "text" else None
    if isinstance(text, str) and text != text.rstrip():
        return TRAILING_WHITESPACE
    return None


def openai_refusal(body: Json) -> str | None:
    """What a plain OpenAI chat-completions server answers 400 to in ``body``, or None."""
    messages = _messages(body)
    if messages and messages[-1].get("role") == "assistant":
        return OPENAI_PREFILL
    for index, message in enumerate(messages):
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if not isinstance(calls, list) or not calls:
            continue
        answered = set()
        for after in messages[index + 1 :]:
            if after.get("role") != "tool":
                break
            answered.add(after.get("tool_call_id"))
        ids = [c.get("id") for c in calls if isinstance(c, dict)]
        missing = [str(call_id) for call_id in ids if call_id not in answered]
        if missing:
            return NO_TOOL_MESSAGE.format(ids=", ".join(missing))
    return None
