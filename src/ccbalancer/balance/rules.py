"""``route_rules``: which route a request takes, by its kind, size and model (issue 17).

The first rule whose every condition holds names the route (``use:``, a key of
``model_routes``); a request no rule matches takes the route its model name finds, as
without rules. Conditions are tested cheapest first (model glob, kind, token estimate), so
the estimate is computed only when a rule that otherwise matches asks for it. Sans-IO;
``resolution`` is the same walk, done on paper for ``ccbalancer check``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccbalancer.balance.kinds import LONG_CONTEXT, Shape
from ccbalancer.config.schema import Config, RequestKind, RouteEntry, RouteRule


@dataclass(frozen=True, slots=True)
class Route:
    key: str
    entries: tuple[RouteEntry, ...]
    rule: int | None  # index in ``route_rules``; None: chosen by the model name


def choose(config: Config, model: str, shape: Shape) -> Route | None:
    """The route for this request, or None when neither a rule nor the model finds one."""
    for index, rule in enumerate(config.route_rules):
        when = rule.when
        if when.model is not None and not when.matches_model(model):
            continue
        if when.kind is not None and not shape.has(when.kind):
            continue
        if when.input_tokens_over is not None and shape.input_tokens <= when.input_tokens_over:
            continue
        return Route(rule.use, config.model_routes[rule.use], index)
    found = config.route_for(model)
    return None if found is None else Route(found[0], found[1], None)


def rule_label(index: int | None) -> str:
    """How the record names the rule that chose a route ("" for the model's own route)."""
    return "" if index is None else f"route_rules[{index}]"


def conditions(rule: RouteRule) -> str:
    """A rule's conditions in the words of the config file."""
    when = rule.when
    parts = []
    if when.kind is not None:
        parts.append(f"kind {when.kind}")
    if when.model is not None:
        parts.append(f"model {when.model}")
    if when.input_tokens_over is not None:
        parts.append(f"input_tokens_over {when.input_tokens_over}")
    return ", ".join(parts)


def resolution(config: Config, kind: RequestKind | None) -> list[tuple[int, RouteRule, str]]:
    """For a request of ``kind`` (None: of no kind), the rules it may meet in order, each
    with the conditions still open (model, size); the walk stops at the first rule with none
    left, which always applies. An empty list or one ending with open conditions means
    the model's own route takes what the rules leave."""
    out: list[tuple[int, RouteRule, str]] = []
    for index, rule in enumerate(config.route_rules):
        when = rule.when
        if when.kind is not None and when.kind != kind:
            continue
        open_parts = []
        if when.model is not None:
            open_parts.append(f"model {when.model}")
        if when.input_tokens_over is not None and not (
            kind == "long_context" and when.input_tokens_over < LONG_CONTEXT
        ):
            open_parts.append(f"input over {when.input_tokens_over} tokens")
        out.append((index, rule, ", ".join(open_parts)))
        if not open_parts:
            break
    return out
