"""Finishing a canned answer another provider started, as a real model would (sans-IO).

When a stream fails after content reached the client, the balancer asks another provider to
finish the same message (``relay/continuation.py``), in one of two shapes the dialects
recognise and hand over as a ``Continuation``:

* ``prefill`` — the delivered content is the final assistant message;
* ``resume`` — it is an assistant turn followed by a user turn holding ``RESUME_PROMPT``
  (and a result for each delivered tool call).

``continued`` walks the canned answer (the Plan the script gives the original request) along
the delivered blocks: thinking is skipped (a continuation has thinking off and never gets it
back), texts must be prefixes of the plan's texts in order, tool calls must match by name and
input. Where the delivered content stops, the answer goes on: exactly there for a prefill (the
whitespace the balancer stripped comes first), after saying the last few delivered words again
for a resume, as models sometimes do. Content the canned answer does not start with is refused
(``Mismatch``), so a test that builds a wrong continuation fails loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ccbalancer.mock.plan import Block, Plan
from ccbalancer.relay.continuation import RESUME_PROMPT

Json = dict[str, Any]
THINKING = ("thinking", "redacted_thinking")
_NONSPACE = re.compile(r"\S+")
_PIECE = re.compile(r"\s*\S+|\s+")  # word by word, trailing whitespace kept
_SHOWN = 40  # characters of a text quoted in a Mismatch message


class Mismatch(ValueError):
    """The delivered content is not how this provider's canned answer starts."""


@dataclass(frozen=True, slots=True)
class Continuation:
    mode: str  # "prefill" | "resume"
    delivered: tuple[Json, ...]  # the delivered text and tool_use blocks, thinking left out
    original: Json  # the request as first asked: the continuation's turns taken off


def asks_to_resume(content: Any) -> bool:
    """Whether a user message's content holds ``RESUME_PROMPT`` as one of its texts (a string,
    a text block, or one paragraph of text an OpenAI translation joined)."""
    parts = [content] if isinstance(content, str) else content if isinstance(content, list) else []
    texts = [p if isinstance(p, str) else p.get("text") for p in parts if isinstance(p, str | dict)]
    return any(isinstance(t, str) and RESUME_PROMPT in t.split("\n\n") for t in texts)


def delivered_blocks(content: Any) -> tuple[Json, ...]:
    """An assistant message's content as blocks, thinking left out."""
    if isinstance(content, str):
        return ({"type": "text", "text": content},)
    blocks = content if isinstance(content, list) else []
    return tuple(b for b in blocks if isinstance(b, dict) and b.get("type") not in THINKING)


def _quote(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def _describe(block: Block | Json | None) -> str:
    if block is None:
        return "nothing (the canned answer has ended)"
    if isinstance(block, Block):
        return f"text {_quote(block.joined)}" if block.kind == "text" else f"tool_use {block.name}"
    if block.get("type") == "text":
        return f"text {_quote(str(block.get('text')))}"
    return f"{block.get('type')} {block.get('name', '')}".strip()


def _match(blocks: list[Block], delivered: tuple[Json, ...]) -> tuple[int, int]:
    """Where the delivered content stops in ``blocks``: (block index, offset in its text)."""
    index, offset = 0, 0

    def refuse(number: int, given: Json) -> Mismatch:
        here = blocks[index] if index < len(blocks) else None
        return Mismatch(
            "the continuation does not match what this provider would have said: delivered "
            f"block {number} ({_describe(given)}) is not how {_describe(here)} goes on "
            f"(at character {offset})"
        )

    for number, given in enumerate(delivered, start=1):
        if given.get("type") == "text":
            text = str(given.get("text") or "")
            while text:
                if index >= len(blocks) or blocks[index].kind != "text":
                    raise refuse(number, given)
                rest = blocks[index].joined[offset:]
                if rest.startswith(text):
                    offset += len(text)
                    text = ""
                elif text.startswith(rest):
                    text = text[len(rest) :]
                    index, offset = index + 1, 0
                else:
                    raise refuse(number, given)
        elif given.get("type") == "tool_use":
            while index < len(blocks) and blocks[index].kind == "text":
                if offset < len(blocks[index].joined):
                    raise refuse(number, given)
                index, offset = index + 1, 0
            here = blocks[index] if index < len(blocks) else None
            if here is None or (here.name, orjson.loads(here.joined)) != (
                given.get("name"),
                given.get("input"),
            ):
                raise refuse(number, given)
            index, offset = index + 1, 0
        else:
            raise refuse(number, given)
    if index < len(blocks) and blocks[index].kind == "text" and offset == len(blocks[index].joined):
        index, offset = index + 1, 0  # the cut fell at the end of a text block
    return index, offset


def _tail(text: str, words: int) -> str:
    """The last ``words`` words of ``text`` and what follows them."""
    starts = [match.start() for match in _NONSPACE.finditer(text)]
    if words <= 0 or not starts:
        return ""
    return text[starts[max(0, len(starts) - words)] :]


def _after(pieces: tuple[str, ...], offset: int) -> list[str]:
    """The pieces of a text from character ``offset`` on (a piece cut in two keeps its end)."""
    out, at = [], 0
    for piece in pieces:
        if at + len(piece) > offset:
            out.append(piece[max(0, offset - at) :])
        at += len(piece)
    return out


def continued(plan: Plan, continuation: Continuation, repeat: int) -> Plan:
    """The rest of ``plan`` after ``continuation.delivered``, as this provider would stream it
    (``repeat``: words of the delivered tail a resume says again). Raises ``Mismatch``."""
    blocks = [block for block in plan.blocks if block.kind not in THINKING]
    index, offset = _match(blocks, continuation.delivered)
    rest = blocks[index:]
    if offset:  # the cut fell inside this text block: it goes on from there
        cut = blocks[index]
        said = cut.joined[:offset]
        again = _PIECE.findall(_tail(said, repeat)) if continuation.mode == "resume" else []
        rest[0] = replace(cut, pieces=(*again, *_after(cut.pieces, offset)))
    chars = sum(len(piece) for block in rest for piece in block.pieces)
    return Plan(tuple(rest), plan.stop_reason, max(1, chars // 4))
