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
from dataclasses import dataclass
from typing import Literal

import orjson

Kind = Literal["stream", "whole", "shared"]
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
    )
}  # fmt: skip


def select(names: list[str] | None, *, smoke: bool, burst: bool) -> list[Scenario]:
    """The scenarios to run, in the table's order. Raises ``KeyError`` for an unknown name."""
    table = SMOKE if smoke else FULL
    chosen = [table[name] for name in names] if names else list(table.values())
    return [dataclasses.replace(s, ramp=0.0) if burst else s for s in chosen]


def body(nonce: str, events: int, delay: float, *, stream: bool) -> bytes:
    """One Messages request whose prompt scripts the mock (stamped deltas) and carries
    ``nonce``; identical nonces give identical bodies."""
    directive = orjson.dumps({"stamp": True, "events": events, "delay": delay}).decode()
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": 1024,
            "stream": stream,
            "messages": [{"role": "user", "content": f"bench {nonce} <<mock {directive}>>"}],
        }
    )
