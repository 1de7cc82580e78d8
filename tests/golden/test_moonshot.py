"""Moonshot (Kimi) streams, as Moonshot documents them, through the balancer.

Sources: https://platform.moonshot.ai/docs/api/chat (streaming: the last chunk carries
``usage`` inside ``choices[0]``), https://platform.moonshot.ai/docs/api/caching and
https://platform.moonshot.ai/docs/pricing/chat (``usage.cached_tokens``, part of
``prompt_tokens``), https://platform.moonshot.ai/docs/guide/use-kimi-k2-thinking-model
(``reasoning_content``; tool call ids shaped ``functions.<name>:<index>``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_reasoning_two_tool_calls_and_cached_tokens_in_the_choice(
    balancer_factory, recorded_openai_upstream
):
    """Before issue 15 the 7,680 cached tokens were reported as fresh input."""
    replay = await replay_openai(
        "moonshot_tools_cached.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "Read both configs."),
        ("tool_use", ("Read", {"file_path": "/etc/a.toml"})),
        ("tool_use", ("Read", {"file_path": "/etc/b.toml"})),
    ]
    assert [b.id for b in replay.message.content[1:]] == ["functions.Read:0", "functions.Read:1"]
    assert usage(replay.message) == (320, 0, 7680, 52)
