"""Budgets shared by every instance on one Redis (``settings.redis.url``).

Per client, with ``{p}`` the prefix ``ccb:acct:``:

* ``{p}{client}:d:{YYYY-MM-DD}`` and ``{p}{client}:m:{YYYY-MM}`` — hashes of the day's and
  the month's totals (``requests``, ``fresh``, ``cache_read``, ``cache_write``, ``output``,
  ``tokens``, ``usd``), added to with ``HINCRBY``/``HINCRBYFLOAT`` and expiring a day after
  their window ends;
* ``{p}{client}:rpm:{minute}`` — requests admitted in that minute (expires after two);
* ``{p}{client}:flight`` — a sorted set of the requests in flight, each scored with the end of
  its lease. A lease lasts ``LEASE_MS`` and the instance holding it renews it while the request
  runs, so the slots of an instance that died free themselves.

Admission is one Lua script: every check and, only when all pass, the per-minute count and the
lease — atomic, so two instances cannot both take the last slot. Usage is added when an answer
ends. Two instances together can therefore pass a budget by at most the requests they had in
flight when it ran out. Redis is never waited on for long: after an error the caller decides
on its own counts for ``BACKOFF`` seconds, and a warning is logged at most once a minute. The
commands go through the instance's one ``RedisLink`` (its connection slots, and redis-py's
exceptions mapped): a full pool is "busy", decided locally this once, never "down".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ccbalancer.accounting.budgets import (
    Refusal,
    Totals,
    Windows,
    budget_refusal,
    rate_refusal,
)
from ccbalancer.accounting.clients import Client
from ccbalancer.redislink import RedisFault, RedisLink
from ccbalancer.tasks import TaskOwner

Warn = Callable[[str, str], None]

LEASE_MS = 60_000
RENEW_EVERY = 20.0
BACKOFF = 5.0
_WRITE_WAIT = 5.0  # usage written after an answer may wait this long for a free connection
_WARN_EVERY = 60.0
_KEEP_AFTER_WINDOW_MS = 86_400_000

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function used(key, field) return tonumber(redis.call('HGET', key, field)) or 0 end
local checks = {{KEYS[1], 'tokens', 'tokens_per_day', ARGV[1]},
                {KEYS[1], 'usd', 'usd_per_day', ARGV[2]},
                {KEYS[2], 'usd', 'usd_per_month', ARGV[3]}}
for _, c in ipairs(checks) do
  local limit = tonumber(c[4])
  if limit > 0 then
    local u = used(c[1], c[2])
    if u >= limit then return {c[3], tostring(u)} end
  end
end
local rpm, slots, lease = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
if rpm > 0 and (tonumber(redis.call('GET', KEYS[3])) or 0) >= rpm then
  return {'requests_per_minute', tostring(rpm)}
end
if slots > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if redis.call('ZCARD', KEYS[4]) >= slots then return {'max_concurrency', tostring(slots)} end
end
if rpm > 0 then
  redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], 120000)
end
if slots > 0 then
  redis.call('ZADD', KEYS[4], now + lease, ARGV[6])
  redis.call('PEXPIRE', KEYS[4], lease * 2)
end
return {}
"""
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
  redis.call('PEXPIRE', key, tonumber(ARGV[1]) * 2)
