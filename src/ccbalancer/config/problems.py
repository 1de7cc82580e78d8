"""What is wrong with a config file, said so that a person can fix it in one go.

pydantic reports locations as tuples (``("providers", 1, "base_url")``) in its own words
("Input should be greater than 0"). ``Locator`` turns a location into the dotted key a user
sees — providers named as well as numbered, ``providers[1] (relay-b).base_url`` — and the line
of the YAML file it points at; ``problems_of`` translates every validation error, suggesting the
closest known key for an unknown one.
"""

from __future__ import annotations

import difflib
import typing
from functools import cached_property
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ccbalancer.config.schema import Config
from ccbalancer.errors import ConfigProblem

Loc = tuple[int | str, ...]

_TYPE_WORDS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a mapping (key: value lines)",
    "model_type": "must be a mapping (key: value lines)",
    "model_attributes_type": "must be a mapping (key: value lines)",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
_OAUTH = "; OAuth login is not supported: auth_value: passthrough forwards each client's own key"


class Locator:
    """Dotted keys and YAML lines for locations in one config file."""

    def __init__(self, raw: Any, text: str) -> None:
        self._raw = raw
        self._text = text

    @cached_property
    def _tree(self) -> yaml.Node | None:
        """The file's node graph (with line marks), built only when a problem needs a line."""
        try:
            return yaml.compose(self._text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return None

    def describe(self, loc: Loc, missing: bool = False) -> tuple[str, int | None]:
        """(dotted key, 1-based line) of ``loc``. Parts that are not in the file — pydantic's
        union member tags — are left out; a ``missing`` key points at its parent's line."""
        raw, node = self._raw, self._tree
        key = ""
        line = node.start_mark.line + 1 if node is not None else None
        for i, part in enumerate(loc):
            if isinstance(part, int):
                key += f"[{part}]"
                if isinstance(raw, list) and 0 <= part < len(raw):
                    raw = raw[part]
                    node = _item(node, part)
                    line = node.start_mark.line + 1 if node is not None else line
                    name = raw.get("name") if isinstance(raw, dict) else None
                    if key.startswith("providers[") and key.count("[") == 1 and name:
                        key += f" ({name})"
                else:
                    raw, node = None, None
            elif isinstance(raw, dict) and part in raw:
                key += f".{part}" if key else part
                raw = raw[part]
                key_node, node = _entry(node, part)
                line = key_node.start_mark.line + 1 if key_node is not None else line
            elif missing and i == len(loc) - 1:
                key += f".{part}" if key else part
        return key, line

    def problem(self, loc: Loc, reason: str, missing: bool = False) -> ConfigProblem:
        key, line = self.describe(loc, missing)
        return ConfigProblem(key or "(top level)", reason, line)


def _entry(node: yaml.Node | None, name: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == name:
                return key, value
    return None, None


def _item(node: yaml.Node | None, index: int) -> yaml.Node | None:
    if isinstance(node, yaml.SequenceNode) and index < len(node.value):
        item: yaml.Node = node.value[index]
        return item
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The first pydantic model inside a field's annotation (``tuple[X, ...]``, ``X | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def known_keys(loc: Loc) -> list[str]:
    """The keys the schema accepts in the mapping at ``loc``."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _model_in(model.model_fields[part].annotation)
    return [name for name in model.model_fields if name != "source"] if model else []


def _reason(error: Any, loc: Loc) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), known_keys(loc[:-1]), n=1, cutoff=0.6)
        return "unknown key" + (f"; did you mean {close[0]}?" if close else " (check for a typo)")
    if kind == "too_short":
        count = int(ctx.get("min_length", 1))
        return f"needs at least {count} {'entry' if count == 1 else 'entries'}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "literal_error":
        oauth = loc[-1:] == ("auth_type",) and error.get("input") == "oauth"
        return f"must be {ctx.get('expected', '')}" + (_OAUTH if oauth else "")
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind]
    message = str(error["msg"]).removeprefix("Value error, ")
    return message.replace("Input should be", "must be").replace("String should", "must")


def _echo_of_bad_items(error: Any) -> bool:
    """pydantic also calls a list too short when enough items were written but some failed
    validation ("at least 1 item after validation, not 0"): those items' own errors say it."""
    written = error.get("input")
    minimum = (error.get("ctx") or {}).get("min_length", 0)
    return error["type"] == "too_short" and isinstance(written, list) and len(written) >= minimum


def problems_of(exc: ValidationError, locator: Locator) -> list[ConfigProblem]:
    """Every validation error as a problem; errors at one key (a union's alternatives) merge."""
    merged: dict[str, ConfigProblem] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        if _echo_of_bad_items(error):
            continue
        problem = locator.problem(loc, _reason(error, loc), missing=error["type"] == "missing")
        seen = merged.get(problem.key)
        if seen is None:
            merged[problem.key] = problem
        elif problem.reason not in seen.reason:
            merged[problem.key] = ConfigProblem(
                seen.key, f"{seen.reason} or {problem.reason.removeprefix('must be ')}", seen.line
            )
    return list(merged.values())


def in_file_order(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0))
