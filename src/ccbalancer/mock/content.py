"""The ``pieces`` and ``content`` Script fields: exact answers a test writes as JSON.

``pieces`` is a JSON array of strings: the text reply's delta pieces exactly, so a test can put
a cut right after a double space or a newline. ``content`` is a JSON array of Anthropic content
blocks — text (``text`` and/or its ``pieces``), thinking (``thinking``, optional ``signature``
and ``pieces``), redacted_thinking (optional ``data``), tool_use (``name``, ``input``, optional
``id``) — so a test can script text + tool_use, parallel tool calls or thinking + text.

Both are checked here when a Script field is set and read here again when the plan is built,
so what is valid is decided in one place; the result is plain data (``plan.py`` makes Blocks of
it). Errors name the field and, for ``content``, the block.
"""

from __future__ import annotations

import json
from typing import Any

KINDS = ("text", "thinking", "redacted_thinking", "tool_use")
_KEYS = {
    "text": {"text", "pieces"},
    "thinking": {"thinking", "signature", "pieces"},
    "redacted_thinking": {"data"},
    "tool_use": {"name", "input", "id"},
}


def _loads(text: str, field: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"Script.{field} is not valid JSON: {exc}") from None


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def parse_pieces(text: str) -> list[str]:
    """The ``pieces`` field as its list of strings. Raises ``ValueError``."""
    value = _loads(text, "pieces")
    if not _strings(value):
        raise ValueError(f"Script.pieces must be a JSON array of strings, got {text!r}")
    return list(value)


def parse_content(text: str) -> list[dict[str, Any]]:
    """The ``content`` field as checked blocks: every key of its type present (``pieces``
    ``None`` when not given, ``id``/``signature``/``data`` ``None`` for the default). Raises
    ``ValueError``."""
    value = _loads(text, "content")
    if not isinstance(value, list) or not value:
        raise ValueError("Script.content must be a non-empty JSON array of content blocks")
    return [_block(f"Script.content[{number}]", block) for number, block in enumerate(value)]


def _block(where: str, block: Any) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") not in KINDS:
        raise ValueError(f"{where} must be an object whose type is one of {KINDS}")
    kind = block["type"]
    unknown = set(block) - _KEYS[kind] - {"type"}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for a {kind} block")
    pieces = block.get("pieces")
    if pieces is not None and not _strings(pieces):
        raise ValueError(f"{where}.pieces must be an array of strings")
    if kind in ("text", "thinking"):
        said = block.get(kind)
        if said is not None and not isinstance(said, str):
            raise ValueError(f"{where}.{kind} must be a string")
        joined = None if pieces is None else "".join(pieces)
        if said is None and joined is None:
            raise ValueError(f"{where} needs {kind!r} or 'pieces'")
        if said is not None and joined is not None and joined != said:
            raise ValueError(f"{where}: 'pieces' do not join to its {kind!r}")
        out = {"type": kind, kind: said if said is not None else joined, "pieces": pieces}
        if kind == "thinking":
            out["signature"] = _optional_string(where, block, "signature")
        return out
    if kind == "redacted_thinking":
        return {"type": kind, "data": _optional_string(where, block, "data")}
    name, arguments = block.get("name"), block.get("input")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: a tool_use needs a non-empty 'name'")
    if not isinstance(arguments, dict):
        raise ValueError(f"{where}: a tool_use needs an 'input' object")
    return {
        "type": kind,
        "name": name,
        "input": arguments,
        "id": _optional_string(where, block, "id"),
    }


def _optional_string(where: str, block: dict[str, Any], key: str) -> str | None:
    value = block.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"{where}.{key} must be a non-empty string")
    return value