end
return #KEYS
"""


class Unavailable(Exception):
    """Redis cannot decide now: the caller decides on its own counts."""


class SharedLedger:
    def __init__(
        self,
        link: RedisLink,
        warn: Warn,
        *,
        prefix: str = "ccb:acct:",
        lease_ms: int = LEASE_MS,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self._link = link  # owned by the runtime (sharing uses it too)
        self._prefix = prefix
        self._lease_ms = lease_ms
        self._renew_every = renew_every
        self._warn = warn
        self._warned_at = -_WARN_EVERY
        self._down_until = 0.0
        self._closed = False
        self._held: dict[str, str] = {}  # request id -> client, leases this instance renews
        self._tasks = TaskOwner("redis-accounting")
        self._admit = link.redis.register_script(_ADMIT)
        self._renew = link.redis.register_script(_RENEW)

    def _key(self, name: str, kind: str, window: str | int) -> str:
        return f"{self._prefix}{name}:{kind}:{window}"

    def _flight(self, name: str) -> str:
        return f"{self._prefix}{name}:flight"

    async def admit(self, client: Client, request_id: str, w: Windows) -> Refusal | None:
        """Check and count atomically; raises ``Unavailable`` when Redis cannot answer."""
        limits = client.limits
        if limits is None:
            return None
        if time.monotonic() < self._down_until:
            raise Unavailable
        name = client.name
        keys = [
            self._key(name, "d", w.day),
            self._key(name, "m", w.month),
            self._key(name, "rpm", w.minute),
            self._flight(name),
        ]
        args: list[Any] = [
            limits.tokens_per_day or 0,
            limits.usd_per_day or 0,
            limits.usd_per_month or 0,
            limits.requests_per_minute or 0,
            limits.max_concurrency or 0,
            request_id,
            self._lease_ms,
        ]
        try:
            async with self._link.use() as redis:
                reply = await self._admit(keys=keys, args=args, client=redis)
        except RedisFault as fault:
            self._unreachable(fault)
            raise Unavailable from None
        if not reply:
            if limits.max_concurrency is not None:
                self._held[request_id] = name
            return None
        key, used = reply[0].decode(), float(reply[1])
        if key in ("requests_per_minute", "max_concurrency"):
            return rate_refusal(name, key, int(used), w)
        limit = float(getattr(limits, key))
        ends = w.month_ends if key == "usd_per_month" else w.day_ends
        return budget_refusal(name, key, limit, used, ends, w.now)

    def finish(self, request_id: str, name: str, w: Windows) -> None:
        """The request ended: count it and free its slot (never waits)."""
        held = self._held.pop(request_id, None)
        self._spawn(self._finish(request_id, name, held is not None, w), "finish")

    async def _finish(self, request_id: str, name: str, held: bool, w: Windows) -> None:
        async with self._link.use(_WRITE_WAIT) as redis, redis.pipeline(transaction=False) as pipe:
            for key in (self._key(name, "d", w.day), self._key(name, "m", w.month)):
                pipe.hincrby(key, "requests", 1)
            self._expire(pipe, name, w)
            if held:
                pipe.zrem(self._flight(name), request_id)
            await pipe.execute()

    def add(self, name: str, used: Totals, w: Windows) -> None:
        """Add an answer's usage to the client's day and month (never waits)."""
        self._spawn(self._add(name, used, w), "usage")

    async def _add(self, name: str, used: Totals, w: Windows) -> None:
        async with self._link.use(_WRITE_WAIT) as redis, redis.pipeline(transaction=False) as pipe:
            for key in (self._key(name, "d", w.day), self._key(name, "m", w.month)):
                for field in ("fresh", "cache_read", "cache_write", "output"):
                    pipe.hincrby(key, field, getattr(used, field))
                pipe.hincrby(key, "tokens", used.tokens)
                pipe.hincrbyfloat(key, "usd", used.usd)
            self._expire(pipe, name, w)
            await pipe.execute()

    def _expire(self, pipe: Any, name: str, w: Windows) -> None:
        pipe.pexpire(self._key(name, "d", w.day), _ms(w.day_ends - w.now) + _KEEP_AFTER_WINDOW_MS)
        pipe.pexpire(
            self._key(name, "m", w.month), _ms(w.month_ends - w.now) + _KEEP_AFTER_WINDOW_MS
        )

    async def totals(self, names: list[str], w: Windows) -> dict[str, tuple[Totals, Totals]]:
        """Each client's day and month, from Redis; raises ``Unavailable``."""
        if time.monotonic() < self._down_until:
            raise Unavailable
        try:
            async with self._link.use() as redis, redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self._key(name, "d", w.day))
                    pipe.hgetall(self._key(name, "m", w.month))
                replies = await pipe.execute()
        except RedisFault as fault:
            self._unreachable(fault)
            raise Unavailable from None
        found = {}
        for i, name in enumerate(names):
            found[name] = (_totals(replies[2 * i]), _totals(replies[2 * i + 1]))
        return found

    async def renew_leases(self) -> None:
        """Keep this instance's slots alive while their requests run (until cancelled)."""
        while True:
            await asyncio.sleep(self._renew_every)
            held = dict(self._held)
            if not held:
                continue
            keys = [self._flight(name) for name in held.values()]
            try:
                async with self._link.use() as redis:
                    await self._renew(keys=keys, args=[self._lease_ms, *held], client=redis)
            except RedisFault as fault:
                self._unreachable(fault)

    async def close(self) -> None:
        self._closed = True
        await self._tasks.drain(2.0)  # usage of the answers that just ended
        await self._tasks.close()

    def _spawn(self, coro: Any, what: str) -> None:
        if self._closed:  # a request that ends after the close: its counts go with the instance
            coro.close()
            return
        self._tasks.spawn(self._guarded(coro), what)

    async def _guarded(self, coro: Any) -> None:
        try:
            await coro
        except RedisFault as fault:
            self._unreachable(fault)

    def _unreachable(self, fault: RedisFault) -> None:
        now = time.monotonic()
        if fault.backs_off:  # down or refusing; a busy pool is only this once
            self._down_until = now + BACKOFF
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            self._warn(fault.event, f"accounting: {fault}")


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _totals(fields: dict[bytes, bytes]) -> Totals:
    def number(name: str) -> int:
        return int(fields.get(name.encode()) or 0)

    return Totals(
        number("requests"),
        number("fresh"),
        number("cache_read"),
        number("cache_write"),
        number("output"),
        float(fields.get(b"usd") or 0.0),
    )
