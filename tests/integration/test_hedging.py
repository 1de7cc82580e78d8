"""Hedged first token through real sockets (settings.hedge_after, issue 17): a slow first
candidate loses to a fast second one and its upstream request is cancelled; a fast first
candidate never triggers a hedge; the loser is neutral for health."""

from __future__ import annotations

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events, until

HEDGE = "hedge_after: 0.3\nunhealthy_threshold: 1\n"


async def test_a_slow_first_candidate_loses_to_a_fast_second(mock, balancer_factory) -> None:
    mock.configure("a", Script(first_event_delay=5, text="slow answer"))
    mock.configure("b", Script(text="fast answer"))
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=HEDGE))
    resp = await b.post(msg())
    events = await read_events(resp)
    assert resp.headers["x-provider-used"] == "b"
    assert "".join(p["delta"].get("text", "") for n, p in events if "delta" in p) == "fast answer"
    await until(lambda: mock.active_streams == 0)  # a's request was cancelled, not waited out
    assert len(mock.requests("a")) == 1 and b.runtime.health.get("a").failures == 0
    get = b.runtime.metrics.registry.get_sample_value
    assert get("ccbalancer_hedges_total", {"outcome": "won"}) == 1
    row = b.runtime.recent.rows()[0]
    assert row["tried"] == "a:cancelled(lost the race to b), b:ok"


async def test_a_fast_first_candidate_never_triggers_a_hedge(mock, balancer_factory) -> None:
    mock.configure("a", Script(events=20, delay=0.05))  # a second of streaming after commit
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=HEDGE))
    resp = await b.post(msg())
    await resp.read()
    assert resp.headers["x-provider-used"] == "a" and mock.requests("b") == []
    assert (
        b.runtime.metrics.registry.get_sample_value("ccbalancer_hedges_total", {"outcome": "won"})
        is None
    )


async def test_hedging_is_off_by_default(mock, balancer_factory) -> None:
    mock.configure("a", Script(first_event_delay=0.5))
    b = await balancer_factory(config_text(mock, ["a", "b"]))
    resp = await b.post(msg())
    await resp.read()
    assert resp.headers["x-provider-used"] == "a" and mock.requests("b") == []
