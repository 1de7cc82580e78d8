"""xAI (Grok) streams, as xAI documents them, through the balancer.

Sources: https://docs.x.ai/docs/guides/reasoning (``reasoning_content`` deltas from
grok-3-mini, ``completion_tokens_details.reasoning_tokens``), https://docs.x.ai/docs/guides/streaming-response
(chunks without ``finish_reason`` until the end, the usage chunk with ``choices: []``),
https://docs.x.ai/docs/guides/function-calling (a tool call arrives whole),
https://docs.x.ai/docs/models#cached-prompt-tokens (``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_reasoning_then_text_then_a_whole_tool_call(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "xai_reasoning_tool.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:text", "text_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "Two files changed."),
        ("text", "Two files changed."),
        ("tool_use", ("Bash", {"command": "git diff --stat"})),
    ]
    assert replay.message.stop_reason == "tool_use"
    assert usage(replay.message) == (132, 0, 768, 60)
