"""A local token estimate for ``count_tokens`` when no Anthropic provider can answer.

Deliberately simple and offline (DESIGN.md section 4: no network at runtime): about 3.5
characters per token for prose and code, plus small per-message and per-tool overheads. It is
marked as an estimate in the response header, never passed off as a real count.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

_CHARS_PER_TOKEN = 3.5
_PER_MESSAGE = 4
_PER_IMAGE = 1600


def _text_chars(value: Any) -> tuple[int, int]:
    """(characters of text, images) in a content value."""
    if isinstance(value, str):
        return len(value), 0
    chars = images = 0
    if isinstance(value, list):
        for block in value:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind in {"image", "document"}:
                images += 1
            elif kind == "text":
                chars += len(str(block.get("text", "")))
            elif kind == "thinking":
                chars += len(str(block.get("thinking", "")))
            elif kind == "tool_use":
                chars += len(str(block.get("name", ""))) + len(orjson.dumps(block.get("input", {})))
            elif kind == "tool_result":
                c, i = _text_chars(block.get("content", ""))
                chars, images = chars + c, images + i
    return chars, images


def estimate_input_tokens(body: dict[str, Any]) -> int:
    chars, images = _text_chars(body.get("system", ""))
    tokens = 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            c, i = _text_chars(message.get("content", ""))
            chars, images = chars + c, images + i
            tokens += _PER_MESSAGE
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chars += len(orjson.dumps(tools))
    return tokens + images * _PER_IMAGE + math.ceil(chars / _CHARS_PER_TOKEN)
