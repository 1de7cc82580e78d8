"""Candidate planning: strategies' distributions, priority tiers, limits and stickiness."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from ccbalancer.balance import Candidate, Plan, Planner, StickyTable, make_strategy
from ccbalancer.balance.least_latency import LeastLatencyStrategy
from ccbalancer.balance.weighted import WeightedStrategy
from ccbalancer.config.schema import Config
from ccbalancer.sharing.outcome import Outcome, Usage
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry, State
from tests.conftest import Clock

PICKS = 1_000


def make_config(
    route: list[dict[str, Any]],
    providers: dict[str, dict[str, Any]] | None = None,
    **settings: Any,
) -> Config:
    names = dict.fromkeys(e["provider"] for e in route) | dict.fromkeys(providers or {})
    return Config.model_validate(
        {
            "providers": [
                {
                    "name": n,
                    "type": "anthropic",
                    "base_url": f"https://{n}.example",
                    **(providers or {}).get(n, {}),
                }
                for n in names
            ],
            "model_routes": {"*sonnet*": route},
            "settings": settings,
        }
    )


def tiered(*names: str, priority: int = 1) -> list[dict[str, Any]]:
    return [{"provider": n, "priority": priority} for n in names]


def setup(
    config: Config, strategy: str = "priority", threshold: int = 1
) -> tuple[Planner, HealthRegistry, Clock]:
    clock = Clock()
    health = HealthRegistry(HealthPolicy(threshold=threshold, cooldown=60), clock)
    planner = Planner(health, rng=random.Random(1234))
    planner.set_strategy(strategy)
    return planner, health, clock


def first(plan: Plan) -> str:
    return plan.candidates[0].provider


def break_provider(health: HealthRegistry, name: str, retry_after: float | None = None) -> None:
    h = health.get(name)
    assert h.acquire(health.clock())
    h.release_failure(health.clock(), "http 503", retry_after)
    assert h.state(health.clock()) is State.COOLING_DOWN


def names(plan: Plan) -> list[str]:
    return [c.provider for c in plan.candidates]


def test_priority_strategy_tries_providers_in_file_order() -> None:
    config = make_config(tiered("a", "b", "c"))
    planner, _, _ = setup(config)
    for _ in range(10):
        assert names(planner.plan(config, "claude-sonnet-4", "")) == ["a", "b", "c"]


def test_round_robin_rotates_exactly_over_many_picks() -> None:
    config = make_config(tiered("a", "b", "c"))
    planner, _, _ = setup(config, "round_robin")
    picks = [first(planner.plan(config, "claude-sonnet-4", "")) for _ in range(PICKS)]
    assert picks[:6] == ["a", "b", "c", "a", "b", "c"]
    assert all(picks[i] != picks[i + 1] for i in range(PICKS - 1))
    assert Counter(picks) == {"a": 334, "b": 333, "c": 333}


def test_weighted_follows_weights_exactly_and_smoothly() -> None:
    config = make_config(tiered("a", "b"), {"a": {"weight": 3}, "b": {"weight": 1}})
    planner, _, _ = setup(config, "weighted")
    picks = [first(planner.plan(config, "claude-sonnet-4", "")) for _ in range(PICKS)]
    assert Counter(picks) == {"a": 750, "b": 250}
    windows = [picks[i : i + 4] for i in range(PICKS - 3)]
    assert all(w.count("b") == 1 for w in windows), "smooth: one b in every run of four"


def test_weighted_puts_the_runner_up_second_for_failover() -> None:
    tier = [Candidate("a", "m", 1, 1), Candidate("b", "m", 1, 1)]
    strategy = WeightedStrategy()
    assert [c.provider for c in strategy.order("r", tier)] == ["a", "b"]
    assert [c.provider for c in strategy.order("r", tier)] == ["b", "a"]


def test_random_is_roughly_uniform_with_a_seeded_rng() -> None:
    config = make_config(tiered("a", "b", "c"))
    planner, _, _ = setup(config, "random")
    counts = Counter(first(planner.plan(config, "claude-sonnet-4", "")) for _ in range(PICKS))
    assert set(counts) == {"a", "b", "c"}
    assert all(abs(n - PICKS / 3) < 60 for n in counts.values()), counts


def measured(health: HealthRegistry, latencies: dict[str, float]) -> None:
    for name, ttfc in latencies.items():
        h = health.get(name)
        assert h.acquire(0)
        h.release_success(0, ttfc)


def test_least_latency_prefers_lower_ewma_and_still_explores() -> None:
    config = make_config(tiered("slow", "fast"))
    planner, health, _ = setup(config, "least_latency")
    measured(health, {"slow": 5.0, "fast": 0.4})
    counts = Counter(first(planner.plan(config, "claude-sonnet-4", "")) for _ in range(PICKS))
    # epsilon 0.1, and half of the explorations land on "slow": about 5 %.
    assert 20 <= counts["slow"] <= 90, counts
    assert counts["fast"] == PICKS - counts["slow"]


def test_least_latency_tries_unmeasured_providers_first() -> None:
    health = HealthRegistry(HealthPolicy(), Clock())
    measured(health, {"a": 0.1})
    strategy = LeastLatencyStrategy(health, random.Random(0), epsilon=0)
    tier = [Candidate("a", "m", 1, 1), Candidate("new", "m", 1, 1)]
    assert [c.provider for c in strategy.order("r", tier)] == ["new", "a"]


def test_lower_priority_tier_only_follows_when_higher_tier_cannot_take_request() -> None:
    config = make_config(tiered("a", "b") + tiered("backup", priority=2))
    planner, health, _ = setup(config, "round_robin")
    for _ in range(50):
        assert names(planner.plan(config, "claude-sonnet-4", ""))[-1] == "backup"
    break_provider(health, "a")
    break_provider(health, "b")
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert names(plan) == ["backup"]
    assert [p for p, _ in plan.skipped] == ["a", "b"]


def test_cooling_down_provider_is_skipped_with_seconds_left_and_retry_after() -> None:
    config = make_config(tiered("a", "b"))
    planner, health, clock = setup(config)
    break_provider(health, "a")
    clock.now += 17.5
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert names(plan) == ["b"]
    assert plan.skipped == [("a", "cooling down 43s")]
    assert plan.retry_after == pytest.approx(42.5)


def test_half_open_provider_is_offered_until_its_probe_is_taken() -> None:
    config = make_config(tiered("a", "b"))
    planner, health, clock = setup(config)
    break_provider(health, "a")
    clock.now += 60
    assert names(planner.plan(config, "claude-sonnet-4", "")) == ["a", "b"]
    assert health.get("a").acquire(clock.now)
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert names(plan) == ["b"]
    assert plan.skipped == [("a", "half-open probe in flight")]
    assert plan.retry_after is None


def test_full_provider_is_skipped_not_queued_behind() -> None:
    config = make_config(tiered("a", "b"), {"a": {"max_concurrency": 2}})
    planner, health, clock = setup(config)
    for _ in range(2):
        assert health.get("a").acquire(clock.now)
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert names(plan) == ["b"]
    assert plan.skipped == [("a", "at max_concurrency 2")]
    health.get("a").release_neutral(clock.now)
    assert names(planner.plan(config, "claude-sonnet-4", "")) == ["a", "b"]


def test_disabled_provider_is_skipped() -> None:
    config = make_config(tiered("a", "b"), {"a": {"enabled": False}})
    planner, _, _ = setup(config)
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert (names(plan), plan.skipped) == (["b"], [("a", "disabled")])


def test_same_provider_with_two_models_gives_two_candidates() -> None:
    route = [
        {"provider": "a", "model": "big", "priority": 1},
        {"provider": "a", "model": "small", "priority": 2},
    ]
    config = make_config(route, {"a": {"weight": 2}})
    planner, _, _ = setup(config)
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert plan.candidates == [Candidate("a", "big", 1, 2.0), Candidate("a", "small", 2, 2.0)]


def test_model_without_route_gives_an_empty_plan() -> None:
    config = make_config(tiered("a"))
    planner, _, _ = setup(config)
    assert planner.plan(config, "gpt-4o", "") == Plan(None, [], [], None)


def test_forced_provider_keeps_only_its_route_entries() -> None:
    route = [*tiered("a"), {"provider": "b", "model": "b-model", "priority": 2}]
    config = make_config(route, {"c": {}})
    planner, _, _ = setup(config)
    forced = planner.plan(config, "claude-sonnet-4", "", forced_provider="b")
    assert forced.candidates == [Candidate("b", "b-model", 2, 1.0)]
    unrouted = planner.plan(config, "claude-sonnet-4", "", forced_provider="c")
    assert unrouted.candidates == [Candidate("c", "passthrough", 1, 1.0)]
    unknown = planner.plan(config, "claude-sonnet-4", "", forced_provider="zz")
    assert (unknown.candidates, unknown.skipped) == ([], [("zz", "unknown provider")])


def answered(planner: Planner, config: Config, session: str, provider: str) -> None:
    """A request of ``session`` was planned and ``provider`` answered it."""
    planner.succeeded(planner.plan(config, "claude-sonnet-4", session), provider)


def test_sessions_keep_their_own_sticky_provider() -> None:
    config = make_config(tiered("a", "b"), sticky_provider_duration=300)
    planner, _, _ = setup(config, "round_robin")
    answered(planner, config, "s1", "a")
    answered(planner, config, "s2", "b")
    for _ in range(20):  # round robin would alternate; stickiness wins
        assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "a"
        assert first(planner.plan(config, "claude-sonnet-4", "s2")) == "b"


def test_one_sessions_failover_does_not_move_another_session() -> None:
    config = make_config(tiered("a", "b"), sticky_provider_duration=300)
    planner, _, _ = setup(config, threshold=5)
    answered(planner, config, "s1", "b")
    answered(planner, config, "s2", "b")
    planner.failed(planner.plan(config, "claude-sonnet-4", "s1"), "b")
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "a"
    assert first(planner.plan(config, "claude-sonnet-4", "s2")) == "b"


def test_stickiness_expires_after_its_duration_and_is_off_at_zero() -> None:
    config = make_config(tiered("a", "b"), sticky_provider_duration=300)
    planner, _, clock = setup(config)
    answered(planner, config, "s1", "b")
    clock.now += 299
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "b"
    clock.now += 1
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "a"
    off = make_config(tiered("a", "b"), sticky_provider_duration=0)
    answered(planner, off, "s1", "b")
    assert first(planner.plan(off, "claude-sonnet-4", "s1")) == "a"


def test_sticky_provider_is_left_while_it_cools_down() -> None:
    config = make_config(tiered("a", "b"), sticky_provider_duration=300)
    planner, health, _ = setup(config)
    answered(planner, config, "s1", "b")
    break_provider(health, "b")
    assert names(planner.plan(config, "claude-sonnet-4", "s1")) == ["a"]


def test_sticky_table_is_bounded_and_evicts_least_recently_used() -> None:
    table = StickyTable(max_entries=2)
    table.set("r", "s1", "a", 0, 60)
    table.set("r", "s2", "a", 0, 60)
    assert table.get("r", "s1", 1) == "a"  # s1 is now the most recent
    table.set("r", "s3", "a", 1, 60)
    assert len(table) == 2
    assert table.get("r", "s2", 2) is None
    assert table.get("r", "s1", 2) == "a"


def test_health_survives_reconcile_so_a_cooling_provider_stays_skipped() -> None:
    config = make_config(tiered("a", "b"))
    planner, health, _ = setup(config)
    break_provider(health, "a")
    reloaded = make_config(tiered("a", "b", "c"))
    health.reconcile([p.name for p in reloaded.providers], HealthPolicy(threshold=1, cooldown=60))
    planner.set_strategy("priority")
    assert names(planner.plan(reloaded, "claude-sonnet-4", "")) == ["b", "c"]


def test_reloading_the_same_strategy_keeps_its_rotation() -> None:
    config = make_config(tiered("a", "b", "c"))
    planner, _, _ = setup(config, "round_robin")
    assert first(planner.plan(config, "claude-sonnet-4", "")) == "a"
    planner.set_strategy("round_robin")
    assert first(planner.plan(config, "claude-sonnet-4", "")) == "b"


def test_unknown_strategy_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="fastest"):
        make_strategy("fastest", HealthRegistry(HealthPolicy()))


def test_members_low_on_rate_limit_room_go_last_and_the_strategy_rotates_the_rest() -> None:
    config = make_config(tiered("a", "b", "c"))
    planner, _, _ = setup(config, "round_robin")

    def report(name: str, left: int) -> None:
        headers = [
            ("anthropic-ratelimit-requests-limit", "100"),
            ("anthropic-ratelimit-requests-remaining", str(left)),
        ]
        planner.ratelimits.observe(name, 200, headers)

    report("a", 5)
    report("b", 60)
    report("c", 30)  # above the 20 % line: the strategy decides between b and c
    plans = [names(planner.plan(config, "claude-sonnet-4", "")) for _ in range(2)]
    assert plans == [["b", "c", "a"], ["c", "b", "a"]]
    report("c", 10)
    assert names(planner.plan(config, "claude-sonnet-4", "")) == ["b", "c", "a"]  # c: more room
    report("b", 0)  # no room at all: not a candidate, and a plan may ask again later
    plan = planner.plan(config, "claude-sonnet-4", "")
    assert names(plan) == ["c", "a"] and ("b", "no rate-limit room for 60s") in plan.skipped
    assert not planner.has_room(plan, "b") and planner.has_room(plan, "a")


def test_asking_again_keeps_the_route_after_the_call_let_go_of_its_body() -> None:
    """A hedge or a recovery asks for candidates while (or after) the first attempt runs; the
    call drops its parsed body at the commit, and the plan must neither keep it alive nor
    lose the route the rules chose from it."""
    config = Config.model_validate(
        {
            "providers": [
                {"name": n, "type": "anthropic", "base_url": f"https://{n}.example"}
                for n in ("main", "side", "spare")
            ],
            "model_routes": {
                "*": [{"provider": "main"}],
                "titles": [{"provider": "side"}, {"provider": "spare", "priority": 2}],
            },
            "route_rules": [{"when": {"kind": "background"}, "use": "titles"}],
        }
    )
    planner, health, _ = setup(config)

    class Call:  # what relay.Call offers the planner
        body = {"model": "m", "messages": [], "tools": [], "output_config": {"format": {}}}

    call = Call()
    plan = planner.plan(config, "claude-opus-5-5", "s1", request=call)
    assert (plan.route_key, plan.rule_label, plan.kind) == (
        "titles",
        "route_rules[0]",
        "background",
    )
    call.body = {}  # released at the commit
    break_provider(health, "side")
    again = planner.again(plan)
    assert (again.route_key, names(again)) == ("titles", ["spare"])
    assert again.skipped == [("side", "cooling down 60s")]
    assert not plan.shape.has("image")  # read through the call: the old body is not kept


def test_pin_moves_even_a_warm_session_and_a_forced_plan_never_moves_it() -> None:
    config = make_config(tiered("a", "b"), sticky_provider_duration=300)
    planner, _, _ = setup(config, "round_robin")
    warm = Outcome(usage=Usage(input_tokens=10, cache_read_input_tokens=900))
    planner.succeeded(planner.plan(config, "claude-sonnet-4", "s1"), "a", warm)
    planner.succeeded(planner.plan(config, "claude-sonnet-4", "s1"), "b", Outcome())
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "a"  # warm: it stays
    forced = planner.plan(config, "claude-sonnet-4", "s1", forced_provider="b")
    planner.pin(forced, "b")
    planner.succeeded(forced, "b", warm)
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "a"
    planner.pin(planner.plan(config, "claude-sonnet-4", "s1"), "b")  # e.g. after a recovery
    assert first(planner.plan(config, "claude-sonnet-4", "s1")) == "b"
