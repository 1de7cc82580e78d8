"""Anthropic stream events -> one Message, as the official SDK accumulates them.

Used for non-streaming clients (the upstream call always streams, DESIGN.md section 5) and for
the usage/stop_reason facts the request log needs. Unknown event and delta types are ignored,
as the SDK does.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccbalancer.sse.event import Event


class MessageAccumulator:
    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self._json_parts: dict[int, list[str]] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self.stop_reason: str | None = None
        self.finished = False  # message_delta seen (the stream said how it stopped)
        self.stopped = False  # message_stop seen
        self.events = 0

    def add(self, event: Event) -> None:
        self.events += 1
        kind = event.type
        if kind in ("ping", ""):
            return
        try:
            payload = event.json()
        except ValueError:
            return
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                # shallow copies are enough: only top-level keys are assigned, and the content
                # list, the usage and every block are replaced by copies of their own
                self.message = dict(message)
                self.message["content"] = list(message.get("content") or [])
        elif kind == "content_block_start":
            index = payload.get("index")
            block = payload.get("content_block")
            if isinstance(index, int) and isinstance(block, dict):
                block = dict(block)
                if isinstance(block.get("citations"), list):
                    block["citations"] = list(block["citations"])  # deltas append to it
                if block.get("type") in ("tool_use", "server_tool_use", "mcp_tool_use"):
                    self._json_parts[index] = []
                self._blocks[index] = block
        elif kind == "content_block_delta":
            self._delta(payload)
        elif kind == "content_block_stop":
            index = payload.get("index")
            if isinstance(index, int):
                self._finish_block(index)
        elif kind == "message_delta":
            self.finished = True
            delta = payload.get("delta") or {}
            if self.message is not None:
                for key in ("stop_reason", "stop_sequence", "stop_details", "container"):
                    if key in delta:
                        self.message[key] = delta[key]
                usage = payload.get("usage")
                if isinstance(usage, dict):
                    merged = dict(self.message.get("usage") or {})
                    merged.update({k: v for k, v in usage.items() if v is not None})
                    self.message["usage"] = merged
            self.stop_reason = delta.get("stop_reason", self.stop_reason)
        elif kind == "message_stop":
            self.stopped = True

    def _delta(self, payload: dict[str, Any]) -> None:
        index = payload.get("index")
        delta = payload.get("delta")
        if not isinstance(index, int) or not isinstance(delta, dict):
            return
        block = self._blocks.get(index)
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + str(delta.get("text", ""))
        elif kind == "input_json_delta":
            self._json_parts.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = str(delta.get("signature", ""))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _finish_block(self, index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is None:
            return
        parts = self._json_parts.pop(index, None)
        if parts:  # no deltas at all: the start event's input stands
            text = "".join(parts)
            try:
                block["input"] = orjson.loads(text) if text.strip() else {}
            except orjson.JSONDecodeError:
                block["input"] = {}
        if self.message is not None:
            content = self.message["content"]
            while len(content) < index:
                content.append(None)
            if len(content) == index:
                content.append(block)
            else:
                content[index] = block

    def open_block(self) -> tuple[int, dict[str, Any]] | None:
        """The block still open (started, not stopped) with its content so far, if any."""
        if not self._blocks:
            return None
        index = max(self._blocks)
        block = dict(self._blocks[index])
        parts = self._json_parts.get(index)
        if parts is not None:
            block["partial_json"] = "".join(parts)
        return index, block

    def done_blocks(self) -> list[dict[str, Any]]:
        """The blocks completed so far, in order."""
        if self.message is None:
            return []
        return [b for b in self.message["content"] if b is not None]

    def result(self) -> dict[str, Any]:
        """The Message so far; blocks still open are closed as they stand."""
        for index in sorted(self._blocks):
            self._finish_block(index)
        if self.message is None:
            raise ValueError("the stream had no message_start")
        message = self.message
        message["content"] = [b for b in message["content"] if b is not None]
        return message

    @property
    def usage(self) -> dict[str, Any]:
        if self.message is None:
            return {}
        usage = self.message.get("usage")
        return usage if isinstance(usage, dict) else {}
