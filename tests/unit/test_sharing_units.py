"""The sharing pieces without sockets: the coalescing key, the event log, the response cache
(driven by an injected clock) and the hub's ownership rules (with fake producers)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.sharing.broadcast import Broadcast, Failure, Head, Lagged, Reader
from ccbalancer.sharing.cache import ResponseCache
from ccbalancer.sharing.hub import Hub
from ccbalancer.sharing.key import coalescing_key
from ccbalancer.sse.event import Event, encode_event


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


HEAD = Head("a", {"request-id": "req_1"})
HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"}


def event(kind: str, **fields: Any) -> Event:
    return encode_event(kind, {"type": kind, **fields})


def opening() -> list[Event]:
    """What an attempt holds until it commits: message_start and the first block's start."""
    return [event("message_start", message={"id": "msg_1"}), event("content_block_start", index=0)]


def delta(text: str) -> Event:
    return event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})


def completed(
    key: str = "k", max_bytes: int = 1 << 20, texts: tuple[str, ...] = ("Hi",)
) -> Broadcast:
    """A broadcast that committed, streamed ``texts`` and finished cleanly."""
    b = Broadcast(key, max_bytes, created=0.0)
    b.commit(HEAD, opening())
    for text in texts:
        b.append(delta(text))
    b.append(event("message_stop"))
    b.finish()
    return b


async def settle() -> None:
    """Let every ready callback and task step run (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


# -- the coalescing key ----------------------------------------------------------------------

_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # orjson refuses surrogates
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson.loads produces
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=16,
)
_FIELDS = _TEXT.filter(lambda name: name not in ("stream", "max_tokens"))
_BODIES = st.dictionaries(_FIELDS, _VALUES, max_size=6).map(
    lambda extra: {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
)


def _reordered(value: Any, data: st.DataObject) -> Any:
    """The same JSON value with every object's keys in a drawn order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _reordered(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_reordered(item, data) for item in value]
    return value


@settings(max_examples=200, deadline=None)
@given(body=_BODIES, data=st.data(), stream=st.sampled_from([True, False, None, "absent"]))
def test_key_ignores_stream_and_key_order(
    body: dict[str, Any], data: st.DataObject, stream: Any
) -> None:
    other = _reordered(body, data)
    if stream != "absent":
        other["stream"] = stream
    assert coalescing_key("sk-1", other, HEADERS) == coalescing_key("sk-1", body, HEADERS)


@settings(max_examples=200, deadline=None)
@given(body=_BODIES, name=_FIELDS | st.sampled_from(["model", "messages"]), value=_VALUES)
def test_key_changes_with_any_other_field(body: dict[str, Any], name: str, value: Any) -> None:
    """Adding a field, removing one or giving one a different value changes the key."""
    changed = dict(body)
    if name in body and body[name] == value:
        del changed[name]  # the drawn value is the same: removing the field is the change
    else:
        changed[name] = value
    assert coalescing_key("sk-1", changed, HEADERS) != coalescing_key("sk-1", body, HEADERS)


@settings(max_examples=100, deadline=None)
@given(body=_BODIES, first=st.integers(1, 200_000), second=st.integers(1, 200_000))
def test_max_tokens_is_in_the_key_only_when_configured(
    body: dict[str, Any], first: int, second: int
) -> None:
    a, b = {**body, "max_tokens": first}, {**body, "max_tokens": second}
    assert coalescing_key("sk-1", a, HEADERS) == coalescing_key("sk-1", b, HEADERS)
    same = coalescing_key("sk-1", a, HEADERS, True) == coalescing_key("sk-1", b, HEADERS, True)
    assert same == (first == second)


def test_nested_changes_change_the_key() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
    }
    base = coalescing_key("sk-1", body, HEADERS)
    nested_text = {
        **body,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "b"}]}],
    }
    nested_tool = {**body, "tools": [{"name": "Bash", "input_schema": {"type": "array"}}]}
    assert coalescing_key("sk-1", nested_text, HEADERS) != base
    assert coalescing_key("sk-1", nested_tool, HEADERS) != base


def test_different_identities_never_share_a_key() -> None:
    body = {"model": "m", "messages": []}
    assert coalescing_key("sk-1", body, HEADERS) != coalescing_key("sk-2", body, HEADERS)
    assert coalescing_key("", body, HEADERS) != coalescing_key("sk-1", body, HEADERS)


