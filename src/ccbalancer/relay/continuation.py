"""Finishing a cut answer on another provider: the continuation request (sans-IO).

When a committed stream fails, the client already holds part of a message. ``Cut`` is what it
holds, rebuilt from the answer's log; ``continuation_body`` is the request that asks another
provider to finish exactly that message:

* ``prefill`` — the delivered content as a trailing assistant message (its last text stripped
  of trailing whitespace, which the API refuses; the continuation's text starts with it again
  and ``relay.splice`` drops it). Exact, but the Anthropic API accepts it only from models
  before Claude 4.6 and never with extended thinking.
* ``resume`` — the delivered content as an assistant turn, then a short user turn asking to go
  on exactly where it stopped (what Claude Code itself does after a cut). Works on every model;
  a model may repeat the tail, which ``relay.splice`` removes.

Either way thinking is turned off for the continuation (a thinking block's signature belongs to
the provider that made it, and prefill refuses thinking), thinking blocks are left out of what
is re-sent, and the request's own thinking-related options go with them. Tool calls that were
delivered complete are re-sent as they were; in ``resume`` each gets a result saying it has
not run yet, since the API wants every tool call answered before the next user text (the
client never sees that text). ``why_not`` names the cuts that cannot be continued validly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

RESUME_PROMPT = (
    "Your previous response was cut off mid-stream. Continue it exactly where it stops: do "
    "not repeat anything already written, do not start over, and do not mention the "
    "interruption."
)
PENDING_TOOL = (
    "This tool call has not run yet (your response was cut off). Do not call it again; "
    "continue your response where it stopped, and end your turn when it is complete."
)
# Claude models before 4.6 accept an assistant prefill; 4.6 and later answer 400.
_CLAUDE = re.compile(r"claude-(?:(?:opus|sonnet|haiku)-)?(\d+)(?:[-.](\d{1,2}))?(?!\d)")


@dataclass(slots=True)
class Cut:
    """What the client holds when its stream failed."""

    blocks: list[dict[str, Any]]  # the complete content blocks, in the client's order
    open_kind: str | None = None  # the kind of the block the cut fell in, if one was open
    open_text: str = ""  # that block's text so far (text blocks)
    next_index: int = 0  # the index the client expects for the next new block
    thinking: bool = False  # the client holds thinking from the failed provider
    output_tokens: int = 0  # the failed provider's last reported count (0: none)
    held: list[str] = field(default_factory=list)  # block kinds the client never got

    @property
    def tools(self) -> list[dict[str, Any]]:
        return [b for b in self.blocks if b.get("type") == "tool_use"]

    def delivered(self) -> list[dict[str, Any]]:
        """The content to re-send: text and tool calls, thinking left out, the open text
        block included as far as it got."""
        out: list[dict[str, Any]] = []
        for block in self.blocks:
            if block.get("type") == "text":
                out.append({"type": "text", "text": block.get("text", "")})
            elif block.get("type") == "tool_use":
                out.append({k: block[k] for k in ("type", "id", "name", "input") if k in block})
        if self.open_kind == "text":
            out.append({"type": "text", "text": self.open_text})
        return [b for b in out if b.get("type") != "text" or b["text"]]

    def text_chars(self) -> int:
        """Characters of text and tool input delivered (for an output-token estimate)."""
        chars = len(self.open_text)
        for block in self.blocks:
            kind = block.get("type")
            if kind == "tool_use":
                chars += len(orjson.dumps(block.get("input") or {}))
            else:
                chars += len(str(block.get("text") or block.get("thinking") or ""))
        return chars


def why_not(cut: Cut, hold_tool_input: bool) -> str | None:
    """Why a cut cannot be continued, or None."""
    if cut.open_kind in ("thinking", "redacted_thinking") and not any(
        b.get("type") in ("text", "tool_use") for b in cut.blocks
    ):
        return "cut inside thinking, before any text"
    if cut.open_kind == "tool_use" and not hold_tool_input:
        return "cut inside a tool call's input (settings.recovery.hold_tool_input is off)"
    if cut.open_kind not in (None, "text", "thinking", "redacted_thinking", "tool_use"):
        return f"cut inside a {cut.open_kind} block"
    if any(b.get("type") not in ("text", "tool_use", "thinking", "redacted_thinking")
           for b in cut.blocks):  # fmt: skip
        return "the answer holds server tool blocks, which cannot be re-sent as they were"
    return None


def accepts_prefill(model: str) -> bool:
    """Whether a Claude model takes an assistant prefill (before 4.6); unknown names: no."""
    match = _CLAUDE.search(model.lower())
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return (major, minor) < (4, 6)


def thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") not in (None, "disabled")


def mode_for(
    setting: str, provider_type: str, upstream_model: str, body: dict[str, Any], cut: Cut
) -> str:
    """``prefill``, ``resume`` or ``none`` for one candidate (``setting``: its
    ``continuation``; ``auto`` picks prefill where the model takes it). A prefill that would
    end in a tool call nobody answered, or continue a forced tool choice, is not one the API
    is known to take: those go as a resume."""
    if setting == "none":
        return "none"
    choice = body.get("tool_choice")
    forced = isinstance(choice, dict) and choice.get("type") in ("any", "tool")
    delivered = cut.delivered()
    fits = not (
        thinking_on(body)
        or forced
        or (delivered and delivered[-1].get("type") == "tool_use")
        or provider_type != "anthropic"
    )
    if setting == "prefill":  # the operator knows the model takes it
        return "prefill" if fits else "resume"
    if setting == "auto" and fits and accepts_prefill(upstream_model):
        return "prefill"
    return "resume"


def continuation_body(body: dict[str, Any], cut: Cut, mode: str) -> tuple[dict[str, Any], str]:
    """The request that finishes ``cut`` in ``mode``, and the whitespace stripped from the end
    of a prefill (the continuation's text starts with it again)."""
    out = {k: v for k, v in body.items() if k not in ("thinking", "provider")}
    if thinking_on(body):
        out["thinking"] = {"type": "disabled"}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        # a forced tool use was the answer's start, not what it still owes
        out["tool_choice"] = {**{k: v for k, v in choice.items() if k != "name"}, "type": "auto"}
    _drop_thinking_edits(out)
    messages = [_without_thinking(m) for m in body.get("messages") or [] if isinstance(m, dict)]
    delivered = cut.delivered()
    stripped = ""
    if mode == "prefill":
        if delivered and delivered[-1].get("type") == "text":
            text = delivered[-1]["text"]
            kept = text.rstrip()  # any whitespace the API would refuse, Unicode's too
            stripped = text[len(kept) :]
            delivered[-1] = {"type": "text", "text": kept}
            if not kept:
                delivered.pop()
        if delivered:
            _append_assistant(messages, delivered)
    elif delivered:
        _append_assistant(messages, delivered)
        answers: list[dict[str, Any]] = [
            {"type": "tool_result", "tool_use_id": tool["id"], "content": PENDING_TOOL}
            for tool in delivered
            if tool.get("type") == "tool_use"
        ]
        messages.append(
            {"role": "user", "content": [*answers, {"type": "text", "text": RESUME_PROMPT}]}
        )
    # nothing delivered yet (the open block was empty): the original question again
    out["messages"] = messages
    return out, stripped


def _append_assistant(messages: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> None:
    """The delivered blocks as the last assistant message; a client's own trailing assistant
    message (its prefill) is extended, since two in a row are refused."""
    last = messages[-1] if messages else None
    if last is None or last.get("role") != "assistant":
        messages.append({"role": "assistant", "content": blocks})
        return
    content = last.get("content")
    earlier = (
        [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    )
    messages[-1] = {**last, "content": [*earlier, *blocks]}


def _without_thinking(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if message.get("role") != "assistant" or not isinstance(content, list):
        return message
    kept = [
        b for b in content
        if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))
    ]  # fmt: skip
    return message if len(kept) == len(content) else {**message, "content": kept}


def _drop_thinking_edits(out: dict[str, Any]) -> None:
    """Context-management edits about thinking mean nothing (and may be refused) with
    thinking off."""
    management = out.get("context_management")
    if not isinstance(management, dict) or not isinstance(management.get("edits"), list):
        return
    edits = [
        e for e in management["edits"]
        if not (isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking"))
    ]  # fmt: skip
    if edits:
        out["context_management"] = {**management, "edits": edits}
    else:
        del out["context_management"]
