"""The OpenAI chat-completions wire format of the mock (PROTOCOL.md b).

Data-only frames: a role chunk first, content deltas, ``reasoning_content`` deltas (DeepSeek
style) for thinking, tool calls as id+name first and argument fragments after, a chunk with the
finish reason, the usage chunk with ``choices: []`` only when ``stream_options.include_usage``
was asked for, then ``data: [DONE]``. Redacted thinking has no OpenAI form and is left out.
Chunks share one pre-encoded envelope; only each delta's own JSON is dumped per event.
"""

from __future__ import annotations

import time

import orjson

from ccbalancer.mock.act import Turn
from ccbalancer.mock.continuation import Continuation, asks_to_resume
from ccbalancer.mock.dialect import (
    Call,
    Json,
    content_text,
    last_user_text,
    messages_of,
    turn_of,
)
from ccbalancer.mock.plan import Block, Plan, final_text
from ccbalancer.mock.rules import openai_refusal
from ccbalancer.mock.script import Script

_FINISH = {"tool_use": "tool_calls", "end_turn": "stop"}
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}

Events = list[tuple[str | None, bytes]]


def _call_id(block: Block) -> str:
    return block.id.replace("toolu_", "call_", 1)


def _usage(plan: Plan, call: Call) -> Json:
    reasoning = sum(len(block.joined) for block in plan.blocks if block.kind == "thinking") // 4
    return {
        "prompt_tokens": call.input_tokens + call.cache_read,  # OpenAI counts the cache in
        "completion_tokens": plan.output_tokens,
        "total_tokens": call.input_tokens + call.cache_read + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": call.cache_read},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }


def _arguments(encoded: object) -> dict[str, object]:
    try:
        value = orjson.loads(encoded) if isinstance(encoded, str) else None
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _block_deltas(block: Block, tool_index: int) -> list[Json]:
    if block.kind == "text":
        return [{"content": piece} for piece in block.pieces]
    if block.kind == "thinking":
        return [{"reasoning_content": piece} for piece in block.pieces]
    if block.kind != "tool_use":
        return []
    first = {"index": tool_index, "id": _call_id(block), "type": "function"}
    first["function"] = {"name": block.name, "arguments": ""}
    fragments = [{"index": tool_index, "function": {"arguments": p}} for p in block.pieces if p]
    return [{"tool_calls": [call]} for call in (first, *fragments)]


class OpenAIDialect:
    kind = "openai"
    id_prefix = "chatcmpl-mock"

    def directive_text(self, body: Json) -> str:
        return last_user_text(body)

    def continuation(self, body: Json) -> Continuation | None:
        # a resume as the OpenAI dialect translates it: the assistant message (its text, then
        # its tool_calls), a `tool` message per call, the user message with RESUME_PROMPT.
        # A prefill has no continuation here: `refusal` answers it.
        messages = messages_of(body)
        if not messages or not asks_to_resume(messages[-1].get("content")):
            return None
        at = len(messages) - 2
        while at >= 0 and messages[at].get("role") == "tool":
            at -= 1
        if messages[-1].get("role") != "user" or at < 0 or messages[at].get("role") != "assistant":
            return None
        text = content_text(messages[at].get("content"))
        delivered: list[Json] = [{"type": "text", "text": text}] if text else []
        for call in messages[at].get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                arguments = _arguments(function.get("arguments"))
                delivered.append(
                    {"type": "tool_use", "name": function.get("name"), "input": arguments}
                )
        return Continuation("resume", tuple(delivered), {**body, "messages": messages[:at]})

    def refusal(self, body: Json) -> str | None:
        return openai_refusal(body)

    def tool_result(self, body: Json) -> str | None:
        # tool results are `role: tool` messages after the assistant turn that called the tool
        messages = body.get("messages")
        results: list[str] = []
        for message in reversed(messages if isinstance(messages, list) else []):
            if not isinstance(message, dict) or message.get("role") != "tool":
                break
            results.append(content_text(message.get("content")))
        return "\n".join(reversed(results)) if results else None

    def turn(self, body: Json) -> Turn:
        tools = body.get("tools")
        functions = [t.get("function") for t in tools] if isinstance(tools, list) else []
        names = [f.get("name") for f in functions if isinstance(f, dict)]
        results: list[str] = []
        called: tuple[str, dict[str, object]] | None = None
        for message in messages_of(body):
            if message.get("role") == "tool":
                results.append(content_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    called = (str(function.get("name")), _arguments(function.get("arguments")))
        return turn_of(body, names, self.tool_result(body), called, results)

    def headers(self, call: Call) -> dict[str, str]:
        return {"x-request-id": call.request_id}

    def events(self, plan: Plan, script: Script, call: Call) -> Events:
        envelope = {
            "id": call.message_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "fp_mock",
        }
        prefix = orjson.dumps(envelope)[:-1] + b',"choices":[{"index":0,"delta":'
        usage_null = b',"usage":null' if call.include_usage else b""
        suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}"

        deltas: list[Json] = [{"role": "assistant", "content": ""}]
        tool_index = 0
        for block in plan.blocks:
            deltas.extend(_block_deltas(block, tool_index))
            tool_index += block.kind == "tool_use"
        events: Events = [(None, prefix + orjson.dumps(delta) + suffix) for delta in deltas]
        if script.drop == "message_delta":  # no finish reason, no usage, no [DONE]: truncated
            return events
        finish = orjson.dumps(_FINISH.get(plan.stop_reason, "stop"))
        tail = b',"logprobs":null,"finish_reason":' + finish + b"}]" + usage_null + b"}"
        events.append((None, prefix + b"{}" + tail))
        if call.include_usage:
            chunk = {**envelope, "choices": [], "usage": _usage(plan, call)}
            events.append((None, orjson.dumps(chunk)))
        if script.drop != "message_stop":
            events.append((None, b"[DONE]"))
        return events

    def error_event(self, error_type: str, message: str) -> tuple[str | None, bytes]:
        return None, orjson.dumps({"error": {"message": message, "type": error_type, "code": None}})

    def message(self, plan: Plan, call: Call) -> Json:
        text = "".join(final_text(block) for block in plan.blocks if block.kind == "text")
        reply: Json = {"role": "assistant", "content": text or None}
        thinking = "".join(block.joined for block in plan.blocks if block.kind == "thinking")
        if thinking:
            reply["reasoning_content"] = thinking
        tools = [block for block in plan.blocks if block.kind == "tool_use"]
        if tools:
            reply["tool_calls"] = [
                {
                    "id": _call_id(block),
                    "type": "function",
                    "function": {"name": block.name, "arguments": block.joined},
                }
                for block in tools
            ]
        choice = {
            "index": 0,
            "message": reply,
            "logprobs": None,
            "finish_reason": _FINISH.get(plan.stop_reason, "stop"),
        }
        return {
            "id": call.message_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "system_fingerprint": "fp_mock",
            "choices": [choice],
            "usage": _usage(plan, call),
        }

    def error_body(self, status: int, error_type: str | None, message: str, call: Call) -> Json:
        kind = error_type or ("server_error" if status >= 500 else "invalid_request_error")
        return {
            "error": {"message": message, "type": kind, "param": None, "code": _CODES.get(status)}
        }
