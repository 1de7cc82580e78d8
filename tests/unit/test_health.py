"""Circuit breaker, failure counting and latency tracking, driven by an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.config.schema import Settings
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry, ProviderHealth, State
from tests.conftest import Clock


def fail(h: ProviderHealth, now: float, retry_after: float | None = None) -> None:
    assert h.acquire(now)
    h.release_failure(now, "http 503", retry_after)


def succeed(h: ProviderHealth, now: float, ttfc: float | None = 0.5) -> None:
    assert h.acquire(now)
    h.release_success(now, ttfc)


def opened(policy: HealthPolicy | None = None, now: float = 0.0) -> ProviderHealth:
    """A provider whose breaker just opened at ``now``."""
    h = ProviderHealth("a", policy or HealthPolicy(threshold=2, cooldown=60))
    fail(h, now)
    fail(h, now)
    assert h.state(now) is State.COOLING_DOWN
    return h


def test_failures_below_threshold_keep_provider_available() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=3))
    fail(h, 0)
    fail(h, 1)
    assert h.state(1) is State.HEALTHY
    assert h.available(1)
    assert h.failure_count == 2


def test_threshold_failures_open_breaker_for_the_cooldown() -> None:
    h = opened(HealthPolicy(threshold=2, cooldown=60), now=10)
    assert not h.available(10)
    assert not h.acquire(69)
    assert h.cooldown_remaining(40) == pytest.approx(30)
    assert h.state(69.9) is State.COOLING_DOWN


def test_cooldown_expiry_lets_exactly_one_probe_through() -> None:
    h = opened()
    assert h.state(60) is State.HALF_OPEN
    assert h.cooldown_remaining(60) == 0
    assert h.acquire(60)
    assert not h.available(61)
    assert not h.acquire(61), "a second request must not join the probe"
    assert h.in_flight == 1


def test_probe_success_closes_breaker_and_resets_count() -> None:
    h = opened()
    assert h.acquire(60)
    h.release_success(61, ttfc=0.2)
    assert h.state(61) is State.HEALTHY
    assert h.failure_count == 0
    fail(h, 62)
    assert h.state(62) is State.HEALTHY, "a fresh count starts after recovery"


def test_probe_failure_reopens_breaker_for_a_full_cooldown() -> None:
    h = opened()
    assert h.acquire(60)
    h.release_failure(65, "timeout")
    assert h.state(65) is State.COOLING_DOWN
    assert h.cooldown_remaining(65) == pytest.approx(60)
    assert h.state(125) is State.HALF_OPEN


def test_probe_neutral_release_frees_the_probe_slot_without_a_verdict() -> None:
    h = opened()
    assert h.acquire(60)
    h.release_neutral(61)  # the client went away before an answer
    assert h.state(61) is State.HALF_OPEN
    assert h.acquire(61), "the next request may probe"


def test_request_from_before_the_breaker_opened_does_not_free_the_probe_slot() -> None:
    """Releases carry no token; an older request leaving must not let a second probe in."""
    h = ProviderHealth("a", HealthPolicy(threshold=2, cooldown=60))
    assert h.acquire(0)  # a long stream, still running when the breaker opens
    fail(h, 1)
    fail(h, 1)
    assert h.acquire(61)  # the probe
    h.release_neutral(62)  # could be either: assume the old one
    assert not h.acquire(62)
    h.release_neutral(63)  # now it can only be the probe
    assert h.in_flight == 0
    assert h.acquire(63)


def test_older_request_leaving_before_the_probe_does_not_hold_the_probe_slot() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=2, cooldown=60))
    assert h.acquire(0)
    fail(h, 1)
    fail(h, 1)
    assert h.state(61) is State.HALF_OPEN
    h.release_neutral(61)  # the old stream ends before anyone probes
    assert h.acquire(62)
    h.release_neutral(63)
    assert h.acquire(63), "the probe's own neutral release frees the slot"


def test_late_failure_during_cooldown_does_not_restart_it() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=1, cooldown=60))
    assert h.acquire(0)
    fail(h, 0)
    h.release_failure(30, "connection reset")
    assert h.cooldown_remaining(30) == pytest.approx(30)


def test_retry_after_extends_cooldown_up_to_the_cap() -> None:
    policy = HealthPolicy(threshold=1, cooldown=60, max_retry_after=600)
    h = ProviderHealth("a", policy)
    fail(h, 0, retry_after=120)
    assert h.cooldown_remaining(0) == pytest.approx(120)
    h2 = ProviderHealth("b", policy)
    fail(h2, 0, retry_after=86_400)
    assert h2.cooldown_remaining(0) == pytest.approx(600)


def test_short_retry_after_never_shortens_the_cooldown() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=1, cooldown=60))
    fail(h, 0, retry_after=5)
    assert h.cooldown_remaining(0) == pytest.approx(60)


def test_retry_after_below_threshold_does_not_open_breaker() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=2))
    fail(h, 0, retry_after=120)
    assert h.state(0) is State.HEALTHY
    assert h.available(0)


def test_failures_older_than_reset_timeout_are_forgotten() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=2, reset_timeout=300))
    fail(h, 0)
    assert h.failure_count_at(301) == 0
    fail(h, 301)
    assert h.state(301) is State.HEALTHY
    assert h.failure_count == 1


def test_reset_timeout_zero_never_forgets_failures() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=2, reset_timeout=0))
    fail(h, 0)
    fail(h, 1_000_000)
    assert h.state(1_000_000) is State.COOLING_DOWN


@pytest.mark.parametrize(
    ("reset_on_success", "expected"), [(True, State.HEALTHY), (False, State.COOLING_DOWN)]
)
def test_success_resets_failure_count_only_with_reset_on_success(
    reset_on_success: bool, expected: State
) -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=2, reset_on_success=reset_on_success))
    fail(h, 0)
    succeed(h, 1)
    fail(h, 2)
    assert h.state(2) is expected


def test_client_cancellation_never_counts_as_failure() -> None:
    h = ProviderHealth("a", HealthPolicy(threshold=1))
    for t in range(10):
        assert h.acquire(t)
        h.release_neutral(t)
    assert h.state(10) is State.HEALTHY
    assert h.failure_count == 0
    assert h.snapshot(10)["error_rate_recent"] is None


def test_transitions_are_reported_once_each_in_order() -> None:
    seen: list[tuple[str, State, State]] = []
    registry = HealthRegistry(
        HealthPolicy(threshold=1, cooldown=60), Clock(0), lambda *t: seen.append(t)
    )
    h = registry.get("a")
    fail(h, 0)
    for t in (60, 61, 62):  # lazily observed, reported once
        h.state(t)
        h.available(t)
    assert h.acquire(62)
    h.release_failure(63, "http 529")
    assert h.acquire(123)
    h.release_success(124, 0.3)
    assert seen == [
        ("a", State.HEALTHY, State.COOLING_DOWN),
        ("a", State.COOLING_DOWN, State.HALF_OPEN),
        ("a", State.HALF_OPEN, State.COOLING_DOWN),
        ("a", State.COOLING_DOWN, State.HALF_OPEN),
        ("a", State.HALF_OPEN, State.HEALTHY),
    ]


def test_ewma_of_time_to_first_content_uses_alpha_point_three() -> None:
    h = ProviderHealth("a", HealthPolicy())
    succeed(h, 0, ttfc=1.0)
    assert h.ewma_ttfc == pytest.approx(1.0)
    succeed(h, 1, ttfc=2.0)
    assert h.ewma_ttfc == pytest.approx(0.3 * 2.0 + 0.7 * 1.0)
    succeed(h, 2, ttfc=None)  # e.g. a response without content: no sample
    assert h.ewma_ttfc == pytest.approx(1.3)


def test_snapshot_shows_state_cooldown_in_flight_latency_and_error_rate() -> None:
    clock = Clock(0)
    registry = HealthRegistry(HealthPolicy(threshold=2, cooldown=60), clock)
    h = registry.get("a")
    for ttfc in (0.1, 0.2, 0.3):
        succeed(h, 0, ttfc)
    fail(h, 0)
    fail(h, 0)
    assert h.acquire(0) is False
    clock.now = 17.75
    snap = registry.snapshot()["a"]
    assert snap["state"] == "cooling_down"
    assert snap["failure_count"] == 2
    assert snap["cooldown_remaining_s"] == pytest.approx(42.2, abs=0.05)
    assert snap["in_flight"] == 0
    assert snap["ttft_ms_recent"] == pytest.approx(200.0)
    assert snap["error_rate_recent"] == pytest.approx(0.4)
    assert (snap["requests"], snap["failures"]) == (5, 2)
    assert snap["last_failure_reason"] == "http 503"


def test_policy_from_settings_maps_each_setting() -> None:
    s = Settings(
        unhealthy_threshold=5,
        failure_cooldown=30,
        unhealthy_reset_on_success=False,
        unhealthy_reset_timeout=0,
        max_retry_after=90,
    )
    assert HealthPolicy.from_settings(s) == HealthPolicy(5, 30, False, 0, 90)


def test_reconcile_keeps_state_of_unchanged_names_and_applies_new_policy() -> None:
    clock = Clock(0)
    registry = HealthRegistry(HealthPolicy(threshold=1, cooldown=60), clock)
    fail(registry.get("a"), 0)
    registry.reconcile(["a", "b"], HealthPolicy(threshold=3, cooldown=10))
    assert registry.get("a").state(30) is State.COOLING_DOWN, "reload must not wipe health"
    assert "b" in registry
    assert registry.get("b").policy.threshold == 3
    assert registry.get("a").policy.cooldown == 10


def test_reconcile_forgets_removed_provider_once_its_requests_end() -> None:
    registry = HealthRegistry(HealthPolicy(), Clock(0))
    busy = registry.get("busy")
    assert busy.acquire(0)
    fail(registry.get("idle"), 0)
    registry.reconcile(["other"], HealthPolicy())
    assert "idle" not in registry
    assert "busy" not in registry
    assert set(registry.snapshot()) == {"other"}
    busy.release_success(1, 0.1)
    assert registry.get("busy") is busy, "kept while in flight"
    registry.reconcile(["other"], HealthPolicy())
    assert registry.get("busy") is not busy


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("asfnt"), st.floats(0, 50)), max_size=60))
def test_half_open_never_admits_a_second_concurrent_probe(ops: list[tuple[str, float]]) -> None:
    """In one half-open period, acquires succeed at most once per freed probe slot."""
    period = {"probes": 0, "neutrals": 0}

    def on_transition(_name: str, _old: State, new: State) -> None:
        if new is State.HALF_OPEN:
            period.update(probes=0, neutrals=0)

    h = ProviderHealth(
        "a", HealthPolicy(threshold=2, cooldown=20, max_retry_after=40), on_transition
    )
    now = 0.0
    held = 0
    for op, arg in ops:
        if op == "t":
            now += arg
        elif op == "a":
            half_open = h.state(now) is State.HALF_OPEN
            if h.acquire(now):
                held += 1
                period["probes"] += half_open
        elif held:
            held -= 1
            if op == "s":
                h.release_success(now, arg)
            elif op == "f":
                h.release_failure(now, "x", arg or None)
            else:
                h.release_neutral(now)
                period["neutrals"] += 1
        assert period["probes"] <= 1 + period["neutrals"]
        assert h.in_flight == held
        assert 0 <= h.cooldown_remaining(now) <= 40 + 1e-9  # float sums: until - now


def test_a_breaker_opened_elsewhere_keeps_the_longer_cooldown_then_probes() -> None:
    seen: list[tuple[str, State, State]] = []
    h = ProviderHealth("a", HealthPolicy(threshold=2, cooldown=60), lambda *t: seen.append(t))
    h.open_elsewhere(0.0, 30.0, "http 529")
    assert h.state(0.0) is State.COOLING_DOWN and not h.available(29.0)
    assert h.last_failure_reason == "http 529"
    h.open_elsewhere(10.0, 5.0, "http 529")  # a shorter remaining cooldown moves nothing
    assert h.cooldown_remaining(10.0) == 20.0
    h.open_elsewhere(10.0, 50.0, "http 529")  # a longer one extends it
    assert h.cooldown_remaining(10.0) == 50.0
    assert h.acquire(60.0) and h.state(60.0) is State.HALF_OPEN  # the probe, as after our own
    assert not h.acquire(60.0)
    h.release_success(60.0, 0.5)
    assert h.state(60.0) is State.HEALTHY
    assert [(old, new) for _, old, new in seen] == [
        (State.HEALTHY, State.COOLING_DOWN),
        (State.COOLING_DOWN, State.HALF_OPEN),
        (State.HALF_OPEN, State.HEALTHY),
    ]
