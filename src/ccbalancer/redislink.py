"""The link to Redis: how many commands may be out at once, and redis-py's exceptions mapped to
ours in one table (the only place in ccbalancer that names them).

redis-py's async pool raises ``MaxConnectionsError`` at once when all its connections are in
use; taken for "Redis is down", it switched sharing off for seconds at ~100 concurrent shared
requests (issue 14, item 12). Here a semaphore of ``max_connections`` slots stands in front of a
pool with a few connections more (the breaker channel's subscription holds one of its own): a
command waits up to ``pool_timeout`` for a slot, and a wait that runs out is ``RedisBusy`` —
the instance serves that request itself, and Redis stays in use for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from redis.asyncio import Redis

_RESERVED = 4  # pool connections beyond the slots: the health subscription and its scan
REDIS_COMMAND_TIMEOUT = 2.0  # seconds to connect, and for a command to answer


class RedisFault(Exception):
    """A Redis command did not succeed. ``event`` names it in the log; ``backs_off``: skip
    Redis for a few seconds (it is down or refusing), rather than only this once."""

    event: ClassVar[str] = "redis_unavailable"
    backs_off: ClassVar[bool] = True


class RedisDown(RedisFault):
    """Unreachable, timed out, or the connection failed (auth, loading, reset)."""


class RedisRefused(RedisFault):
    """Redis answered with an error (out of memory, read-only replica, wrong type)."""

    event = "redis_refused"


class RedisBusy(RedisFault):
    """Every connection stayed in use for ``pool_timeout``: this instance is busy, Redis is not
    down."""

    event = "redis_busy"
    backs_off = False


class RedisLink:
    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        pool_timeout: float,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        # imported here: an instance without redis.url never loads redis-py
        from redis import exceptions as rx
        from redis.asyncio import Redis

        self.redis: Redis = Redis.from_url(
            url,
            max_connections=max_connections + _RESERVED,
            socket_timeout=read_timeout,
            socket_connect_timeout=connect_timeout,
            decode_responses=False,
        )
        self._slots = asyncio.Semaphore(max_connections)
        self._wait = pool_timeout
        # First match wins: MaxConnectionsError is a ConnectionError, ResponseError a RedisError.
        self._table: tuple[tuple[type[BaseException], type[RedisFault]], ...] = (
            (rx.MaxConnectionsError, RedisBusy),
            (rx.ConnectionError, RedisDown),
            (rx.TimeoutError, RedisDown),
            (rx.ResponseError, RedisRefused),
            (rx.RedisError, RedisDown),
            (OSError, RedisDown),
        )
        self._foreign = (rx.RedisError, OSError)

    async def close(self) -> None:
        await self.redis.aclose()

    @contextlib.asynccontextmanager
    async def use(self, wait: float | None = None) -> AsyncIterator[Redis]:
        """One slot for the commands inside, waited for up to ``wait`` (``pool_timeout`` by
        default); their failures come out as ``RedisFault``."""
        wait = self._wait if wait is None else max(wait, self._wait)
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            raise RedisBusy(f"no free Redis connection within {wait:g}s") from None
        try:
            async with self.mapped():
                yield self.redis
        finally:
            self._slots.release()

    @contextlib.asynccontextmanager
    async def mapped(self) -> AsyncIterator[None]:
        """Map redis-py's exceptions without taking a slot (a pub/sub connection of its own).
        The original stays chained as ``__cause__`` for the DEBUG log; it never reaches a
        client."""
        try:
            yield
        except self._foreign as exc:
            raise self.fault(exc) from exc

    def fault(self, exc: BaseException) -> RedisFault:
        for foreign, ours in self._table:
            if isinstance(exc, foreign):
                return ours(f"{type(exc).__name__}: {exc}"[:200])
        return RedisDown(type(exc).__name__)  # pragma: no cover - the table ends in catch-alls
