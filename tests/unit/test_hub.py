"""The hub: who owns an upstream call, when it is joined, cached, or cancelled (fake producers,
an injected clock for the orphan grace)."""

from __future__ import annotations

import asyncio

from ccbalancer.sharing.broadcast import Broadcast, Failure
from ccbalancer.sharing.hub import Hub
from tests.conftest import Clock, settle
from tests.unit.answers import HEAD, delta, event, opening


class FakeUpstream:
    """A producer the test drives step by step."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = False
        self.commit_first = False

    async def running(self) -> None:
        async with asyncio.timeout(5):
            await self.started.wait()

    async def __call__(self, broadcast: Broadcast) -> None:
        self.started.set()
        try:
            if self.commit_first:
                broadcast.commit(HEAD, opening())
            await self.go.wait()
            if broadcast.head is None:
                broadcast.commit(HEAD, opening())
            broadcast.publish([delta("done")])
            broadcast.finish([event("message_stop")])
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def hub(clock: Clock, grace: float = 10.0, window: float = 180.0) -> Hub:
    """A hub whose clock and grace timer are ``clock``: time passes only when told."""
    return Hub(
        clock,
        cache_ttl=60,
        cache_bytes=1 << 20,
        orphan_grace=grace,
        join_window=window,
        timers=clock,
    )


async def test_a_finished_call_moves_from_in_flight_to_the_cache() -> None:
    clock = Clock()
    h = hub(clock)
    upstream = FakeUpstream()
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    assert h.find("k") == (b, "follower") and h.live == 1
    upstream.go.set()
    await settle()
    h.unsubscribe(b)
    assert h.inflight == {} and h.live == 0
    assert h.find("k") == (b, "cache")
    clock.now += 61
    h.sweep()
    assert len(h.cache) == 0
    await h.close()


async def test_a_failed_call_is_forgotten_at_once() -> None:
    h = hub(Clock())

    async def failing(broadcast: Broadcast) -> None:
        broadcast.fail(Failure(529, "overloaded_error", "busy", committed=False))

    b = h.lead("k", 1 << 20, failing, "t")
    await settle()
    assert b.failure is not None
    assert h.find("k") is None and h.inflight == {} and h.live == 0 and len(h.cache) == 0
    await h.close()


async def test_an_old_call_is_not_joined_after_the_join_window() -> None:
    clock = Clock()
    h = hub(clock, window=30)
    upstream = FakeUpstream()
    b = h.lead("k", 1 << 20, upstream, "t")
    clock.now += 30
    assert h.find("k") == (b, "follower")
    clock.now += 0.1
    assert h.find("k") is None
    await h.close()


async def test_an_uncommitted_orphan_is_cancelled_at_once() -> None:
    """CLAUDE_CODE.md section 6: a retry joining a call that produced nothing inherits its stall."""
    h = hub(Clock(), grace=10)
    upstream = FakeUpstream()
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b)
    assert h.find("k") is None  # unregistered before the task even sees the cancellation
    await settle()
    assert upstream.cancelled and h.live == 0 and b.done and len(h.cache) == 0
    await h.close()


async def test_a_committed_orphan_runs_for_the_grace_period_then_is_cancelled() -> None:
    clock = Clock()
    h = hub(clock, grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b)
    clock.advance(9.9)
    await settle()
    assert h.live == 1 and h.find("k") == (b, "follower")  # a retry may still join
    clock.advance(0.1)
    await settle()
    assert h.live == 0 and upstream.cancelled and h.inflight == {} and len(h.cache) == 0
    await h.close()


async def test_joining_a_committed_orphan_stops_the_grace_timer() -> None:
    clock = Clock()
    h = hub(clock, grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b)
    h.subscribe(b)
    clock.advance(60)  # well past the grace: the timer must not fire
    await settle()
    assert not upstream.cancelled and clock.pending == []
    upstream.go.set()
    await settle()
    h.unsubscribe(b)
    assert b.succeeded and h.find("k") == (b, "cache")
    await h.close()


async def test_without_a_key_a_committed_orphan_stops_with_its_last_client() -> None:
    """Sharing off: nobody can join or replay the call, so a grace would only burn tokens."""
    h = hub(Clock(), grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead(None, 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b)
    await settle()
    assert upstream.cancelled and h.live == 0 and len(h.cache) == 0
    await h.close()


async def test_a_committed_orphan_that_finishes_during_the_grace_is_cached() -> None:
    h = hub(Clock(), grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b)
    upstream.go.set()
    await settle()
    assert h.live == 0 and h.find("k") == (b, "cache")
    await h.close()


async def test_a_call_cancelled_before_its_task_started_leaves_nothing_behind() -> None:
    """The leader may leave before the producer task's first step; the task's own cleanup
    never runs then, so the hub must not rely on it."""
    h = hub(Clock())
    upstream = FakeUpstream()
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    h.unsubscribe(b)
    await settle()
    assert not upstream.started.is_set()
    assert h.live == 0 and h.inflight == {}
    assert b.done and b.failure is not None  # anyone still waiting gets an answer
    await h.close()


async def test_a_producer_that_dies_after_commit_ends_the_stream_with_an_error_event() -> None:
    """A committed stream must never just stop: Claude Code reads a clean end without
    message_stop as 'cut off' and sends continuation requests instead of retrying."""
    h = hub(Clock())

    async def crashing(broadcast: Broadcast) -> None:
        broadcast.commit(HEAD, opening())
        await asyncio.sleep(0)
        raise RuntimeError("bug in the producer")

    b = h.lead("k", 1 << 20, crashing, "t")
    h.subscribe(b)
    async with asyncio.timeout(5):
        while not b.done:
            await b.wait()
    h.unsubscribe(b)
    assert b.get(b.end - 1).name == "error"
    assert b.failure is not None and b.failure.committed
    assert h.live == 0 and h.inflight == {} and len(h.cache) == 0
    await h.close()


async def test_close_ends_committed_streams_with_an_error_event() -> None:
    h = hub(Clock())
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    h.subscribe(b)
    await upstream.running()
    await h.close()
    assert b.done and b.get(b.end - 1).name == "error"
    assert h.live == 0 and h.inflight == {}


async def test_abort_tells_every_waiting_and_streaming_client() -> None:
    h = hub(Clock())
    streaming, waiting = FakeUpstream(), FakeUpstream()
    streaming.commit_first = True
    committed = h.lead("a", 1 << 20, streaming, "a")
    pending = h.lead("b", 1 << 20, waiting, "b")
    await streaming.running()
    await waiting.running()
    h.abort("shutting down")
    await settle()
    assert committed.get(committed.end - 1).name == "error"
    assert pending.failure is not None and pending.failure.status == 503
    assert h.live == 0 and h.inflight == {} and len(h.cache) == 0
    await h.close()
