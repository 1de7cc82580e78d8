"""DeepSeek streams, as DeepSeek documents them, through the balancer.

Sources: https://api-docs.deepseek.com/guides/thinking_mode (``reasoning_content`` deltas
before ``content``, tool calls in thinking mode), https://api-docs.deepseek.com/guides/kv_cache
(``usage.prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``; the hit tokens are part of
``prompt_tokens``), https://api-docs.deepseek.com/api/create-chat-completion (the chunk object;
usage on the last chunk).
"""

from __future__ import annotations

import pytest

from ccbalancer.dialects.base import SYNTHETIC_SIGNATURE_PREFIX
from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_reasoning_text_and_a_tool_call_with_cache_hits(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "deepseek_reasoning_tool.sse",
        balancer_factory,
        recorded_openai_upstream,
        provider_extra=", reasoning_history: true",
        upstream_model="deepseek-reasoner",
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:text", "text_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "The user wants the tests run."),
        ("text", "Running them now."),
        ("tool_use", ("Bash", {"command": "pytest -q", "description": "run tests"})),
    ]
    assert replay.message.content[0].signature.startswith(SYNTHETIC_SIGNATURE_PREFIX)
    assert replay.message.content[2].id == "call_00_dsGolden7Hq"
    assert replay.message.stop_reason == "tool_use"
    assert usage(replay.message) == (256, 0, 3840, 88)
