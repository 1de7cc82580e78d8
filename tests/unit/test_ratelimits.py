"""Rate-limit headers -> how much room a provider has, and for how long it has none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ccbalancer.upstream.ratelimit_headers import reset_wait, seconds_until
from ccbalancer.upstream.ratelimits import RateLimits
from tests.conftest import Clock

WALL = 1_790_000_000.0  # a fixed wall clock: resets are absolute times


def rfc3339(seconds_from_now: float) -> str:
    moment = datetime.fromtimestamp(WALL, UTC) + timedelta(seconds=seconds_from_now)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2m59.56s", 179.56),
        ("7.66", 7.66),  # plain seconds (Cerebras)
        (str(int(WALL) + 90), 90.0),  # epoch seconds (Anthropic's unified reset)
        (str(int(WALL * 1000) + 5000), 5.0),  # epoch milliseconds
        (rfc3339(42), 42.0),  # RFC 3339 (Anthropic)
        (rfc3339(-10), 0.0),  # already past
        ("soon", None),
        ("2025-08-21T12:40:59", None),  # no zone: could be anyone's
    ],
)
def test_reset_values_in_every_providers_format(value: str, seconds: float | None) -> None:
    found = seconds_until(value, WALL)
    assert found == (None if seconds is None else pytest.approx(seconds))


def limits() -> tuple[RateLimits, Clock]:
    clock = Clock()
    return RateLimits(clock, lambda: WALL), clock


def test_no_requests_left_means_no_room_until_the_reset_then_room_again() -> None:
    rl, clock = limits()
    rl.observe(
        "a",
        200,
        [
            ("Anthropic-RateLimit-Requests-Limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", rfc3339(30)),
        ],
    )
    assert rl.wait("a", clock.now, lambda: 10) == pytest.approx(30)
    assert rl.room("a", clock.now) == 0.0
    clock.now += 30
    assert rl.wait("a", clock.now, lambda: 10) == 0
    assert rl.room("a", clock.now) is None  # the reading is over: nothing is known now


def test_input_tokens_below_the_requests_estimate_is_no_room_and_the_estimate_is_lazy() -> None:
    rl, clock = limits()
    asked: list[int] = []

    def estimate(tokens: int) -> int:
        asked.append(tokens)
        return tokens

    rl.observe("a", 200, [("anthropic-ratelimit-requests-remaining", "40")])
    assert rl.wait("a", clock.now, lambda: estimate(1)) == 0
    assert asked == []  # no token limit known: the estimate is not needed
    rl.observe(
        "a",
        200,
        [
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "20000"),
            ("anthropic-ratelimit-input-tokens-reset", rfc3339(12)),
        ],
    )
    assert rl.wait("a", clock.now, lambda: estimate(5_000)) == 0
    assert rl.wait("a", clock.now, lambda: estimate(25_000)) == pytest.approx(12)
    assert rl.room("a", clock.now) == 0.5


def test_openai_format_headers_with_durations_and_window_suffixes() -> None:
    rl, clock = limits()
    rl.observe(
        "o",
        200,
        [
            ("x-ratelimit-limit-requests", "5000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-limit-tokens-minute", "100000"),
            ("x-ratelimit-remaining-tokens-minute", "90000"),
            ("x-ratelimit-reset-tokens-minute", "20ms"),
        ],
    )
    assert rl.wait("o", clock.now, lambda: 1) == pytest.approx(360)
    view = rl.snapshot("o", clock.now)
    assert view is not None
    assert view["limits"]["requests"] == {"remaining": 0, "limit": 5000, "reset_in_s": 360.0}
    assert view["limits"]["tokens-minute"]["remaining"] == 90000
    assert view["no_room_for_s"] == 360.0


def test_a_rejected_unified_status_blocks_until_its_reset() -> None:
    rl, clock = limits()
    rl.observe(
        "max",
        200,
        [
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", str(int(WALL) + 3600)),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.4"),
        ],
    )
    assert rl.wait("max", clock.now, lambda: 1) == pytest.approx(3600)
    assert rl.room("max", clock.now) == 0.0
    rl.observe(
        "max",
        200,
        [
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.85"),
        ],
    )
    assert rl.wait("max", clock.now, lambda: 1) == 0
    assert rl.room("max", clock.now) == pytest.approx(0.15)


def test_a_429_blocks_for_its_retry_after_else_until_the_exhausted_limit_resets() -> None:
    rl, clock = limits()
    rl.observe("a", 429, [("retry-after", "17")])
    assert rl.wait("a", clock.now, lambda: 1) == pytest.approx(17)
    exhausted = [
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "45s"),
        ("x-ratelimit-remaining-tokens", "1000"),
        ("x-ratelimit-reset-tokens", "2s"),
    ]
    assert reset_wait(exhausted, WALL) == pytest.approx(45)
    rl.observe("b", 429, exhausted)
    assert rl.wait("b", clock.now, lambda: 1) == pytest.approx(45)
    rl.observe("c", 429, [("content-type", "application/json")])
    assert rl.wait("c", clock.now, lambda: 1) == 0  # it said nothing: health decides alone


def test_a_provider_that_stops_reporting_limits_is_forgotten_and_removed_ones_too() -> None:
    rl, clock = limits()
    rl.observe("a", 200, [("anthropic-ratelimit-requests-remaining", "0")])
    assert rl.wait("a", clock.now, lambda: 1) > 0  # no reset given: trusted for a minute
    rl.observe("a", 200, [("content-type", "text/event-stream")])
    assert rl.snapshot("a", clock.now) is None
    rl.observe("b", 200, [("anthropic-ratelimit-requests-remaining", "9")])
    rl.retain(["a"])
    assert rl.snapshot("b", clock.now) is None
