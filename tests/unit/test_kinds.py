"""Request kinds from Claude Code's real request shapes, and the route rules that use them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from ccbalancer.balance import rules
from ccbalancer.balance.kinds import Shape
from ccbalancer.config.schema import Config

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_code"


def sample(name: str) -> dict[str, Any]:
    body = json.loads((SAMPLES / name).read_text())
    assert isinstance(body, dict)
    return body


MAIN = "2.1.330-request1-skeleton.json"
TITLE = "2.1.330-title-request.json"


def title_2_1_197() -> dict[str, Any]:
    """2.1.197's title request (CLAUDE_CODE.md section 4): its main request without tools,
    thinking disabled, a JSON-schema ``output_config.format``."""
    body = sample("2.1.197-request1-skeleton.json")
    del body["tools"]
    body["thinking"] = {"type": "disabled"}
    body["output_config"] = {
        "effort": "high",
        "format": {"type": "json_schema", "schema": {"properties": {"title": {"type": "string"}}}},
    }
    return body


def test_claude_codes_title_requests_are_background_and_its_main_turns_are_not() -> None:
    assert Shape(sample(TITLE)).kinds() == ["background"]
    assert Shape(title_2_1_197()).has("background")
    for name in (
        MAIN,
        "2.1.330-request2-after-tool-skeleton.json",
        "2.1.330-thinking-tool-followup-skeleton.json",
        "2.1.197-request1-skeleton.json",
    ):
        assert not Shape(sample(name)).has("background"), name


def test_a_plain_request_without_tools_or_thinking_is_not_background() -> None:
    """Nothing in a bare SDK request says it is a side request: it is not moved."""
    plain = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert Shape(plain).kinds() == []


def test_the_title_request_keeps_its_main_model_name() -> None:
    """Why kinds go by shape: the side request names the session's main model."""
    assert sample(TITLE)["model"] == sample(MAIN)["model"] == "claude-opus-5-5"


@pytest.mark.parametrize(
    ("effort", "deep"), [("low", False), ("medium", False), ("high", True), ("max", True)]
)
def test_deep_thinking_follows_the_effort_in_force(effort: str, deep: bool) -> None:
    body = sample(MAIN)  # 2.1.330 sends the effort twice: top level and per turn
    body["output_config"]["effort"] = effort
    body["messages"][1]["output_config"]["effort"] = effort
    assert Shape(body).has("deep_thinking") is deep


def test_a_per_turn_effort_overrides_the_top_level_one() -> None:
    body = sample(MAIN)
    assert not Shape(body).has("deep_thinking")  # medium, Claude Code's default for opus-5-5
    body["messages"].append(
        {"role": "system", "output_config": {"effort": "max"}, "content": "think harder"}
    )
    assert Shape(body).has("deep_thinking")


def test_large_thinking_budgets_are_deep_and_disabled_thinking_never_is() -> None:
    body = sample(MAIN)
    body["thinking"] = {"type": "enabled", "budget_tokens": 31999}
    assert Shape(body).has("deep_thinking")
    body["thinking"] = {"type": "enabled", "budget_tokens": 4000}
    assert not Shape(body).has("deep_thinking")
    body["thinking"] = {"type": "disabled"}
    body["output_config"]["effort"] = "max"
    assert not Shape(body).has("deep_thinking")


def test_web_search_images_and_long_contexts() -> None:
    body = sample(MAIN)
    assert not Shape(body).has("web_search")
    body["tools"].append({"type": "web_search_20250305", "name": "web_search", "max_uses": 8})
    assert Shape(body).has("web_search")
    picture = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    inside_a_tool_result = {"type": "tool_result", "tool_use_id": "t", "content": [picture]}
    body["messages"].append({"role": "user", "content": [inside_a_tool_result]})
    assert Shape(body).has("image")
    assert not Shape(body).has("long_context")
    body["messages"].append({"role": "user", "content": "x" * 800_000})  # ~229K tokens
    assert Shape(body).has("long_context")


def _config(route_rules: list[dict[str, Any]]) -> Config:
    return Config.model_validate(
        {
            "providers": [{"name": "p", "type": "anthropic", "base_url": "http://p"}],
            "model_routes": {
                "claude-*": [{"provider": "p"}],
                "side": [{"provider": "p"}],
                "long": [{"provider": "p"}],
            },
            "route_rules": route_rules,
        }
    )


def test_the_first_matching_rule_wins_and_no_match_takes_the_models_route() -> None:
    config = _config(
        [
            {"when": {"kind": "background"}, "use": "side"},
            {"when": {"model": "claude-opus-*", "kind": "deep_thinking"}, "use": "long"},
            {"when": {"kind": "background", "model": "*"}, "use": "long"},
        ]
    )
    title = rules.choose(config, "claude-opus-5-5", Shape(sample(TITLE)))
    assert title is not None and (title.key, title.rule) == ("side", 0)
    deep = copy.deepcopy(sample(MAIN))
    deep["messages"][1]["output_config"]["effort"] = "high"
    chosen = rules.choose(config, "claude-opus-5-5", Shape(deep))
    assert chosen is not None and (chosen.key, chosen.rule) == ("long", 1)
    other_model = rules.choose(config, "claude-sonnet-4-6", Shape(deep))
    assert other_model is not None and (other_model.key, other_model.rule) == ("claude-*", None)
    assert rules.choose(config, "gpt-5", Shape(sample(MAIN))) is None


def test_the_token_estimate_is_made_only_when_a_rule_gets_to_ask_for_it() -> None:
    """It costs ~0.4 ms on a 500 KB body: a request an earlier rule (or a model condition)
    settles never pays for it, and one that needs it pays once."""
    config = _config(
        [
            {"when": {"kind": "background"}, "use": "side"},
            {"when": {"model": "claude-sonnet-*", "input_tokens_over": 10}, "use": "long"},
            {"when": {"input_tokens_over": 100_000}, "use": "long"},
            {"when": {"kind": "long_context"}, "use": "long"},
        ]
    )
    settled = Shape(sample(TITLE))
    assert rules.choose(config, "claude-opus-5-5", settled) is not None
    assert settled._tokens is None
    shape = Shape(sample(MAIN))
    route = rules.choose(config, "claude-opus-5-5", shape)
    assert route is not None and route.rule is None  # small: no rule matched
    assert shape._tokens is not None
    first = shape._tokens
    assert shape.has("long_context") is False and shape._tokens == first
    assert shape.kinds() == []  # long_context asked and false: nothing to show
