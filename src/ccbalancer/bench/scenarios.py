"""The benchmark's scenarios and the request bodies they send.

A scenario is pure data: how many concurrent clients, how many stamped text deltas each
response carries and how far apart the mock sends them. The full set is what the targets in
``docs/benchmarks.md`` are measured on; the smoke set has the same shapes at a size that runs
in seconds (CI checks completeness with it, never timing). Every body carries a nonce so
request sharing (DESIGN.md section 7) cannot serve a scenario from one upstream call — except
the ``shared`` scenario, whose clients send one identical body on purpose.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import orjson

Kind = Literal["stream", "whole", "shared"]
Json = dict[str, Any]
MODEL = "claude-sonnet-4-5"
PROVIDER = "bench"  # the provider name the bench's balancer config and direct URLs use
CLIENT_KEY = "bench-client"  # one client identity for every request (sharing is per client)


@dataclass(frozen=True, slots=True)
class Scenario:
    """``clients`` concurrent streams, or for ``whole`` (non-streaming) the concurrency of
    ``requests`` requests in total; each response carries ``events`` stamped text deltas sent
    ``delay`` seconds apart.

    ``ramp``: the stream starts are spread evenly over this many seconds (``--burst``: 0, all
    at once). Opening a stream costs the mock, the balancer and the client together about a
    millisecond of CPU, so a thousand opened within one 50 ms tick would queue every event of
    the first second behind a set-up storm a real fleet of Claude Code sessions never makes;
    the ramp keeps the set-up rate sustainable while still holding every stream open at once
    (the ramp is shorter than a stream)."""

    name: str
    title: str
    kind: Kind
    clients: int
    events: int
    delay: float
    requests: int = 0
    ramp: float = 0.0
    context: int = 0  # bytes of Claude Code-like context (system, tools, history) per body

    @property
    def label(self) -> str:
        """The title with how the clients start."""
        if self.kind == "whole":
            return self.title
        return f"{self.title}, {f'starts over {self.ramp:g} s' if self.ramp else 'all at once'}"

    @property
    def deadline(self) -> float:
        """A generous bound on one run, for the per-request timeouts."""
        if self.kind == "whole":
            return 120.0 + self.requests / 50
        return 60.0 + self.ramp + 3 * self.events * self.delay + self.events / 500


FULL: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("streams100", "100 streams x 200 events at 20 ms", "stream", 100, 200,
                 0.02, ramp=1.0),
        Scenario("streams1000", "1,000 streams x 100 events at 50 ms", "stream", 1000,
                 100, 0.05, ramp=2.0),
        Scenario("flatout", "20 streams x 5,000 events flat out", "stream", 20, 5000, 0.0),
        Scenario(
            "nonstream", "10,000 non-streaming requests at concurrency 50", "whole", 50, 5, 0.0,
            requests=10_000,
        ),
        Scenario("shared", "100 identical clients share 1 stream (200 at 20 ms)", "shared", 100,
                 200, 0.02),
        Scenario(
            "bigbody", "1,000 non-streaming requests with a 300 KB context at concurrency 20",
            "whole", 20, 5, 0.0, requests=1000, context=300_000,
        ),
    )
}  # fmt: skip

SMOKE: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("streams100", "smoke: 10 streams x 20 events at 5 ms", "stream", 10, 20, 0.005,
                 ramp=0.05),
        Scenario("streams1000", "smoke: 50 streams x 10 events at 5 ms", "stream", 50, 10, 0.005,
                 ramp=0.05),
        Scenario("flatout", "smoke: 5 streams x 200 events flat out", "stream", 5, 200, 0.0),
        Scenario("nonstream", "smoke: 100 non-streaming at concurrency 10", "whole", 10, 5, 0.0,
                 requests=100),
        Scenario("shared", "smoke: 10 identical clients share 1 stream", "shared", 10, 20, 0.005),
        Scenario("bigbody", "smoke: 20 non-streaming with a 300 KB context", "whole", 5, 5, 0.0,
                 requests=20, context=300_000),
    )
}  # fmt: skip


def select(names: list[str] | None, *, smoke: bool, burst: bool) -> list[Scenario]:
    """The scenarios to run, in the table's order. Raises ``KeyError`` for an unknown name."""
    table = SMOKE if smoke else FULL
    chosen = [table[name] for name in names] if names else list(table.values())
    return [dataclasses.replace(s, ramp=0.0) if burst else s for s in chosen]


