"""The clock and timers the request path uses: the event loop itself, or a test's fake.

Cooldowns, the orphan grace and an attempt's deadline are timers on a ``Scheduler``, so
tests drive them by advancing a fake clock instead of sleeping (STYLE.md). An asyncio event
loop satisfies the protocol as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle: ...
