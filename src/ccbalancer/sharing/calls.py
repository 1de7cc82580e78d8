"""Small whole answers shared among identical requests: one call in flight per key, then a
short TTL (``count_tokens``; issue 15, item 10).

The VS Code extension sends dozens of identical ``count_tokens`` calls a second
(claude-relay-service #731). Each key runs one call, in a task this object owns, so a caller
that leaves does not cancel the others' answer; identical callers meanwhile await the same
task, and a successful answer is served from memory for ``ttl`` seconds (an error deserves a
fresh try). Entries are bounded in number, oldest out first. The clock is injected.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ccbalancer.tasks import TaskOwner


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole HTTP answer: status, JSON body, headers."""

    status: int
    body: bytes
    headers: dict[str, str]


class SharedCalls:
    def __init__(self, name: str, clock: Callable[[], float], ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._answers: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._running: dict[str, asyncio.Task[Answer]] = {}
        self._owner = TaskOwner(name)
        self.calls = 0  # calls actually made (the rest were shared or cached)

    def __len__(self) -> int:
        return len(self._answers)

    async def get(self, key: str, call: Callable[[], Coroutine[Any, Any, Answer]]) -> Answer:
        now = self._clock()
        entry = self._answers.get(key)
        if entry is not None:
            if entry[0] > now:
                return entry[1]
            del self._answers[key]
        task = self._running.get(key)
        if task is None:
            self.calls += 1
            task = self._owner.spawn(call(), f"call:{key[:12]}")
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        # shielded: this caller leaving must not cancel the answer other callers wait for
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Task[Answer]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if task.cancelled() or task.exception() is not None:
            return
        answer = task.result()
        if self.ttl <= 0 or answer.status != 200:
            return
        self._answers[key] = (self._clock() + self.ttl, answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    async def close(self) -> None:
        await self._owner.close()
