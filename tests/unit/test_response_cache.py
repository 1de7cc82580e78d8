"""The response cache: completed answers kept for identical retries (injected clock)."""

from __future__ import annotations

from typing import Any

import pytest

from ccbalancer.sharing.broadcast import Broadcast, Failure
from ccbalancer.sharing.cache import ResponseCache
from tests.conftest import Clock
from tests.unit.answers import HEAD, completed, event, opening


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
    frame = event("error", error={"type": "overloaded_error", "message": "x"})
    b.fail(Failure(529, "overloaded_error", "x", committed=True), [frame])
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