@pytest.mark.parametrize("name", ["anthropic-version", "anthropic-beta"])
def test_behaviour_headers_are_in_the_key(name: str) -> None:
    """Claude Code's 400 fallbacks change anthropic-beta: such a retry is a different request."""
    body = {"model": "m", "messages": []}
    changed = {**HEADERS, name: HEADERS[name] + ",x"}
    missing = {k: v for k, v in HEADERS.items() if k != name}
    base = coalescing_key("sk-1", body, HEADERS)
    assert coalescing_key("sk-1", body, changed) != base
    assert coalescing_key("sk-1", body, missing) != base


def test_other_headers_are_not_in_the_key() -> None:
    """Identical retries differ in nothing, but unrelated headers must not split sharing."""
    body = {"model": "m", "messages": []}
    noisy = {**HEADERS, "user-agent": "claude-cli/2", "x-stainless-timeout": "300"}
    assert coalescing_key("sk-1", body, noisy) == coalescing_key("sk-1", body, HEADERS)


# -- the event log ---------------------------------------------------------------------------


def test_late_reader_gets_every_event_from_the_start() -> None:
    b = completed(texts=("a", "b", "c"))
    assert [b.get(i).raw for i in range(b.end)] == [e.raw for e in b.events()]
    assert b.end == 6
    assert b.succeeded and b.ready


def test_nothing_is_published_before_commit() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    assert not b.ready and b.end == 0
    b.commit(HEAD, opening())
    assert b.ready and b.head is HEAD and b.end == 2


async def test_one_append_wakes_every_waiter_and_nothing_wakes_them_before() -> None:
    """Waiting is notification: waiters stay parked until the producer appends."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, [])
    async with asyncio.TaskGroup() as group:
        waiters = [group.create_task(b.wait()) for _ in range(3)]
        await settle()
        assert not any(w.done() for w in waiters)
        b.append(delta("x"))
        await settle()
        assert all(w.done() for w in waiters)


@pytest.mark.parametrize("end", ["finish", "fail"])
async def test_the_end_of_the_answer_wakes_waiters(end: str) -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    async with asyncio.TaskGroup() as group:
        waiter = group.create_task(b.wait())
        await settle()
        assert not waiter.done()
        if end == "finish":
            b.finish()
        else:
            b.fail(Failure(503, "overloaded_error", "down", committed=False))
        await settle()
        assert waiter.done()
    assert b.ready and b.done


async def test_a_cancelled_waiter_does_not_strand_the_others() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    async with asyncio.TaskGroup() as group:
        leaving = group.create_task(b.wait())
        staying = group.create_task(b.wait())
        await settle()
        leaving.cancel()
        await settle()
        b.append(delta("x"))
        await settle()
        assert staying.done() and leaving.cancelled()


def test_log_is_capped_and_a_reader_behind_the_cap_is_cut_not_skipped() -> None:
    b = Broadcast("k", 2000, created=0.0)
    b.commit(HEAD, [event("message_start")])
    for i in range(100):
        b.append(delta(f"{i:04d}" + "x" * 40))
        assert b.bytes <= b.max_bytes
    assert b.trimmed
    with pytest.raises(Lagged):
        b.get(0)
    newest = b.get(b.end - 1)
    assert b"0099" in newest.raw  # readers near the head keep going


def test_log_under_the_cap_is_never_trimmed() -> None:
    b = completed(max_bytes=1 << 20, texts=tuple("abcdefgh"))
    assert not b.trimmed
    assert b.get(0).name == "message_start"


class Taker(Reader):
    """A reader whose client always has room: it takes what it is offered, or refuses."""

    def __init__(self, accept: bool = True) -> None:
        super().__init__()
        self.accept = accept
        self.taken: list[bytes] = []

    def take(self, broadcast: Broadcast, end: int) -> bool:
        if not self.accept:
            return False
        self.cursor, data = broadcast.frames(self.cursor, end)
        self.taken.append(data)
        return True


def caught_up() -> tuple[Broadcast, Taker]:
    """A committed answer and a ``Taker`` at its end, ready to park."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    reader = Taker()
    reader.cursor = b.end
    return b, reader


async def test_a_parked_reader_takes_each_append_in_the_producers_step() -> None:
    """The direct path: appends are handed to a parked reader as they happen, one offer per
    append, and its task stays parked (no wake-up per event) until the answer ends."""
    b, reader = caught_up()
    sent = [delta(text) for text in ("a", "b", "c")]
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        for one in sent:
            b.append(one)
            assert reader.taken[-1] == one.raw  # delivered before append returned
        await settle()
        assert not parked.done() and reader.cursor == b.end
        b.append(event("message_stop"))
        b.finish()  # the end is the task's to write: the reader is woken, not offered it
        await settle()
        assert parked.done()
    assert reader.taken == [e.raw for e in sent] + [event("message_stop").raw]


