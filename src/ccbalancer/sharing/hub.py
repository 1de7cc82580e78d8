"""The hub owns every upstream call and decides who shares what (DESIGN.md section 7).

A request either replays a cached answer, joins an identical one in flight, or leads a new one.
The upstream call runs in a task owned here, not by the leader's connection, so the leader
leaving never cuts the followers. When the last subscriber leaves, an uncommitted call is
cancelled at once (joining a call that has produced nothing risks inheriting its stall, see
CLAUDE_CODE.md section 6), while a committed one keeps going for ``orphan_grace`` seconds so a
retry can join it or find it in the cache.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ccbalancer.sharing.broadcast import Broadcast, abandon
from ccbalancer.sharing.cache import ResponseCache
from ccbalancer.tasks import TaskOwner
from ccbalancer.timers import Handle, Scheduler

Producer = Callable[[Broadcast], Awaitable[None]]


@dataclass(slots=True)
class _Live:
    task: asyncio.Task[None]
    broadcast: Broadcast
    timer: Handle | None = None


class Hub:
    def __init__(
        self,
        clock: Callable[[], float],
        cache_ttl: float,
        cache_bytes: int,
        orphan_grace: float,
        join_window: float,
        timers: Scheduler | None = None,
    ) -> None:
        self._clock = clock
        self._timers = timers  # None: the running loop
        self.cache = ResponseCache(cache_ttl, cache_bytes, clock)
        self.orphan_grace = orphan_grace
        self.join_window = join_window  # an in-flight call older than this is not joined
        self.inflight: dict[str, Broadcast] = {}
        self._live: dict[int, _Live] = {}  # id(broadcast) -> its producer task and timer
        self._owner = TaskOwner("hub")
        self._ids = itertools.count(1)

    def configure(
        self, cache_ttl: float, cache_bytes: int, orphan_grace: float, join_window: float
    ) -> None:
        self.cache.configure(cache_ttl, cache_bytes)
        self.orphan_grace = orphan_grace
        self.join_window = join_window

    @property
    def live(self) -> int:
        """Upstream calls currently running."""
        return len(self._live)

    def find(self, key: str | None) -> tuple[Broadcast, str] | None:
        """A cached answer (role ``cache``) or a joinable call in flight (role ``follower``)."""
        if key is None:
            return None
        cached = self.cache.get(key)
        if cached is not None:
            return cached, "cache"
        broadcast = self.inflight.get(key)
        if (
            broadcast is not None
            and not broadcast.trimmed
            and broadcast.failure is None
            and self._clock() - broadcast.created <= self.join_window
        ):
            return broadcast, "follower"
        return None

    def lead(self, key: str | None, max_bytes: int, producer: Producer, name: str) -> Broadcast:
        broadcast = Broadcast(key, max_bytes, self._clock())
        if key is not None:
            self.inflight[key] = broadcast
        task = self._owner.spawn(self._run(broadcast, producer), name)
        self._live[id(broadcast)] = _Live(task, broadcast)
        # A task cancelled before its first step never enters _run, so its finally never runs
        # (the leader left at once, abort, close): the done callback always does.
        task.add_done_callback(lambda _: self._finish(broadcast))
        return broadcast

    async def _run(self, broadcast: Broadcast, producer: Producer) -> None:
        try:
            await producer(broadcast)
        finally:
            self._finish(broadcast)

    def _finish(self, broadcast: Broadcast) -> None:
        """Once per call, however its task ended: every subscriber gets an end, the registry
        forgets the call, and only a clean success is kept for replay."""
        live = self._live.pop(id(broadcast), None)
        if live is None:
            return
        if live.timer is not None:
            live.timer.cancel()
        if not broadcast.done:  # cancelled or crashed
            abandon(broadcast, 500, "api_error", "the upstream call was abandoned; retry")
        self._unregister(broadcast)
        if broadcast.key is not None and broadcast.succeeded:
            self.cache.put(broadcast.key, broadcast)

    def _unregister(self, broadcast: Broadcast) -> None:
        if broadcast.key is not None and self.inflight.get(broadcast.key) is broadcast:
            del self.inflight[broadcast.key]

    def subscribe(self, broadcast: Broadcast) -> int:
        sub_id = next(self._ids)
        broadcast.subscribers += 1
        live = self._live.get(id(broadcast))
        if live is not None and live.timer is not None:
            live.timer.cancel()
            live.timer = None
        return sub_id

    def unsubscribe(self, broadcast: Broadcast) -> None:
        broadcast.subscribers -= 1
        if broadcast.subscribers > 0 or broadcast.done:
            return
        live = self._live.get(id(broadcast))
        if live is None:
            return
        # The grace exists so a retry can join or find the answer in the cache; a call without
        # a key (sharing off) can do neither, so it stops with its last client.
        if broadcast.head is None or broadcast.key is None or self.orphan_grace <= 0:
            self._unregister(broadcast)
            live.task.cancel()
        else:
            timers = self._timers or asyncio.get_running_loop()
            live.timer = timers.call_at(
                timers.time() + self.orphan_grace, lambda: self._expire(broadcast)
            )

    def _expire(self, broadcast: Broadcast) -> None:
        live = self._live.get(id(broadcast))
        if live is not None and broadcast.subscribers == 0 and not broadcast.done:
            self._unregister(broadcast)
            live.task.cancel()

    def sweep(self) -> None:
        self.cache.sweep()

    def abort(self, message: str) -> None:
        """End every running call: committed streams get an ``event: error``, waiting clients
        a 503. Used after the shutdown drain timeout."""
        for live in list(self._live.values()):
            if not live.broadcast.done:
                abandon(live.broadcast, 503, "overloaded_error", message)
            live.task.cancel()

    async def drain(self, timeout: float) -> None:
        """Let running calls finish (bounded), for graceful shutdown."""
        await self._owner.drain(timeout)

    async def close(self) -> None:
        await self._owner.close()
        for live in list(self._live.values()):  # tasks that close() could not wait for
            self._finish(live.broadcast)
        self.inflight.clear()
        self.cache.clear()
