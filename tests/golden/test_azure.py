"""Azure OpenAI streams, as Microsoft documents them, through the balancer.

Source: https://learn.microsoft.com/en-us/azure/ai-services/openai/concepts/content-streaming
(the first chunk carries only ``prompt_filter_results`` with empty ``id``/``model`` and
``choices: []``; content chunks carry ``content_filter_results``; with the asynchronous filter
an annotation chunk with ``content_filter_offsets`` and no ``delta`` may follow the finish) and
https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/prompt-caching
(``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_filter_results_and_late_annotations_do_not_disturb_the_answer(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "azure_content_filter.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start", "start:text", "text_delta", "stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [("text", "The build passes.")]
    assert replay.message.stop_reason == "end_turn"
    assert usage(replay.message) == (256, 0, 1280, 4)
    # the prompt-filter chunk has an empty id: the message still gets a usable one
    assert replay.message.id.startswith("msg_") and len(replay.message.id) > len("msg_")