async def test_a_reader_that_cannot_take_is_woken_with_nothing_written() -> None:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    reader = Taker(accept=False)
    reader.cursor = b.end
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        b.append(delta("x"))
        await settle()
        assert parked.done() and reader.cursor == 2  # its own task catches up from here
    b.append(delta("y"))  # no longer parked: not offered
    assert reader.taken == []


async def test_a_reader_whose_client_left_is_never_offered_again() -> None:
    b, reader = caught_up()
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        parked.cancel()
    b.append(delta("x"))
    assert reader.taken == [] and reader.parked is None


def test_frames_joins_events_up_to_a_byte_limit() -> None:
    b = completed(texts=("a", "b", "c"))
    raws = [e.raw for e in b.events()]
    assert b.frames(0, b.end) == (b.end, b"".join(raws))
    stop, data = b.frames(1, b.end, limit=len(raws[1]) + 1)
    assert (stop, data) == (3, raws[1] + raws[2])  # cut once the limit is passed
    assert b.frames(2, 3, limit=1) == (3, raws[2])  # at least one event, however large


# -- the response cache ----------------------------------------------------------------------


def test_cache_replays_until_ttl_then_forgets() -> None:
    clock = Clock()
    cache = ResponseCache(ttl=60, max_bytes=1 << 20, clock=clock)
    b = completed()
    assert cache.put("k", b)
    clock.now += 59.9
    assert cache.get("k") is b
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_sweep_forgets_expired_entries_nobody_asks_for() -> None:
    clock = Clock()
    cache = ResponseCache(ttl=10, max_bytes=1 << 20, clock=clock)
    cache.put("old", completed("old"))
    clock.now += 5
    cache.put("new", completed("new"))
    clock.now += 5
    cache.sweep()
    assert cache.get("old") is None and cache.get("new") is not None
    clock.now += 5
    cache.sweep()
    assert len(cache) == 0 and cache.bytes == 0


def test_any_lookup_forgets_expired_entries() -> None:
    """Memory is released when the TTL passes, not only when that key is asked for again."""
    clock = Clock()
    cache = ResponseCache(ttl=10, max_bytes=1 << 20, clock=clock)
    cache.put("old", completed("old"))
    clock.now += 10
    assert cache.get("unrelated") is None
    assert len(cache) == 0 and cache.bytes == 0


def _failed_committed() -> Broadcast:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    b.append(event("error", error={"type": "overloaded_error", "message": "x"}))
    b.fail(Failure(529, "overloaded_error", "x", committed=True))
    return b


def _failed_uncommitted() -> Broadcast:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.fail(Failure(529, "overloaded_error", "x", committed=False))
    return b


def _unfinished() -> Broadcast:
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, [event("message_start")])
    return b


def _trimmed() -> Broadcast:
    b = completed(max_bytes=300, texts=tuple("x" * 50 for _ in range(10)))
    assert b.trimmed
    return b


@pytest.mark.parametrize(
    "make",
    [_failed_committed, _failed_uncommitted, _unfinished, _trimmed],
    ids=lambda f: f.__name__,
)
def test_cache_never_keeps_failures_or_partial_answers(make: Any) -> None:
    cache = ResponseCache(ttl=60, max_bytes=1 << 20, clock=Clock())
    assert not cache.put("k", make())
    assert cache.get("k") is None and cache.bytes == 0


def test_cache_byte_cap_evicts_the_oldest_first() -> None:
    one = completed("a").bytes
    cache = ResponseCache(ttl=60, max_bytes=2 * one, clock=Clock())
    for key in ("a", "b", "c"):
        assert cache.put(key, completed(key))
    assert cache.get("a") is None
    assert cache.get("b") is not None and cache.get("c") is not None
    assert cache.bytes == 2 * one


def test_cache_refuses_an_answer_larger_than_the_cap_and_zero_ttl() -> None:
    b = completed()
    assert not ResponseCache(ttl=60, max_bytes=b.bytes - 1, clock=Clock()).put("k", b)
    assert not ResponseCache(ttl=0, max_bytes=1 << 20, clock=Clock()).put("k", b)


def test_shrinking_the_cache_on_reload_evicts_at_once() -> None:
    cache = ResponseCache(ttl=60, max_bytes=1 << 20, clock=Clock())
    cache.put("a", completed("a"))
    cache.put("b", completed("b"))
    cache.configure(ttl=60, max_bytes=completed("b").bytes)
    assert len(cache) == 1 and cache.get("b") is not None