def body(nonce: str, events: int, delay: float, *, stream: bool, context: int = 0) -> bytes:
    """One Messages request whose prompt scripts the mock (stamped deltas) and carries
    ``nonce``; identical nonces give identical bodies. ``context``: about that many bytes of
    what Claude Code sends before the prompt (a system prompt, tool definitions, a tool-using
    history), the same for every body of that size."""
    directive = orjson.dumps({"stamp": True, "events": events, "delay": delay}).decode()
    text = f"bench {nonce} <<mock {directive}>>"
    request: dict[str, object] = {"model": MODEL, "max_tokens": 1024, "stream": stream}
    if not context:
        request["messages"] = [{"role": "user", "content": text}]
        return orjson.dumps(request)
    system, tools, history = _context(context)
    last = {"role": "user", "content": [  # the last tool call's result, then the prompt
        {"type": "tool_result", "tool_use_id": history[-1]["content"][-1]["id"],
         "content": [{"type": "text", "text": "done"}]},
        {"type": "text", "text": text},
    ]}  # fmt: skip
    request |= {"system": system, "tools": tools, "messages": [*history, last]}
    return orjson.dumps(request)


class Bodies(Sequence[bytes]):
    """``count`` bodies made when asked for: a thousand 300 KB bodies are never all held."""

    def __init__(self, count: int, make: Callable[[int], bytes]) -> None:
        self._count, self._make = count, make

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self._make(i) for i in range(self._count)[index]]
        if not -self._count <= index < self._count:
            raise IndexError(index)
        return self._make(index % self._count)


_WORDS = (
    "def", "return", "self.items", "if not found:", "for line in lines:", "raise ValueError",
    "# the caller holds the lock", "await", "x: int = 0", "{", "}", "import os", "path",
)  # fmt: skip


def _text(size: int, seed: int) -> str:
    """Code-like text of about ``size`` characters (deterministic)."""
    words, total, i = [], 0, seed
    while total < size:
        word = _WORDS[(i * 7 + seed) % len(_WORDS)]
        words.append(word)
        total += len(word) + 1
        i += 1
    return " ".join(words)


@functools.cache
def _context(size: int) -> tuple[list[Json], list[Json], list[Json]]:
    """System blocks, 12 tools and a history of tool calls and results of about ``size``
    bytes in all, shaped like a Claude Code main-loop request (CLAUDE_CODE.md section 3);
    cached per size, so every body of a run shares the objects and differs in its prompt."""
    system: list[Json] = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": _text(7000, 1), "cache_control": {"type": "ephemeral"}},
    ]
    tools: list[Json] = [
        {
            "name": f"Tool{i}",
            "description": _text(1500, i),
            "input_schema": {
                "type": "object",
                "properties": {f"p{j}": {"type": "string", "description": _text(80, j)}
                               for j in range(6)},
                "required": ["p0"],
            },
        }
        for i in range(12)
    ]  # fmt: skip
    history: list[Json] = []
    turn = 0
    while len(orjson.dumps([system, tools, history])) < size:
        tool_id = f"toolu_bench_{turn:05d}"
        history += [
            {"role": "user", "content": [{"type": "text", "text": _text(200, turn)}]}
            if not history
            else {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_bench_{turn - 1:05d}",
                 "content": [{"type": "text", "text": _text(3500, turn)}]},
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": _text(300, turn)},
                {"type": "tool_use", "id": tool_id, "name": "Tool1",
                 "input": {"p0": _text(60, turn)}},
            ]},
        ]  # fmt: skip
        turn += 1
    return system, tools, history  # ends with an assistant turn calling a tool
