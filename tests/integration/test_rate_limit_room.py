"""Rate-limit room end to end: a provider that says it has no room is passed over until its
reset without being failed, the one with more room is preferred, a 429 without retry-after
rests for its reset, and /providers and the dashboard show the room (issue 17)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events

NO_STICKY = "sticky_provider_duration: 0\n"


def rfc3339(seconds_from_now: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.isoformat().replace("+00:00", "Z")


def limits(**headers: str) -> str:
    """``Script.headers`` for rate-limit headers given as keyword arguments."""
    return json.dumps({name.replace("_", "-"): value for name, value in headers.items()})


async def _served_by(b, text: str, **extra) -> str:
    resp = await b.post(msg(text, **extra))
    events = await read_events(resp)
    assert resp.status == 200 and events[-1][0] == "message_stop", events[-1]
    return resp.headers["x-provider-used"]


async def _provider(b, name: str, path: str = "/providers") -> dict:
    data = await (await b.session.get(b.url + path)).json()
    return next(p for p in data["providers"] if p["name"] == name)


async def test_no_requests_left_skips_the_provider_until_its_reset_without_failing_it(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=NO_STICKY), manual_clock=True)
    empty = limits(
        anthropic_ratelimit_requests_limit="50",
        anthropic_ratelimit_requests_remaining="0",
        anthropic_ratelimit_requests_reset=rfc3339(30),
    )
    mock.enqueue("a", Script(headers=empty))
    assert await _served_by(b, "uses the last request") == "a"
    for i in range(3):
        assert await _served_by(b, f"while a has no room {i}") == "b"
    assert len(mock.requests("a")) == 1  # passed over, not tried and failed
    health = b.runtime.health.get("a")
    assert health.failures == 0 and health.state(b.clock.now).value == "healthy"
    shown = await _provider(b, "a")
    assert shown["state"] == "healthy" and shown["failure_count"] == 0
    room = shown["rate_limit"]
    assert room["limits"]["requests"]["remaining"] == 0
    assert 25 < room["no_room_for_s"] <= 30 and room["room"] == 0.0
    on_dashboard = await _provider(b, "a", "/dashboard/data")
    assert on_dashboard["rate_limit"]["limits"]["requests"]["remaining"] == 0

    b.clock.now += 31  # the reset: a is back
    assert await _served_by(b, "after the reset") == "a"


async def test_too_few_input_tokens_left_skips_only_requests_larger_than_that(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=NO_STICKY), manual_clock=True)
    mock.configure(
        "a",
        Script(
            headers=limits(
                anthropic_ratelimit_input_tokens_limit="40000",
                anthropic_ratelimit_input_tokens_remaining="3000",
                anthropic_ratelimit_input_tokens_reset=rfc3339(50),
            )
        ),
    )
    assert await _served_by(b, "first") == "a"
    assert await _served_by(b, "small enough for what is left") == "a"
    assert await _served_by(b, "word " * 4000) == "b"  # ~5,700 tokens by the estimate
    assert b.runtime.health.get("a").failures == 0


async def test_among_equals_the_provider_with_more_room_goes_first(mock, balancer_factory):
    equals = {"*": [("a", "passthrough", 1), ("b", "passthrough", 1)]}  # one priority tier
    b = await balancer_factory(config_text(mock, ["a", "b"], routes=equals, settings=NO_STICKY))
    for name, left in (("a", "10"), ("b", "90")):
        room = limits(
            anthropic_ratelimit_requests_limit="100", anthropic_ratelimit_requests_remaining=left
        )
        mock.configure(name, Script(headers=room))
    assert await _served_by(b, "1") == "a"  # nothing known yet: the file order
    assert await _served_by(b, "2") == "b"  # a said it is down to 10 %
    assert await _served_by(b, "3") == "b"
    assert len(mock.requests("a")) == 1


async def test_an_openai_format_provider_rests_for_its_reset_duration(mock, balancer_factory):
    config = config_text(mock, [("o", "openai"), "b"], settings=NO_STICKY)
    b = await balancer_factory(config, manual_clock=True)
    mock.enqueue(
        "o",
        Script(
            headers=limits(
                x_ratelimit_limit_requests="500",
                x_ratelimit_remaining_requests="0",
                x_ratelimit_reset_requests="6m0s",
            )
        ),
    )
    assert await _served_by(b, "1") == "o"
    assert await _served_by(b, "2") == "b"
    room = (await _provider(b, "o"))["rate_limit"]
    assert room["limits"]["requests"] == {"remaining": 0, "limit": 500, "reset_in_s": 360.0}
    b.clock.now += 361
    assert await _served_by(b, "3") == "o"


async def test_a_429_without_retry_after_cools_down_until_the_limits_reset(mock, balancer_factory):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 5\n" + NO_STICKY
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings), manual_clock=True)
    exhausted = limits(
        anthropic_ratelimit_requests_remaining="0",
        anthropic_ratelimit_requests_reset=rfc3339(45),
    )
    mock.enqueue("a", Script(status=429, error_type="rate_limit_error", headers=exhausted))
    assert await _served_by(b, "1") == "b"
    # the breaker rests for the reset the headers gave, not the 5 s failure_cooldown
    assert 40 < b.runtime.health.get("a").cooldown_remaining(b.clock.now) <= 45
    b.clock.now += 10
    assert await _served_by(b, "2") == "b"
    assert len(mock.requests("a")) == 1


async def test_a_rejected_subscription_status_rests_the_provider_until_its_unified_reset(
    mock, balancer_factory
):
    b = await balancer_factory(
        config_text(mock, ["max", "b"], settings=NO_STICKY), manual_clock=True
    )
    rejected = limits(
        anthropic_ratelimit_unified_status="rejected",
        anthropic_ratelimit_unified_reset=str(int(time.time()) + 600),
        anthropic_ratelimit_unified_5h_utilization="1.0",
    )
    mock.enqueue("max", Script(status=429, error_type="rate_limit_error", headers=rejected))
    assert await _served_by(b, "1") == "b"
    b.clock.now += 300
    assert await _served_by(b, "2") == "b"
    assert len(mock.requests("max")) == 1
    health = b.runtime.health.get("max")
    assert health.state(b.clock.now).value == "healthy"  # one 429 does not open the breaker
    shown = (await _provider(b, "max"))["rate_limit"]
    assert shown["unified"]["status"] == "rejected" and shown["no_room_for_s"] > 290
    b.clock.now += 301
    assert await _served_by(b, "3") == "max"
