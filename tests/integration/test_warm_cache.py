"""Sessions stay where their prompt cache is warm (issue 17): through one-off failures and
answers elsewhere, until that provider is unavailable or out of rate-limit room; the session
key is Claude Code's session id, from its header or from ``metadata.user_id``; a forced
provider is a one-off; the dashboard shows each session's cache hit rate around its moves."""

from __future__ import annotations

import json

import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events

STICKY = "sticky_provider_duration: 300\nunhealthy_threshold: 2\n"
EQUALS = {"*": [("a", "passthrough", 1), ("b", "passthrough", 1)]}


async def _served_by(b, text: str, session: str = "s1", **extra) -> str:
    resp = await b.post(msg(text, **extra), {"x-claude-code-session-id": session})
    events = await read_events(resp)
    assert resp.status == 200 and events[-1][0] == "message_stop", events[-1]
    return resp.headers["x-provider-used"]


@pytest.mark.parametrize(("cache_read", "next_turn"), [(2000, "a"), (0, "b")])
async def test_a_warm_session_returns_to_its_cache_after_a_one_off_failure(
    cache_read, next_turn, mock, balancer_factory
):
    """Cold, the session moves to whoever answered; warm, one failure does not cost the
    cache: the next turn goes back to where it is."""
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=EQUALS, settings=STICKY))
    mock.configure("a", Script(cache_read=cache_read))
    assert await _served_by(b, "turn 1") == "a"
    mock.enqueue("a", Script(status=500))
    assert await _served_by(b, "turn 2") == "b"  # failed over within the request
    assert await _served_by(b, "turn 3") == next_turn


async def test_a_tool_call_answered_elsewhere_keeps_the_session_with_its_thinking(
    mock, balancer_factory
):
    """The turn after a tool call carries the answer's thinking back: it goes to the provider
    that wrote it, even away from a warm cache."""
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=EQUALS, settings=STICKY))
    mock.configure("a", Script(cache_read=2000))
    assert await _served_by(b, "turn 1") == "a"
    mock.enqueue("a", Script(status=500))
    mock.enqueue("b", Script(reply="thinking_tool"))
    assert await _served_by(b, "turn 2: b calls a tool") == "b"
    assert await _served_by(b, "turn 3: the tool result") == "b"


async def test_a_warm_session_leaves_only_when_its_provider_has_no_room_and_shows_the_cost(
    mock, balancer_factory
):
    settings = STICKY + "selection_strategy: round_robin\n"
    b = await balancer_factory(
        config_text(mock, ["a", "b"], routes=EQUALS, settings=settings), manual_clock=True
    )
    mock.configure("a", Script(cache_read=3000, input_tokens=100))
    assert await _served_by(b, "turn 1") == "a"
    for i in range(3):  # round robin would alternate; the warm cache keeps the session
        assert await _served_by(b, f"turn {i + 2}") == "a"
    empty = {"anthropic-ratelimit-requests-remaining": "0"}  # no reset: trusted for 60 s
    mock.enqueue("a", Script(cache_read=3000, input_tokens=100, headers=json.dumps(empty)))
    assert await _served_by(b, "turn 5: a's last request") == "a"
    assert await _served_by(b, "turn 6") == "b"  # a has no room: the session moves
    b.clock.now += 61
    assert await _served_by(b, "turn 7") == "b"  # and stays where it went

    data = await (await b.session.get(b.url + "/dashboard/data")).json()
    (session,) = [s for s in data["sessions"] if s["session"] == "s1"]  # one table, joined
    assert session["provider"] == "b" and session["moves"] == 1 and session["requests"] == 7
    (route,) = session["routes"]
    assert route["answers"] == 7 and route["provider"] == "b"
    move = session["last_move"]
    assert (move["from"], move["to"], move["route"]) == ("a", "b", "*")
    assert move["hit_rate_before"] == pytest.approx(3000 / 3100, abs=0.001)
    assert move["hit_rate_after"] == 0.0


async def test_a_warm_session_leaves_a_provider_whose_breaker_opened(mock, balancer_factory):
    settings = "sticky_provider_duration: 300\nunhealthy_threshold: 1\nfailure_cooldown: 30\n"
    b = await balancer_factory(
        config_text(mock, ["a", "b"], routes=EQUALS, settings=settings), manual_clock=True
    )
    mock.configure("a", Script(cache_read=500))
    assert await _served_by(b, "turn 1") == "a"
    mock.enqueue("a", Script(status=503))
    assert await _served_by(b, "turn 2") == "b"  # a failed and is cooling down: unavailable
    b.clock.now += 31  # a recovers, but the session lives at b now
    assert await _served_by(b, "turn 3") == "b"


async def test_the_session_comes_from_metadata_user_id_when_the_header_is_absent(
    mock, balancer_factory
):
    """One client key, two Claude Code sessions named only in ``metadata.user_id``: each
    keeps its own provider (keyed by the client key they would share one)."""
    settings = "sticky_provider_duration: 300\nselection_strategy: round_robin\n"
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=EQUALS, settings=settings))

    async def served(session: str, text: str) -> str:
        user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": session})
        resp = await b.post(msg(text, metadata={"user_id": user_id}))
        assert (await read_events(resp))[-1][0] == "message_stop"
        return resp.headers["x-provider-used"]

    first = await served("11111111-aaaa", "x1")
    second = await served("22222222-bbbb", "y1")
    assert {first, second} == {"a", "b"}
    for i in range(3):
        assert await served("11111111-aaaa", f"x{i + 2}") == first
        assert await served("22222222-bbbb", f"y{i + 2}") == second


async def test_a_forced_provider_is_a_one_off_that_does_not_move_the_session(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=EQUALS, settings=STICKY))
    assert await _served_by(b, "turn 1", session="") == "a"  # keyed by the client key
    assert await _served_by(b, "one forced request", session="", provider="b") == "b"
    for i in range(3):
        assert await _served_by(b, f"turn {i + 2}", session="") == "a"
