"""Qwen streams from Alibaba Cloud Model Studio (DashScope, OpenAI-compatible mode), as
documented, through the balancer.

Sources: https://www.alibabacloud.com/help/en/model-studio/deep-thinking (``reasoning_content``
before ``content``; ``stream_options.include_usage`` puts usage in the last chunk, whose
``choices`` is empty), https://www.alibabacloud.com/help/en/model-studio/qwen-function-calling
(streamed tool calls: later fragments repeat ``"id": ""`` and ``"type": "function"``),
https://www.alibabacloud.com/help/en/model-studio/context-cache
(``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_reasoning_and_a_tool_call_whose_fragments_repeat_an_empty_id(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "qwen_thinking_tool.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "Check the logs first."),
        ("tool_use", ("Grep", {"pattern": "ERROR", "path": "logs/"})),
    ]
    assert replay.message.content[1].id == "call_8f08d2b0golden"
    assert usage(replay.message) == (176, 0, 1024, 40)
