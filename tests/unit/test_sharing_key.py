"""The coalescing key: which requests may share one upstream answer (sans-IO)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.sharing.key import coalescing_key

HEADERS = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"}


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # orjson refuses surrogates
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what orjson.loads produces
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=16,
)
_FIELDS = _TEXT.filter(lambda name: name not in ("stream", "max_tokens"))
_BODIES = st.dictionaries(_FIELDS, _VALUES, max_size=6).map(
    lambda extra: {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }
)


def _reordered(value: Any, data: st.DataObject) -> Any:
    """The same JSON value with every object's keys in a drawn order."""
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {k: _reordered(value[k], data) for k in keys}
    if isinstance(value, list):
        return [_reordered(item, data) for item in value]
    return value


@settings(max_examples=200, deadline=None)
@given(body=_BODIES, data=st.data(), stream=st.sampled_from([True, False, None, "absent"]))
def test_key_ignores_stream_and_key_order(
    body: dict[str, Any], data: st.DataObject, stream: Any
) -> None:
    other = _reordered(body, data)
    if stream != "absent":
        other["stream"] = stream
    assert coalescing_key("sk-1", other, HEADERS) == coalescing_key("sk-1", body, HEADERS)


@settings(max_examples=200, deadline=None)
@given(body=_BODIES, name=_FIELDS | st.sampled_from(["model", "messages"]), value=_VALUES)
def test_key_changes_with_any_other_field(body: dict[str, Any], name: str, value: Any) -> None:
    """Adding a field, removing one or giving one a different value changes the key."""
    changed = dict(body)
    if name in body and body[name] == value:
        del changed[name]  # the drawn value is the same: removing the field is the change
    else:
        changed[name] = value
    assert coalescing_key("sk-1", changed, HEADERS) != coalescing_key("sk-1", body, HEADERS)


@settings(max_examples=100, deadline=None)
@given(body=_BODIES, first=st.integers(1, 200_000), second=st.integers(1, 200_000))
def test_max_tokens_is_in_the_key_only_when_configured(
    body: dict[str, Any], first: int, second: int
) -> None:
    a, b = {**body, "max_tokens": first}, {**body, "max_tokens": second}
    assert coalescing_key("sk-1", a, HEADERS) == coalescing_key("sk-1", b, HEADERS)
    same = coalescing_key("sk-1", a, HEADERS, True) == coalescing_key("sk-1", b, HEADERS, True)
    assert same == (first == second)


def test_nested_changes_change_the_key() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
    }
    base = coalescing_key("sk-1", body, HEADERS)
    nested_text = {
        **body,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "b"}]}],
    }
    nested_tool = {**body, "tools": [{"name": "Bash", "input_schema": {"type": "array"}}]}
    assert coalescing_key("sk-1", nested_text, HEADERS) != base
    assert coalescing_key("sk-1", nested_tool, HEADERS) != base


def test_different_identities_never_share_a_key() -> None:
    body = {"model": "m", "messages": []}
    assert coalescing_key("sk-1", body, HEADERS) != coalescing_key("sk-2", body, HEADERS)
    assert coalescing_key("", body, HEADERS) != coalescing_key("sk-1", body, HEADERS)


@pytest.mark.parametrize("name", ["anthropic-version", "anthropic-beta"])
def test_behaviour_headers_are_in_the_key(name: str) -> None:
    """Claude Code's 400 fallbacks change anthropic-beta: such a retry is a different request."""
    body = {"model": "m", "messages": []}
    changed = {**HEADERS, name: HEADERS[name] + ",x"}
    missing = {k: v for k, v in HEADERS.items() if k != name}
    base = coalescing_key("sk-1", body, HEADERS)
    assert coalescing_key("sk-1", body, changed) != base
    assert coalescing_key("sk-1", body, missing) != base


def test_other_headers_are_not_in_the_key() -> None:
    """Identical retries differ in nothing, but unrelated headers must not split sharing."""
    body = {"model": "m", "messages": []}
    noisy = {**HEADERS, "user-agent": "claude-cli/2", "x-stainless-timeout": "300"}
    assert coalescing_key("sk-1", body, noisy) == coalescing_key("sk-1", body, HEADERS)


def test_key_includes_the_forwarded_query_string() -> None:
    body = {"model": "m", "messages": []}
    assert coalescing_key("id", body, {}, query="beta=true") != coalescing_key("id", body, {})
    assert coalescing_key("id", body, {}, query="beta=true") == coalescing_key(
        "id", body, {}, query="beta=true"
    )
