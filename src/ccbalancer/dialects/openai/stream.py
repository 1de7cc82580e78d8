"""OpenAI ``chat.completion.chunk`` objects -> Anthropic stream events (PROTOCOL.md c.2).

``OpenAIStreamTranslator`` is a sans-IO state machine for one response: parsed chunks in,
``(event name, payload)`` pairs out, as early as each is known, so a client sees text while
the upstream is still writing. Reasoning (``reasoning_content`` / ``reasoning``, or thinking
parts of a ``content`` list, see ``parts``) becomes thinking blocks closed by a synthetic
signature, text becomes text blocks, tool calls become tool_use blocks streamed with
``input_json_delta`` (an id the provider repeats within the answer is made unique).
Anthropic blocks never interleave, so when a second tool call starts before the open one's
arguments are complete JSON, that call and any later one are buffered and emitted whole, in
index order, at ``finish_reason``. The closing ``message_delta`` waits for the usage chunk
that follows ``finish_reason`` (or ``[DONE]`` / EOF) and maps it with
``usage.anthropic_usage``; until then ``message_start`` carries the caller's estimate of
input tokens. A stream that ends without ``finish_reason`` ends without ``message_delta``,
which tells the caller the answer was cut short. Payloads are fresh dicts, never copies.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ccbalancer.dialects.base import SYNTHETIC_SIGNATURE_PREFIX
from ccbalancer.dialects.openai.errors import map_stream_error
from ccbalancer.dialects.openai.parts import content_pieces
from ccbalancer.dialects.openai.usage import anthropic_usage

# Claude Code echoes thinking blocks back on later turns; this prefix lets the proxy strip
# them before they could reach an Anthropic upstream, which rejects foreign signatures.
SYNTHETIC_SIGNATURE = SYNTHETIC_SIGNATURE_PREFIX + "openai-reasoning"

Events = list[tuple[str, dict[str, Any]]]

_STOP_REASONS = {"length": "max_tokens", "content_filter": "refusal"}
# Tool calls without an `index` (some Gemini-compatible servers) get keys above any real index
# so that buffered calls still sort in order of appearance after the indexed ones.
_UNINDEXED = 1 << 30

_PENDING, _STREAMING, _CLOSED = 0, 1, 2


class _ToolCall:
    __slots__ = ("has_args", "id", "key", "name", "parts", "state")

    def __init__(self, key: int) -> None:
        self.key = key
        self.id: str | None = None
        self.name: str | None = None
        self.parts: list[str] = []  # argument fragments: buffered (pending) or sent (streaming)
        self.has_args = False  # a non-blank fragment was sent
        self.state = _PENDING


class OpenAIStreamTranslator:
    """One upstream response: ``feed`` each chunk, then ``done`` at ``[DONE]`` or ``eof``."""

    __slots__ = (
        "_buffering",
        "_calls",
        "_ended",
        "_input_estimate",
        "_last_key",
        "_model",
        "_next_index",
        "_open",
        "_open_index",
        "_open_tool",
        "_pending",
        "_saw_tool",
        "_started",
        "_stop_reason",
        "_tool_ids",
        "_usage",
    )

    def __init__(self, client_model: str, input_estimate: int = 0) -> None:
        self._model = client_model
        self._input_estimate = input_estimate
        self._started = False
        self._ended = False  # message_stop or error sent, or the stream is over
        self._next_index = 0
        self._open: str | None = None  # "thinking" | "text" | "tool"
        self._open_index = -1
        self._open_tool: _ToolCall | None = None
        self._calls: dict[int, _ToolCall] = {}
        self._pending: list[_ToolCall] = []
        self._buffering = False  # calls interleave: hold new ones until finish_reason
        self._last_key: int | None = None
        self._saw_tool = False
        self._stop_reason: str | None = None
        self._usage: dict[str, Any] | None = None
        self._tool_ids: set[str] = set()

    @property
    def ended(self) -> bool:
        """True once nothing more will be produced (message_stop or error sent, or stream over)."""
        return self._ended

    @property
    def stop_reason(self) -> str | None:
        """The mapped Anthropic stop_reason once ``finish_reason`` arrived."""
        return self._stop_reason

    def feed(self, chunk: dict[str, Any]) -> Events:
        if self._ended:
            return []
        out: Events = []
        error = chunk.get("error")
        if error:
            return self._fail(error, out)
        if not self._started:
            self._start(chunk, out)
        finished_before = self._stop_reason is not None
        choice = _first_choice(chunk.get("choices"))
        usage = _usage_of(chunk, choice)
        if usage is not None:
            self._usage = usage
        if choice is not None and not finished_before:
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, out)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                if reason == "error":  # OpenRouter: the provider failed mid-answer
                    return self._fail("upstream finished with an error", out)
                self._finish(reason, out)
        elif finished_before and usage is not None:
            # The usage chunk after finish_reason carries the final counts.
            self._end(out)
        return out

    def done(self) -> Events:
        """``data: [DONE]``: finish the message if ``finish_reason`` came, else say nothing."""
        if self._ended:
            return []
        out: Events = []
        if self._stop_reason is not None:
            self._end(out)
        self._ended = True
        return out

    def eof(self) -> Events:
        """End of the byte stream; same rule as ``done``."""
        return self.done()

    def _start(self, chunk: dict[str, Any], out: Events) -> None:
        self._started = True
        upstream_id = chunk.get("id")
        suffix = upstream_id if isinstance(upstream_id, str) and upstream_id else uuid.uuid4().hex
        message: dict[str, Any] = {
            "id": "msg_" + suffix,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                # OpenAI servers report usage only at the end; until message_delta corrects
                # it, the local estimate keeps Claude Code's context meter from reading 0 %.
                "input_tokens": self._input_estimate,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        out.append(("message_start", {"type": "message_start", "message": message}))

    def _delta(self, delta: dict[str, Any], out: Events) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            self._piece("thinking", reasoning, out)
        for kind, text in content_pieces(delta.get("content")):
            self._piece(kind, text, out)
        # `refusal` is OpenAI's explanation of a refusal: the user should read it like text.
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._piece("text", refusal, out)
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for element in tool_calls:
                if isinstance(element, dict):
                    self._tool_fragment(element, out)
        function_call = delta.get("function_call")  # the legacy single-call form
        if isinstance(function_call, dict):
            self._tool_fragment({"index": _UNINDEXED - 1, "function": function_call}, out)

    def _piece(self, kind: str, text: str, out: Events) -> None:
        """A non-empty text or thinking fragment, in the block of its kind."""
        if self._open != kind:
            self._close(out)
            if kind == "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
            else:
                block = {"type": "text", "text": ""}
            self._open_block(kind, block, out)
        field = "thinking" if kind == "thinking" else "text"
        out.append(_delta(self._open_index, {"type": f"{field}_delta", field: text}))

    def _tool_fragment(self, element: dict[str, Any], out: Events) -> None:
        key = self._tool_key(element)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = _ToolCall(key)
            self._pending.append(call)
            self._saw_tool = True
        function = element.get("function")
        if not isinstance(function, dict):
            function = {}
        # First value wins: some servers repeat id/name on every fragment.
        if call.id is None and isinstance(element.get("id"), str) and element["id"]:
            call.id = element["id"]
        if call.name is None and isinstance(function.get("name"), str) and function["name"]:
            call.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            fragment = arguments
        elif isinstance(arguments, dict):  # a few servers send the object itself
            fragment = orjson.dumps(arguments).decode()
        else:
            fragment = ""
        if call.state == _STREAMING:
            self._send_args(call, fragment, out)
        elif call.state == _PENDING:
            if fragment:
                call.parts.append(fragment)
            self._promote(out)
        elif fragment.strip():
            # Its block is already closed (its arguments were complete JSON, or text followed).
            # Failing loudly beats running a tool with corrupted input.
            raise ValueError("upstream sent arguments for a tool call that was already closed")

    def _tool_key(self, element: dict[str, Any]) -> int:
        index = element.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            key = index
        else:
            call_id = element.get("id")
            if isinstance(call_id, str) and call_id:
                known = [k for k, c in self._calls.items() if c.id == call_id]
                key = known[0] if known else _UNINDEXED + len(self._calls)
            else:
                # no index and no id: a continuation of the latest call
                key = self._last_key if self._last_key is not None else _UNINDEXED
        self._last_key = key
        return key

    def _promote(self, out: Events) -> None:
        """Start pending calls in order while no interleaving is suspected."""
        while self._pending and not self._buffering:
            call = self._pending[0]
            if call.name is None:
                return  # a block cannot start without its name; wait for it
            open_tool = self._open_tool
            if open_tool is not None and not _complete_json(open_tool.parts):
                # A new call began while the open one is unfinished: fragments may interleave.
                self._buffering = True
                return
            self._pending.pop(0)
            self._close(out)
            self._start_tool(call, out)

    def _start_tool(self, call: _ToolCall, out: Events) -> None:
        block = {
            "type": "tool_use",
            "id": self._unique_id(call.id),
            "name": call.name or "",
            "input": {},
        }
        self._open_block("tool", block, out)
        self._open_tool = call
        call.state = _STREAMING
        buffered, call.parts = call.parts, []
        self._send_args(call, "".join(buffered), out)

    def _unique_id(self, given: str | None) -> str:
        """The block's tool_use id: the provider's, unless it already named another call of
        this answer (some servers number every call ``call_0``; Claude Code would then match
        both results to one call), or a fresh one when the provider sent none. A repeat gets
        the block's index appended, so the same stream always yields the same ids."""
        if not given:
            tool_id = "toolu_" + uuid.uuid4().hex[:24]
        else:
            tool_id, n = given, 0
            while tool_id in self._tool_ids:
                n += 1
                tool_id = f"{given}_{self._next_index}" + (f"_{n}" if n > 1 else "")
        self._tool_ids.add(tool_id)
        return tool_id

    def _send_args(self, call: _ToolCall, fragment: str, out: Events) -> None:
        if not call.has_args:
            # Leading whitespace means nothing in JSON, and a blank-only prefix would make
            # the client's partial parser choke before the first real character.
            fragment = fragment.lstrip()
            if not fragment:
                return
            call.has_args = True
        call.parts.append(fragment)
        out.append(_delta(self._open_index, {"type": "input_json_delta", "partial_json": fragment}))

    def _open_block(self, kind: str, block: dict[str, Any], out: Events) -> None:
        self._open = kind
        self._open_index = self._next_index
        self._next_index += 1
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._open_index, "content_block": block},
            )
        )

    def _close(self, out: Events) -> None:
        if self._open is None:
            return
        index = self._open_index
        if self._open == "thinking":
            out.append(_delta(index, {"type": "signature_delta", "signature": SYNTHETIC_SIGNATURE}))
        elif self._open_tool is not None:
            call = self._open_tool
            if not call.has_args:  # a call without arguments still needs a JSON object
                out.append(_delta(index, {"type": "input_json_delta", "partial_json": "{}"}))
            call.state = _CLOSED
            self._open_tool = None
        out.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        self._open = None

    def _finish(self, reason: str, out: Events) -> None:
        self._close(out)
        for call in sorted(self._pending, key=lambda c: c.key):
            self._start_tool(call, out)
            self._close(out)
        self._pending.clear()
        # stop, tool_calls, function_call and provider-specific names: whether a tool block
        # was produced decides, so the stop_reason never promises a tool that is not there.
        self._stop_reason = _STOP_REASONS.get(reason, "tool_use" if self._saw_tool else "end_turn")

    def _end(self, out: Events) -> None:
        out.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason, "stop_sequence": None},
                    "usage": anthropic_usage(self._usage or {}),
                },
            )
        )
        out.append(("message_stop", {"type": "message_stop"}))
        self._ended = True

    def _fail(self, error: object, out: Events) -> Events:
        kind, message = map_stream_error(error)
        out.append(("error", {"type": "error", "error": {"type": kind, "message": message}}))
        self._ended = True
        return out


def _first_choice(choices: object) -> dict[str, Any] | None:
    """Choice 0 (Claude Code never asks for n > 1); None for the usage chunk's empty list."""
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            return choice
    return None


def _delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _complete_json(parts: list[str]) -> bool:
    try:
        orjson.loads("".join(parts))
    except orjson.JSONDecodeError:
        return False
    return True


def _usage_of(chunk: dict[str, Any], choice: dict[str, Any] | None) -> dict[str, Any] | None:
    """The chunk's usage: top-level, Groq's ``x_groq.usage``, or Moonshot's inside the
    finishing choice."""
    for holder in (chunk, chunk.get("x_groq"), choice):
        usage = holder.get("usage") if isinstance(holder, dict) else None
        if isinstance(usage, dict):
            return usage
    return None
