"""The Anthropic Messages wire format of the mock (PROTOCOL.md a.2-a.4).

Streams have exactly the shape of ``samples/mock-tool-use-stream.sse`` and
``samples/mock-thinking-tool-stream.sse``, which the real Claude Code accepted: message_start,
ping, start/deltas/stop per block, message_delta with the stop reason and cumulative usage,
message_stop. Delta payloads are built from pre-encoded prefixes and the JSON of their text
only, because the benchmark renders hundreds of thousands of them.
"""

from __future__ import annotations

import orjson

from ccbalancer.errors import error_type_for_status
from ccbalancer.mock.act import Turn
from ccbalancer.mock.continuation import Continuation, asks_to_resume, delivered_blocks
from ccbalancer.mock.dialect import (
    Call,
    Json,
    content_text,
    last_message,
    last_user_text,
    messages_of,
    turn_of,
)
from ccbalancer.mock.plan import Block, Plan, final_text
from ccbalancer.mock.rules import anthropic_refusal
from ccbalancer.mock.script import Script

_PING = b'{"type":"ping"}'
_STOP = b'{"type":"message_stop"}'
_DELTA_FIELD = {
    "text": b"text_delta",
    "thinking": b"thinking_delta",
    "tool_use": b"input_json_delta",
}
_DELTA_KEY = {"text": b"text", "thinking": b"thinking", "tool_use": b"partial_json"}

Events = list[tuple[str | None, bytes]]


def _start_block(block: Block) -> Json:
    if block.kind == "text":
        return {"type": "text", "text": ""}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    if block.kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}


def _final_block(block: Block) -> Json:
    if block.kind == "text":
        return {"type": "text", "text": final_text(block)}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": block.joined, "signature": block.signature}
    if block.kind == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.data}
    return {
        "type": "tool_use",
        "id": block.id,
        "name": block.name,
        "input": orjson.loads(block.joined),
    }


def _usage(call: Call, output_tokens: int) -> Json:
    return {
        "input_tokens": call.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": call.cache_read,
        "output_tokens": output_tokens,
    }


class AnthropicDialect:
    kind = "anthropic"
    id_prefix = "msg_mock_"

    def directive_text(self, body: Json) -> str:
        return last_user_text(body)

    def continuation(self, body: Json) -> Continuation | None:
        messages = messages_of(body)
        if messages and messages[-1].get("role") == "assistant":
            delivered = delivered_blocks(messages[-1].get("content"))
            return Continuation("prefill", delivered, {**body, "messages": messages[:-1]})
        if (
            len(messages) >= 2
            and messages[-1].get("role") == "user"
            and asks_to_resume(messages[-1].get("content"))
            and messages[-2].get("role") == "assistant"
        ):
            delivered = delivered_blocks(messages[-2].get("content"))
            return Continuation("resume", delivered, {**body, "messages": messages[:-2]})
        return None

    def refusal(self, body: Json) -> str | None:
        return anthropic_refusal(body)

    def tool_result(self, body: Json) -> str | None:
        message = last_message(body, "user")
        content = message.get("content") if message else None
        if not isinstance(content, list):
            return None
        results = [
            content_text(block.get("content"))
            for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]
        return "\n".join(results) if results else None

    def turn(self, body: Json) -> Turn:
        tools = body.get("tools")
        offered = tools if isinstance(tools, list) else []
        names = [tool.get("name") for tool in offered if isinstance(tool, dict)]
        results: list[str] = []
        called: tuple[str, dict[str, object]] | None = None
        for message in messages_of(body):
            content = message.get("content")
            for block in content if isinstance(content, list) else ():
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    results.append(content_text(block.get("content")))
                elif block.get("type") == "tool_use" and isinstance(block.get("input"), dict):
                    called = (str(block.get("name")), block["input"])
        return turn_of(body, names, self.tool_result(body), called, results)

    def headers(self, call: Call) -> dict[str, str]:
        return {
            "request-id": call.request_id,
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
        }

    def events(self, plan: Plan, script: Script, call: Call) -> Events:
        start = {
            "type": "message_start",
            "message": {
                "id": call.message_id,
                "type": "message",
                "role": "assistant",
                "model": call.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(call, 1),
            },
        }
        events: Events = [("message_start", orjson.dumps(start))]
        if script.ping:
            events.append(("ping", _PING))
        for index, block in enumerate(plan.blocks):
            opening = {
                "type": "content_block_start",
                "index": index,
                "content_block": _start_block(block),
            }
            events.append(("content_block_start", orjson.dumps(opening)))
            if block.kind in _DELTA_FIELD:
                prefix = b'{"type":"content_block_delta","index":%d,"delta":{"type":"%s","%s":' % (
                    index,
                    _DELTA_FIELD[block.kind],
                    _DELTA_KEY[block.kind],
                )
                events.extend(
                    ("content_block_delta", prefix + orjson.dumps(p) + b"}}") for p in block.pieces
                )
            if block.kind == "thinking":
                signature = {"type": "signature_delta", "signature": block.signature}
                delta = {"type": "content_block_delta", "index": index, "delta": signature}
                events.append(("content_block_delta", orjson.dumps(delta)))
            events.append(
                ("content_block_stop", b'{"type":"content_block_stop","index":%d}' % index)
            )
        if script.drop != "message_delta":
            delta = {
                "type": "message_delta",
                "delta": {"stop_reason": plan.stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": plan.output_tokens},
            }
            events.append(("message_delta", orjson.dumps(delta)))
            if script.drop != "message_stop":
                events.append(("message_stop", _STOP))
        return events

    def error_event(self, error_type: str, message: str) -> tuple[str | None, bytes]:
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        return "error", orjson.dumps(error)

    def message(self, plan: Plan, call: Call) -> Json:
        return {
            "id": call.message_id,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [_final_block(block) for block in plan.blocks],
            "stop_reason": plan.stop_reason,
            "stop_sequence": None,
            "usage": _usage(call, plan.output_tokens),
        }

    def error_body(self, status: int, error_type: str | None, message: str, call: Call) -> Json:
        kind = error_type or error_type_for_status(status)
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": call.request_id,
        }
