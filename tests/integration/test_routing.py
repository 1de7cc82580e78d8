"""Routing end to end: breaker skipping and recovery, stickiness per session, concurrency caps,
strategies across real requests."""

from __future__ import annotations

from collections import Counter

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events


async def _served_by(b, text: str, session: str) -> str:
    resp = await b.post(msg(text), {"x-claude-code-session-id": session})
    events = await read_events(resp)
    assert events[-1][0] == "message_stop", events[-1]
    return resp.headers["x-provider-used"]


async def test_failing_provider_is_skipped_then_recovers_after_its_cooldown(mock, balancer_factory):
    settings = "unhealthy_threshold: 2\nfailure_cooldown: 60\nsticky_provider_duration: 0\n"
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings), manual_clock=True)
    mock.enqueue("a", Script(status=502), Script(status=502))
    assert await _served_by(b, "1", "s1") == "b"  # first failure: failover within the request
    assert await _served_by(b, "2", "s2") == "b"  # second failure opens the breaker
    assert len(mock.requests("a")) == 2
    for i in range(5):  # while cooling down, a is not even tried
        assert await _served_by(b, f"skip{i}", f"k{i}") == "b"
    assert len(mock.requests("a")) == 2
    state = (await (await b.session.get(b.url + "/providers")).json())["providers"][0]
    assert state["name"] == "a" and state["state"] == "cooling_down"
    b.clock.now += 61  # cooldown over: one probe; it succeeds and closes the breaker
    assert await _served_by(b, "probe", "p") == "a"
    assert b.runtime.health.get("a").state(b.clock.now).value == "healthy"
    assert await _served_by(b, "after", "q") == "a"


async def test_half_open_probe_failure_reopens_the_breaker(mock, balancer_factory):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 30\nsticky_provider_duration: 0\n"
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings), manual_clock=True)
    mock.enqueue("a", Script(status=500), Script(status=500))
    assert await _served_by(b, "1", "s1") == "b"
    b.clock.now += 31
    assert await _served_by(b, "probe", "s2") == "b"  # probe tried a, failed, failed over
    assert len(mock.requests("a")) == 2
    assert b.runtime.health.get("a").state(b.clock.now).value == "cooling_down"
    assert await _served_by(b, "3", "s3") == "b"
    assert len(mock.requests("a")) == 2


async def test_rate_limit_retry_after_lengthens_the_cooldown(mock, balancer_factory):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 10\n"
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings), manual_clock=True)
    mock.enqueue("a", Script(status=429, retry_after=120))
    await _served_by(b, "1", "s1")
    remaining = b.runtime.health.get("a").cooldown_remaining(b.clock.now)
    assert 110 < remaining <= 120


async def test_sessions_stick_to_their_provider_independently(mock, balancer_factory):
    settings = "selection_strategy: round_robin\nsticky_provider_duration: 300\n"
    routes = {"*": [("a", "passthrough", 1), ("b", "passthrough", 1)]}
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=routes, settings=settings))
    first = await _served_by(b, "x1", "alice")
    second = await _served_by(b, "y1", "bob")
    assert {first, second} == {"a", "b"}  # round robin spreads new sessions
    for i in range(4):  # each session keeps its provider
        assert await _served_by(b, f"x{i + 2}", "alice") == first
        assert await _served_by(b, f"y{i + 2}", "bob") == second
    # alice's provider fails once: alice moves, bob does not
    mock.enqueue(first, Script(status=500))
    moved = await _served_by(b, "x-fail", "alice")
    assert moved != first
    assert await _served_by(b, "y-after", "bob") == second
    assert await _served_by(b, "x-after", "alice") == moved


async def test_full_provider_is_skipped_not_queued_behind(mock, balancer_factory):
    extra = {"a": ", max_concurrency: 1"}
    b = await balancer_factory(config_text(mock, ["a", "b"], provider_extra=extra))
    mock.configure("a", Script(events=20, delay=0.05))
    long = await b.post(msg("long"), {"x-claude-code-session-id": "s1"})
    assert await long.content.readany()  # a now has one request in flight
    assert await _served_by(b, "second", "s2") == "b"
    await long.read()
    assert long.headers["x-provider-used"] == "a"


async def test_weighted_strategy_spreads_by_weight(mock, balancer_factory):
    settings = "selection_strategy: weighted\nsticky_provider_duration: 0\n"
    extra = {"a": ", weight: 3", "b": ", weight: 1"}
    routes = {"*": [("a", "passthrough", 1), ("b", "passthrough", 1)]}
    b = await balancer_factory(
        config_text(mock, ["a", "b"], routes=routes, settings=settings, provider_extra=extra)
    )
    served = Counter([await _served_by(b, f"w{i}", f"w{i}") for i in range(40)])
    assert served == {"a": 30, "b": 10}


async def test_lower_priority_is_used_only_when_higher_cannot(mock, balancer_factory):
    settings = "selection_strategy: random\nsticky_provider_duration: 0\n"
    routes = {"*": [("a", "passthrough", 1), ("b", "passthrough", 1), ("c", "passthrough", 2)]}
    b = await balancer_factory(config_text(mock, ["a", "b", "c"], routes=routes, settings=settings))
    served = Counter([await _served_by(b, f"p{i}", f"p{i}") for i in range(30)])
    assert served["c"] == 0 and served["a"] > 0 and served["b"] > 0
    mock.enqueue("a", Script(status=500))
    mock.enqueue("b", Script(status=500))
    assert await _served_by(b, "both-top-fail", "z") == "c"


async def test_a_forced_unknown_provider_is_the_clients_mistake(mock, balancer_factory):
    """A typo in ``"provider"`` is not an outage: a 400 naming it, not a retryable 503
    (Claude Code would retry a 503 for minutes)."""
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg(provider="nope"))
    body = await resp.json()
    assert resp.status == 400 and "retry-after" not in resp.headers
    assert body["error"] == {"type": "invalid_request_error", "message": "unknown provider 'nope'"}
    assert mock.requests("a") == []
