"""OpenRouter streams, as OpenRouter documents them, through the balancer.

Sources: https://openrouter.ai/docs/api-reference/streaming (``: OPENROUTER PROCESSING``
comment lines keep the connection alive), https://openrouter.ai/docs/use-cases/reasoning-tokens
(``delta.reasoning`` plus structured ``reasoning_details``; a signature-only detail),
https://openrouter.ai/docs/use-cases/usage-accounting (usage always in the last chunk, with
``cost``, ``prompt_tokens_details.cached_tokens`` and ``cache_write_tokens``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_claude_through_openrouter_with_cache_reads_and_writes(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "openrouter_reasoning_cache.sse",
        balancer_factory,
        recorded_openai_upstream,
        upstream_model="anthropic/claude-sonnet-4.5",
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:text", "text_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [("thinking", "The tests look fine."), ("text", "All 42 tests pass.")]
    assert replay.message.stop_reason == "end_turn"
    # 5,000 prompt tokens: 4,000 read from the cache, 600 written to it, 400 fresh
    assert usage(replay.message) == (400, 600, 4000, 35)