# -- the hub: who owns the upstream call -----------------------------------------------------


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
            broadcast.append(delta("done"))
            broadcast.append(event("message_stop"))
            broadcast.finish()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def hub(clock: Clock, grace: float = 10.0, window: float = 180.0) -> Hub:
    return Hub(clock, cache_ttl=60, cache_bytes=1 << 20, orphan_grace=grace, join_window=window)


async def test_a_finished_call_moves_from_in_flight_to_the_cache() -> None:
    clock = Clock()
    h = hub(clock)
    upstream = FakeUpstream()
    b = h.lead("k", 1 << 20, upstream, "t")
    sub = h.subscribe(b)
    assert h.find("k") == (b, "follower") and h.live == 1
    upstream.go.set()
    await settle()
    h.unsubscribe(b, sub)
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
    sub = h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b, sub)
    assert h.find("k") is None  # unregistered before the task even sees the cancellation
    await settle()
    assert upstream.cancelled and h.live == 0 and b.done and len(h.cache) == 0
    await h.close()


async def test_a_committed_orphan_runs_for_the_grace_period_then_is_cancelled() -> None:
    h = hub(Clock(), grace=0.05)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    sub = h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b, sub)
    await settle()
    assert h.live == 1 and h.find("k") == (b, "follower")  # a retry may still join
    async with asyncio.timeout(5):
        while h.live:
            await asyncio.sleep(0.01)
    assert upstream.cancelled and h.inflight == {} and len(h.cache) == 0
    await h.close()


async def test_joining_a_committed_orphan_stops_the_grace_timer() -> None:
    h = hub(Clock(), grace=0.05)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    sub = h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b, sub)
    retry = h.subscribe(b)
    await asyncio.sleep(0.2)  # well past the grace: the timer must not have fired
    assert not upstream.cancelled
    upstream.go.set()
    await settle()
    h.unsubscribe(b, retry)
    assert b.succeeded and h.find("k") == (b, "cache")
    await h.close()


async def test_without_a_key_a_committed_orphan_stops_with_its_last_client() -> None:
    """Sharing off: nobody can join or replay the call, so a grace would only burn tokens."""
    h = hub(Clock(), grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead(None, 1 << 20, upstream, "t")
    sub = h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b, sub)
    await settle()
    assert upstream.cancelled and h.live == 0 and len(h.cache) == 0
    await h.close()


async def test_a_committed_orphan_that_finishes_during_the_grace_is_cached() -> None:
    h = hub(Clock(), grace=10)
    upstream = FakeUpstream()
    upstream.commit_first = True
    b = h.lead("k", 1 << 20, upstream, "t")
    sub = h.subscribe(b)
    await upstream.running()
    h.unsubscribe(b, sub)
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
    h.unsubscribe(b, h.subscribe(b))
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
    sub = h.subscribe(b)
    async with asyncio.timeout(5):
        while not b.done:
            await b.wait()
    h.unsubscribe(b, sub)
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


def test_key_includes_the_forwarded_query_string() -> None:
    body = {"model": "m", "messages": []}
    assert coalescing_key("id", body, {}, query="beta=true") != coalescing_key("id", body, {})
    assert coalescing_key("id", body, {}, query="beta=true") == coalescing_key(
        "id", body, {}, query="beta=true"
    )


class Broken(Reader):
    def take(self, broadcast: Broadcast, end: int) -> bool:
        raise RuntimeError("a bug in one subscriber")


async def test_a_reader_that_raises_is_woken_and_the_others_still_get_the_event() -> None:
    """One subscriber's failure is its own: the producer's append goes on for everyone."""
    b = Broadcast("k", 1 << 20, created=0.0)
    b.commit(HEAD, opening())
    broken, fine = Broken(), Taker()
    broken.cursor = fine.cursor = b.end
    async with asyncio.TaskGroup() as group:
        woken = group.create_task(b.park(broken))
        parked = group.create_task(b.park(fine))
        await settle()
        b.append(delta("x"))  # does not raise
        await settle()
        assert woken.done() and not parked.done()
        assert fine.taken == [delta("x").raw]
        b.finish()


async def test_events_added_together_are_offered_together_in_one_take() -> None:
    """What one upstream read brought is written to a caught-up client in one write."""
    b, reader = caught_up()
    sent = [delta(text) for text in ("a", "b", "c")]
    async with asyncio.TaskGroup() as group:
        parked = group.create_task(b.park(reader))
        await settle()
        for one in sent:
            b.add(one)
        assert reader.taken == []  # not offered until published
        b.publish()
        assert reader.taken == [b"".join(e.raw for e in sent)] and reader.cursor == b.end
        b.publish()  # nothing new: nothing offered
        assert len(reader.taken) == 1 and not parked.done()
        b.finish()
