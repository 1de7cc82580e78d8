"""What instances share through Redis (DESIGN.md sections 6 and 7), when ``redis.url`` is set:
identical requests, and provider breakers that open.

Every instance keeps its own hub; Redis only decides, per coalescing key, which instance calls
the upstream, and carries that call's answer to the others:

* ``{prefix}{key}:lead`` — ``SET NX`` by the first instance to see the key; it leads.
* ``{prefix}{key}:log`` — a Redis Stream the leader mirrors its log into: one ``head`` entry
  (provider and returned headers) at the commit, ``frames`` entries (exact SSE bytes, every
  event of a batch in one entry), and one ``end`` entry (success, or the failure).

An instance that finds the key taken follows the stream: its own broadcast gets the head, the
events and the end exactly as the leader's did, so its local subscribers (streaming or not)
are served by the unchanged writer code. After a success both keys live ``cache.ttl`` seconds,
so the stream doubles as a shared response cache. A failure deletes the lead key at once: a
retry makes a fresh attempt, never a replay of the failure.

Redis is never on the critical path of an answer. The mirror runs in its own task and reads
the local log like a subscriber that never blocks the producer; Redis errors are logged and
the request goes on locally (claiming fails open: the instance leads itself). Only Redis
errors are (``ccbalancer.redislink`` maps them): an entry that cannot be read is reported as such,
and a bug in this module is a bug, never "Redis unavailable". A follower whose
leader vanishes (no entries before ``first_event_timeout``, or the lead key gone without an
end) makes its own upstream call; one whose leader stalls after committing ends the stream
with ``event: error`` like any other stalled stream.

Breakers: when one opens here, the provider, the remaining cooldown and the reason go to the
channel ``{prefix}health`` and to the key ``{prefix}health:{provider}`` (expiring with the
cooldown). Every other instance opens its own breaker for that long, so a provider that is
down is skipped everywhere after one instance found out; an instance that starts later reads
the keys. Recovery is not broadcast: each instance probes after the cooldown, as it would
after its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson

from ccbalancer.redislink import RedisBusy, RedisFault, RedisLink
from ccbalancer.sharing.broadcast import Broadcast, Failure, Head, Lagged, abandon
from ccbalancer.sse.parser import SSEParser
from ccbalancer.tasks import TaskOwner

Producer = Callable[[Broadcast], Awaitable[None]]
_Entry = tuple[bytes, dict[bytes, bytes]]
OpenElsewhere = Callable[[str, float, str], None]  # (provider, seconds, reason)
Warn = Callable[[str, BaseException], None]  # (event, what went wrong; its cause chained)
# What reading another instance's entry raises when it is not what this version writes
# (orjson's and the codecs' errors are ValueErrors).
_UNREADABLE = (ValueError, KeyError)

_ENTRY_BYTES = 256 * 1024  # one stream entry carries at most this much of the log
_BLOCK_MS = 500  # a follower's XREAD waits this long per call, then checks its deadlines
FOLLOW_BLOCK = _BLOCK_MS / 1000  # seconds an XREAD blocks: the link's read timeout allows it
_WARN_EVERY = 60.0  # at most one warning a minute about Redis being unreachable
_BACKOFF = 5.0  # after a Redis error, requests skip Redis this long (no connect wait each)
_END_WAIT = 5.0  # a failed answer's end entry waits this long for a free connection


class RemoteShare:
    def __init__(self, link: RedisLink, warn: Warn, *, prefix: str = "ccb:") -> None:
        self.instance = uuid.uuid4().hex[:12]
        self._link = link  # owned by the runtime (accounting uses it too)
        self._prefix = prefix
        self._warn = warn
        self._warned_at: dict[str, float] = {}
        self._down_until = 0.0
        self._tasks = TaskOwner("redis")

    async def close(self) -> None:
        await self._tasks.close()

    def producer(
        self,
        key: str,
        local: Producer,
        *,
        lead_ttl: float,
        cache_ttl: float,
        first_event_timeout: float,
        idle_timeout: float,
    ) -> Producer:
        """The hub's producer for ``key``: lead (run ``local`` and mirror it) or follow."""

        async def produce(broadcast: Broadcast) -> None:
            if time.monotonic() < self._down_until:  # Redis failed moments ago: no wait on it
                await local(broadcast)
                return
            if await self._claim(key, lead_ttl):
                await self._lead(key, broadcast, local, lead_ttl, cache_ttl)
                return
            broadcast.outcome.remote = True
            followed = await self._follow(key, broadcast, first_event_timeout, idle_timeout)
            if not followed:
                # The leader sent nothing in time: ask the upstream ourselves. Not mirrored:
                # the stream in Redis still belongs to the leader, if it is alive.
                broadcast.outcome.remote = False
                await local(broadcast)

        return produce

    # -- leading ---------------------------------------------------------------------------

    async def _claim(self, key: str, ttl: float) -> bool:
        try:
            async with self._link.use() as redis:
                won = await redis.set(
                    self._prefix + key + ":lead", self.instance, nx=True, px=_ms(ttl)
                )
                if won:  # an older answer's stream may outlive its lead key by a moment
                    await redis.delete(self._prefix + key + ":log")
        except RedisFault as fault:  # Redis down or busy: serve locally, say so now and then
            self._fault(fault)
            return True
        return bool(won)

    async def _lead(
        self, key: str, broadcast: Broadcast, local: Producer, lead_ttl: float, cache_ttl: float
    ) -> None:
        mirror = self._mirror(key, broadcast, lead_ttl, cache_ttl)
        self._tasks.spawn(mirror, f"redis-mirror:{key[:12]}")
        await local(broadcast)

    async def _mirror(
        self, key: str, broadcast: Broadcast, lead_ttl: float, cache_ttl: float
    ) -> None:
        """Copy the local log into the Redis stream, batch by batch, until the answer ends.
        Runs beside the producer; it only reads the log and never makes the producer wait.
        Each entry renews both keys, so a stream longer than ``lead_ttl`` stays claimed (a
        new claim would start a second answer in the same stream) while a leader that died
        lets its claim lapse."""
        log_key, lead_key = self._prefix + key + ":log", self._prefix + key + ":lead"
        link = self._link
        # Followers wait on this task: when every connection is busy it waits its turn (up to
        # the claim's life) rather than leave them without an answer.
        patience = lead_ttl

        async def add(fields: dict[bytes, bytes | str]) -> None:
            async with link.use(patience) as redis, redis.pipeline(transaction=False) as pipe:
                pipe.xadd(log_key, fields)  # type: ignore[arg-type]
                pipe.pexpire(log_key, _ms(max(lead_ttl, cache_ttl) + 60))
                pipe.pexpire(lead_key, _ms(lead_ttl))
                await pipe.execute()

        cursor = 0
        sent_head = False
        try:
            while True:
                if not sent_head and broadcast.head is not None:
                    head = broadcast.head
                    headers = orjson.dumps(head.headers)
                    await add({b"k": b"head", b"p": head.provider, b"h": headers})
                    sent_head = True
                end = broadcast.end
                if sent_head and end > cursor:
                    cursor, data = broadcast.frames(cursor, end, _ENTRY_BYTES)
                    await add({b"k": b"frames", b"b": data})
                    continue
                if broadcast.done and (sent_head or broadcast.head is None):
                    break
                await broadcast.wait()
            failure = broadcast.failure
            if failure is None:
                async with link.use(patience) as redis:
                    await redis.xadd(log_key, {b"k": b"end", b"ok": b"1"})
                    await redis.pexpire(log_key, _ms(cache_ttl))
                    await redis.pexpire(lead_key, _ms(cache_ttl))
            else:
                await self._end_failed(key, _failure_fields(failure))
        except Lagged:  # the log was trimmed before it could be copied: followers must not wait
            await self._end_failed(key, {b"k": b"end", b"ok": b"0", b"lagged": b"1"})
        except RedisFault as fault:
            self._fault(fault)
            await self._end_failed(key, None)

    async def _end_failed(self, key: str, fields: dict[bytes, bytes] | None) -> None:
        """A failed answer is not shared beyond the followers already reading it."""
        log_key, lead_key = self._prefix + key + ":log", self._prefix + key + ":lead"
        try:
            async with self._link.use(_END_WAIT) as redis:
                if fields is not None:
                    await redis.xadd(log_key, fields)  # type: ignore[arg-type]
                await redis.delete(lead_key)
                await redis.pexpire(log_key, 30_000)
        except RedisFault as fault:
            self._fault(fault)

    # -- following -------------------------------------------------------------------------

    async def _follow(
        self, key: str, broadcast: Broadcast, first_event_timeout: float, idle_timeout: float
    ) -> bool:
        """Serve ``broadcast`` from the leader's stream. False when nothing came at all and
        the caller should make its own upstream call."""
        log_key, lead_key = self._prefix + key + ":log", self._prefix + key + ":lead"
        parser = SSEParser()
        last = b"0-0"
        head: Head | None = None
        started = last_seen = time.monotonic()
        try:
            while True:
                entries = await self._read(log_key, last)
                now = time.monotonic()
                if not entries:
                    if head is None:
                        if now - started > first_event_timeout or not await self._exists(lead_key):
                            return False
                    elif now - last_seen > idle_timeout:
                        _lost(broadcast, "the sharing instance stopped sending")
                        return True
                    continue
                last_seen = now
                for entry_id, fields in entries:
                    last = entry_id
                    kind = fields.get(b"k")
                    if kind == b"head" and head is not None:
                        # a second answer in the same stream: the leader's claim lapsed and
                        # another instance started over; ours cannot be continued
                        if broadcast.head is None:
                            return False
                        _lost(broadcast, "the sharing instance's answer was lost")
                        return True
                    if kind == b"head":
                        head = _head(fields)
                    elif kind == b"frames" and head is not None:
                        events = parser.feed(fields.get(b"b", b""), time.perf_counter())
                        if broadcast.head is None:
                            broadcast.outcome.provider = head.provider
                            broadcast.commit(head, events)
                        else:
                            broadcast.publish(events)
                    elif kind == b"end":
                        _end(broadcast, fields)
                        return True
        except RedisFault as fault:
            self._fault(fault)
            message = "lost the connection to the sharing instance"
        except _UNREADABLE as exc:  # another version's entry, or a damaged one: not Redis's fault
            self._say("redis_bad_entry", exc)
            message = "the sharing instance's answer could not be read"
        if broadcast.head is None:
            return False
        _lost(broadcast, message)
        return True

    # -- provider breakers -----------------------------------------------------------------

    def publish_open(self, provider: str, seconds: float, reason: str) -> None:
        """Tell the other instances that ``provider``'s breaker opened here (never waits)."""
        if seconds > 0 and time.monotonic() >= self._down_until:
            self._tasks.spawn(self._publish_open(provider, seconds, reason), "redis-health")

    async def _publish_open(self, provider: str, seconds: float, reason: str) -> None:
        message = orjson.dumps({"i": self.instance, "p": provider, "ms": _ms(seconds), "r": reason})
        try:
            async with self._link.use() as redis:
                await redis.set(self._prefix + "health:" + provider, message, px=_ms(seconds))
                await redis.publish(self._prefix + "health", message)
        except RedisFault as fault:
            self._fault(fault)

    async def follow_health(self, apply: OpenElsewhere) -> None:
        """Apply the other instances' breaker openings until cancelled: those still running
        when this starts (the keys), then each new one (the channel). Survives Redis outages."""
        link = self._link
        while True:
            pubsub = link.redis.pubsub(ignore_subscribe_messages=True)
            try:
                async with link.mapped():
                    await pubsub.subscribe(self._prefix + "health")
                # read after subscribing, so that nothing published in between is missed
                async with link.use() as redis:
                    async for key in redis.scan_iter(match=self._prefix + "health:*"):
                        message, left = await redis.get(key), await redis.pttl(key)
                        if message and left > 0:
                            self._apply_open(message, apply, left / 1000)
                while True:
                    async with link.mapped():
                        got = await pubsub.get_message(timeout=1.0)
                    if got is not None and got.get("type") == "message":
                        self._apply_open(got["data"], apply, None)
            except RedisFault as fault:
                self._fault(fault)
            finally:
                with contextlib.suppress(RedisFault):
                    async with link.mapped():
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(_BACKOFF)

    def _apply_open(self, message: bytes | str, apply: OpenElsewhere, left: float | None) -> None:
        try:
            fields = orjson.loads(message)
            if fields["i"] == self.instance:
                return
            provider, seconds = str(fields["p"]), fields["ms"] / 1000 if left is None else left
            reason = str(fields.get("r", ""))
        except (ValueError, KeyError, TypeError):
            return  # not ours, or from an incompatible version: ignore
        apply(provider, seconds, reason)

    # -- Redis -----------------------------------------------------------------------------

    async def _read(self, log_key: str, last: bytes) -> list[_Entry]:
        """Entries after ``last``, waiting up to ``_BLOCK_MS`` for the first (RESP2 reply:
        ``[[stream, [(id, {field: value})...]]]``, or nothing on timeout). No free connection
        is nothing yet: the follower's own deadlines decide how long it waits."""
        try:
            async with self._link.use() as redis:
                reply: Any = await redis.xread({log_key: last}, count=64, block=_BLOCK_MS)
        except RedisBusy:
            return []
        return cast(list[_Entry], reply[0][1]) if reply else []

    async def _exists(self, key: str) -> bool:
        try:
            async with self._link.use() as redis:
                return bool(await redis.exists(key))
        except RedisBusy:
            return True  # cannot tell now: keep waiting, within first_event_timeout

    def _fault(self, fault: RedisFault) -> None:
        """Say so at most once a minute per kind; skip Redis for a while if it is down."""
        if fault.backs_off:
            self._down_until = time.monotonic() + _BACKOFF
        self._say(fault.event, fault)

    def _say(self, event: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._warned_at.get(event, -_WARN_EVERY) >= _WARN_EVERY:
            self._warned_at[event] = now
            self._warn(event, exc)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _failure_fields(failure: Failure) -> dict[bytes, bytes]:
    return {
        b"k": b"end",
        b"ok": b"0",
        b"status": str(failure.status).encode(),
        b"type": failure.error_type.encode(),
        b"message": failure.message.encode(),
        b"committed": b"1" if failure.committed else b"0",
        b"provider": failure.provider.encode(),
    }


def _head(fields: dict[bytes, bytes]) -> Head:
    headers = orjson.loads(fields.get(b"h", b"{}"))
    if not isinstance(headers, dict):
        raise ValueError("head entry: headers are not an object")
    return Head(fields.get(b"p", b"").decode(), headers)


def _end(broadcast: Broadcast, fields: dict[bytes, bytes]) -> None:
    if fields.get(b"ok") == b"1" and broadcast.head is not None:
        broadcast.finish()
        return
    if fields.get(b"lagged") == b"1" or b"status" not in fields:
        _lost(broadcast, "the sharing instance could not pass the whole answer on; retry")
        return
    failure = Failure(
        int(fields[b"status"]),
        fields.get(b"type", b"api_error").decode(),
        fields.get(b"message", b"").decode(),
        broadcast.head is not None,
        fields.get(b"provider", b"").decode(),
    )
    broadcast.fail(failure)  # a committed leader's error event came through with the frames


def _lost(broadcast: Broadcast, message: str) -> None:
    abandon(broadcast, 500, "api_error", message)
