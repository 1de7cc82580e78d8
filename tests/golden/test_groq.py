"""Groq streams, as Groq documents them, through the balancer.

Sources: https://console.groq.com/docs/api-reference#chat-create (the chunk object; Groq's
``x_groq`` object carries the request id on the first chunk and the ``usage`` on the last),
https://console.groq.com/docs/reasoning (``delta.reasoning`` for gpt-oss and other reasoning
models), https://console.groq.com/docs/tool-use (tool calls arrive whole).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_reasoning_a_tool_call_and_usage_only_in_x_groq(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "groq_reasoning_tool.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "Need the weather tool."),
        ("tool_use", ("weather", {"location": "Florence, Italy"})),
    ]
    assert replay.message.stop_reason == "tool_use"
    assert usage(replay.message) == (99, 0, 0, 21)
