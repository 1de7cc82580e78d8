"""The bench's request bodies (sans-IO): the Claude Code-sized context of ``bigbody`` and the
lazy sequence that keeps a thousand of them from being held at once."""

from __future__ import annotations

from itertools import pairwise

import orjson
import pytest

from ccbalancer.bench.scenarios import FULL, Bodies, body
from ccbalancer.mock.dialect import last_user_text


def test_a_context_body_is_claude_code_sized_and_shaped_with_the_directive_last():
    raw = body("nonce-1", 5, 0.0, stream=False, context=300_000)
    assert 300_000 <= len(raw) < 330_000
    request = orjson.loads(raw)
    assert len(request["tools"]) == 12 and request["system"][1]["cache_control"]
    roles = [m["role"] for m in request["messages"]]
    assert roles[-1] == "user" and roles[-2] == "assistant"
    assert all(a != b for a, b in pairwise(roles))  # turns alternate
    last = request["messages"][-1]["content"]
    assert last[0]["type"] == "tool_result"
    assert last[0]["tool_use_id"] == request["messages"][-2]["content"][-1]["id"]
    assert "nonce-1 <<mock " in last_user_text(request)  # where the mock reads its script


def test_bodies_differ_only_in_their_prompt_and_are_made_when_asked():
    made: list[int] = []

    def make(i: int) -> bytes:
        made.append(i)
        return body(f"n-{i}", 5, 0.0, stream=False, context=300_000)

    bodies = Bodies(1000, make)
    assert len(bodies) == 1000 and made == []
    first, second = bodies[0], bodies[1]
    assert made == [0, 1]
    assert first != second and len(first) == len(second)
    assert first.replace(b"bench n-0 ", b"bench n-1 ") == second
    assert bodies[-1] == make(999)
    with pytest.raises(IndexError):
        bodies[1000]


def test_bigbody_is_a_full_scenario_with_a_context():
    scenario = FULL["bigbody"]
    assert (scenario.kind, scenario.context) == ("whole", 300_000)
