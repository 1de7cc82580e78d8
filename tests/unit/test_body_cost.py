"""What a request body costs in memory, without sockets: the budget's arithmetic, and the
estimate ``proxy.body`` reserves before parsing checked against tracemalloc."""

from __future__ import annotations

import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccbalancer.budget import BodyBudget
from ccbalancer.proxy.body import estimated_cost, measured_cost

N = 50_000
SHAPES: dict[str, bytes] = {
    "empty_objects": b"[" + b",".join([b"{}"] * N) + b"]",
    "empty_arrays": b"[" + b",".join([b"[]"] * N) + b"]",
    "nested_arrays": orjson.dumps([[[[[]]]]] * (N // 5)),
    "numbers": b"[" + b",".join([b"1000"] * N) + b"]",
    "floats": b"[" + b",".join([b"1.5"] * N) + b"]",
    "short_strings": b"[" + b",".join([b'"a"'] * N) + b"]",
    "small_objects": b"[" + b",".join([b'{"a":1000}'] * N) + b"]",
    "wide_object": orjson.dumps({f"k{i}": i + 1000 for i in range(N)}),
    "ascii_text": orjson.dumps({"messages": [{"role": "user", "content": "abc " * 50_000}]}),
    "bmp_text": orjson.dumps({"messages": [{"role": "user", "content": "中文─" * 30_000}]}),
    "astral_text": orjson.dumps({"messages": [{"role": "user", "content": "ab 😀" * 30_000}]}),
    "claude_code_like": orjson.dumps(
        {
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "You are Claude Code. " * 500}],
            "tools": [
                {
                    "name": f"tool{i}",
                    "description": "does things " * 40,
                    "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                }
                for i in range(30)
            ],
            "messages": [
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": [
                        {"type": "text", "text": f"def f{i}(x):\n    return x + {i}\n" * 20}
                    ],
                }
                for i in range(200)
            ],
        }
    ),
}


def _allocated(raw: bytes) -> tuple[int, Any]:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = orjson.loads(raw)
        return tracemalloc.get_traced_memory()[0] - before, value
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_estimate_bounds_what_parsing_allocates(name: str) -> None:
    raw = SHAPES[name]
    real, value = _allocated(raw)
    estimate = estimated_cost(raw)
    assert real <= estimate, f"{name}: parsing took {real}, estimated {estimate}"
    measured = measured_cost(value, max_nodes=10**7)
    assert measured is not None and real <= measured * 1.05, f"{name}: {real} > {measured}"


def test_dense_bodies_are_estimated_closely_and_text_is_measured() -> None:
    """Structure-dense bodies (the amplification attack) keep their estimate, which is
    within 2x of the truth; a Claude Code body is walked and held at what it costs."""
    for name in ("empty_objects", "small_objects", "numbers", "nested_arrays"):
        real, _ = _allocated(SHAPES[name])
        assert estimated_cost(SHAPES[name]) < 2 * real, name
    raw = SHAPES["claude_code_like"]
    real, value = _allocated(raw)
    measured = measured_cost(value)
    assert measured is not None and measured < 1.5 * real


def test_a_walk_stops_at_its_node_limit() -> None:
    assert measured_cost(list(range(100)), max_nodes=50) is None
    assert measured_cost(list(range(100)), max_nodes=101) is not None
    deep: Any = "x"
    for _ in range(100_000):  # deeper than Python's recursion limit: the walk is iterative
        deep = [deep]
    assert measured_cost(deep, max_nodes=10**6) is not None


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000)), max_size=30))
def test_leases_never_hold_more_than_the_limit_and_give_everything_back(
    sizes: list[tuple[int, int]],
) -> None:
    budget = BodyBudget()
    limit = 3000
    leases = []
    for first, second in sizes:
        lease = budget.lease()
        if lease.resize(first, limit):
            lease.resize(second, limit)  # growing may be refused; shrinking never is
        assert budget.used <= limit
        leases.append(lease)
    assert budget.used == sum(lease.size for lease in leases)
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert budget.used == 0
    assert not leases or not leases[0].resize(1, limit)  # a released lease holds nothing


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_the_estimate_counts_every_structural_byte_of_any_body(raw: bytes) -> None:
    """The one-pass count (delete the rest, count what is left) is the per-character count."""
    width = 1 if raw.isascii() else 4 if any(0xF0 <= b <= 0xF4 for b in raw) else 2
    costs = {b"{": 72, b"[": 64, b":": 120, b'"': 26, b",": 36}
    expected = width * len(raw) + sum(raw.count(char) * cost for char, cost in costs.items())
    assert estimated_cost(raw) == expected
    assert estimated_cost(bytearray(raw)) == expected
