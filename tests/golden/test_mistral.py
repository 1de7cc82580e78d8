"""Mistral streams, as Mistral documents them, through the balancer.

Sources: https://docs.mistral.ai/capabilities/reasoning/ (reasoning models answer with
``content`` as a list of chunks: ``{"type": "thinking", "thinking": [{"type": "text", …}]}``
then text; while streaming, thinking arrives as chunk lists and the answer as text chunks or
plain strings — the ``reasoning_with_streaming.py`` example of mistralai/client-python shows
both), https://docs.mistral.ai/capabilities/function_calling/ (a tool call arrives whole, with
a nine-character id, ``finish_reason: "tool_calls"``), usage on the last chunk.
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_thinking_chunks_and_text_chunks_keep_every_digit(
    balancer_factory, recorded_openai_upstream
):
    """The answer "391" arrived as a text part "3" and a string "91": before issue 15 the
    part was dropped (the user read "91") and the thinking was lost."""
    replay = await replay_openai(
        "mistral_thinking_parts.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:text", "text_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [("thinking", "300 plus 91 is 391."), ("text", "391")]
    assert replay.message.stop_reason == "end_turn"
    assert usage(replay.message) == (84, 0, 128, 31)


async def test_a_whole_tool_call(balancer_factory, recorded_openai_upstream):
    replay = await replay_openai(
        "mistral_tool_call.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.blocks() == [("tool_use", ("Glob", {"pattern": "**/*.md"}))]
    assert replay.message.content[0].id == "D681PevKs"
    assert replay.message.stop_reason == "tool_use"
    assert usage(replay.message) == (640, 0, 0, 24)
