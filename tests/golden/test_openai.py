"""OpenAI Chat Completions streams, as OpenAI documents them, through the balancer.

Source of the chunk format: https://platform.openai.com/docs/api-reference/chat-streaming
(the chunk object: ``usage: null`` on every chunk when ``stream_options.include_usage`` is
set, then one chunk with ``choices: []`` and the usage), function calling in streams:
https://platform.openai.com/docs/guides/function-calling#streaming (``index``, id and name on
the first fragment, argument fragments after), refusals: https://platform.openai.com/docs/guides/structured-outputs#refusals
(``delta.refusal``), cached tokens: https://platform.openai.com/docs/guides/prompt-caching
(``usage.prompt_tokens_details.cached_tokens``, part of ``prompt_tokens``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import expected_estimate, replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_text_then_parallel_tool_calls_with_cached_prompt(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "openai_parallel_tools.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:text", "text_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("text", "I'll read both files."),
        ("tool_use", ("Read", {"file_path": "/src/app.py"})),
        ("tool_use", ("Read", {"file_path": "/src/test_app.py"})),
    ]
    assert [b.id for b in replay.message.content[1:]] == [
        "call_Ghd7Kp1golden",
        "call_Z9q2Mx2golden",
    ]
    assert replay.message.stop_reason == "tool_use"
    # Anthropic's input_tokens excludes the cache: 2048 prompt tokens, 1920 of them cached
    assert usage(replay.message) == (128, 0, 1920, 57)
    assert replay.start_usage.input_tokens == expected_estimate() > 0
    assert replay.sent["stream_options"] == {"include_usage": True}
    assert replay.sent["model"] == "upstream-model"


async def test_a_streamed_refusal_reads_as_text(balancer_factory, recorded_openai_upstream):
    replay = await replay_openai("openai_refusal.sse", balancer_factory, recorded_openai_upstream)

    assert replay.blocks() == [("text", "I'm sorry, I can't help with that.")]
    assert replay.message.stop_reason == "end_turn"
    assert usage(replay.message) == (31, 0, 0, 9)
