"""A message's ``content`` as OpenAI-compatible servers send it: a string, or typed parts.

OpenAI itself streams ``content`` as a string, but the schema allows a list of parts and some
servers use it: Mistral's reasoning models stream ``[{"type": "thinking", "thinking":
[{"type": "text", "text": "…"}]}]`` while they think and text parts (or plain strings) after
(https://docs.mistral.ai/capabilities/reasoning/), and assistant messages may carry
``{"type": "refusal", "refusal": "…"}`` parts. ``content_pieces`` reads every shape the same way
for the stream translator and, through it, for whole JSON answers. Sans-IO.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["text", "thinking"]

# Part type -> (what it becomes, the field holding its text). "output_text" is the Responses
# API's name that a few gateways leak into chat completions; "reasoning"/"reasoning_text" are
# the names other gateways give a thinking part.
_PARTS: dict[str, tuple[Kind, tuple[str, ...]]] = {
    "text": ("text", ("text",)),
    "output_text": ("text", ("text",)),
    "refusal": ("text", ("refusal",)),  # the user should read a refusal like text
    "thinking": ("thinking", ("thinking", "text")),
    "reasoning": ("thinking", ("reasoning", "text")),
    "reasoning_text": ("thinking", ("text",)),
}


def content_pieces(content: object) -> list[tuple[Kind, str]]:
    """``(kind, text)`` for each non-empty piece of ``content``, in order. Parts that carry no
    text for a reader (Mistral's ``reference`` ids, images) are left out."""
    if isinstance(content, str):
        return [("text", content)] if content else []
    if not isinstance(content, list):
        return []
    pieces: list[tuple[Kind, str]] = []
    for part in content:
        if isinstance(part, str):  # a bare string inside the list: plain text
            if part:
                pieces.append(("text", part))
            continue
        if not isinstance(part, dict):
            continue
        known = _PARTS.get(str(part.get("type")))
        if known is None:
            continue
        kind, fields = known
        text = next((_text(part[f]) for f in fields if f in part), "")
        if text:
            pieces.append((kind, text))
    return pieces


def _text(value: object) -> str:
    """A part's text: a string, or (Mistral's thinking) a list of text parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(
            item if isinstance(item, str) else str(item.get("text") or "")
            for item in value
            if isinstance(item, str)
            or (isinstance(item, dict) and isinstance(item.get("text"), str))
        )
    return ""
