"""The content of one simulated reply, independent of the wire format.

``build_plan`` turns a Script (and, for ``tool_then_text``, the tool result the client sent
back) into content blocks whose text is already cut into the pieces that become one delta event
each: by words, or exactly as ``Script.pieces`` / ``Script.content`` say. The Anthropic and
OpenAI renderers only frame these pieces, so both formats stream the same content for the same
script. The plan is the whole canned answer; ``continuation.py`` takes what follows a cut.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ccbalancer.mock.content import parse_content, parse_pieces
from ccbalancer.mock.script import Script

# Stands in for a benchmark stamp inside pre-encoded frames; the writer splits each such frame
# around it once and splices in ``k:monotonic_ns;`` just before the write. ASCII without JSON
# escapes, so it survives encoding byte for byte.
STAMP_MARKER = "@@ccb-stamp@@"

THINKING = "The user wants a short answer. Mock reasoning goes here."
SIGNATURE = "EqQBCgIYAhIMmockSignature0ccbalancer1mockZ2lnbmF0dXJl"
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"

_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True, slots=True)
class Block:
    """One content block: ``kind`` is an Anthropic block type; ``pieces`` its delta texts."""

    kind: str  # "text" | "thinking" | "redacted_thinking" | "tool_use"
    pieces: tuple[str, ...] = ()
    id: str = ""  # tool_use
    name: str = ""  # tool_use
    data: str = ""  # redacted_thinking
    signature: str = ""  # thinking

    @property
    def joined(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Plan:
    blocks: tuple[Block, ...]
    stop_reason: str  # Anthropic vocabulary; the OpenAI renderer maps it
    output_tokens: int


def final_text(block: Block) -> str:
    """The block's whole text for a non-streaming body; stamps are taken now, in order."""
    if STAMP_MARKER not in block.pieces:
        return block.joined
    return "".join(
        f"{k}:{time.monotonic_ns()};" if piece == STAMP_MARKER else piece
        for k, piece in enumerate(block.pieces)
    )


def split_text(text: str, events: int | None) -> list[str]:
    """``text`` as delta pieces: one per word, or exactly ``events`` pieces.

    Fewer events than words group neighbouring words; more events repeat the text word by
    word, so a benchmark can ask for any stream length with the default text.
    """
    words = _WORD.findall(text) or ([text] if text else [])
    if events is None:
        return words
    if not words or events <= 0:
        return []
    count = len(words)
    if events <= count:
        return [
            "".join(words[i * count // events : (i + 1) * count // events]) for i in range(events)
        ]
    pieces = []
    for i in range(events):
        word = words[i % count]
        if i >= count and i % count == 0 and not word[:1].isspace():
            word = " " + word  # the repeated text starts a new sentence, not glued to the last
        pieces.append(word)
    return pieces


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _text_block(script: Script, text: str) -> Block:
    if script.stamp:
        count = script.events if script.events is not None else len(split_text(text, None))
        return Block("text", (STAMP_MARKER,) * max(count, 0))
    return Block("text", tuple(split_text(text, script.events)))


def tool_block(name: str, arguments: dict[str, object] | str) -> Block:
    """A ``tool_use`` of ``name`` with ``arguments`` (an object, or its JSON text), its JSON
    streamed in small fragments."""
    encoded = arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()
    # the real API often opens with an empty fragment; clients must cope, so the mock does too
    pieces = ("", *_chunks(encoded, 10))
    return Block("tool_use", pieces, id=f"toolu_mock_{uuid.uuid4().hex[:20]}", name=name)


def _tool_block(script: Script) -> Block:
    default: dict[str, object] = {"command": script.tool_command, "description": "mock tool call"}
    return tool_block(script.tool_name, script.tool_input or default)


def _scripted(block: dict[str, Any]) -> Block:
    """A Block from one checked entry of ``Script.content``."""
    kind, pieces = block["type"], block.get("pieces")
    if kind == "text":
        return Block("text", tuple(split_text(block["text"], None) if pieces is None else pieces))
    if kind == "thinking":
        thought = tuple(_chunks(block["thinking"], 16) if pieces is None else pieces)
        return Block("thinking", thought, signature=block["signature"] or SIGNATURE)
    if kind == "redacted_thinking":
        return Block("redacted_thinking", data=block["data"] or REDACTED)
    tool = tool_block(block["name"], block["input"])
    return replace(tool, id=block["id"]) if block["id"] else tool


def plan_of(blocks: tuple[Block, ...]) -> Plan:
    """The plan of ``blocks``: stops for the tool if the last block calls one."""
    stop_reason = "tool_use" if blocks[-1].kind == "tool_use" else "end_turn"
    chars = sum(len(piece) for block in blocks for piece in block.pieces)
    return Plan(blocks, stop_reason, max(1, chars // 4))


def build_plan(script: Script, tool_result: str | None) -> Plan:
    """The blocks ``script`` answers with; ``tool_result`` is the content the client sent back
    for a previous tool call (``None`` when the last user turn holds none)."""
    if script.content:
        return plan_of(tuple(_scripted(block) for block in parse_content(script.content)))
    if script.reply == "tool_use":
        blocks: tuple[Block, ...] = (_tool_block(script),)
    elif script.reply == "thinking_tool":
        blocks = (
            Block("redacted_thinking", data=REDACTED),
            Block("thinking", tuple(_chunks(THINKING, 16)), signature=SIGNATURE),
            _tool_block(script),
        )
    elif script.reply == "tool_then_text" and tool_result is None:
        blocks = (_tool_block(script),)
    elif script.reply == "tool_then_text":
        blocks = (_text_block(script, f"The tool returned: {tool_result}"),)
    elif script.pieces:
        blocks = (Block("text", tuple(parse_pieces(script.pieces))),)
    else:
        blocks = (_text_block(script, script.text),)
    return plan_of(blocks)
