"""vLLM, Ollama and llama.cpp streams, as their projects document them, through the balancer.

Sources: https://docs.vllm.ai/en/latest/features/reasoning_outputs.html (``delta.reasoning``,
``reasoning_content`` in older releases), https://docs.vllm.ai/en/latest/features/tool_calling.html
(``chatcmpl-tool-…`` ids; a call without arguments), https://docs.ollama.com/api/openai-compatibility
(Ollama's OpenAI endpoint: ``reasoning`` deltas, tool calls whole, usage with
``stream_options``), https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md
(llama.cpp's server; its streamed tool calls may come without ``id``).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_openai, usage

pytestmark = pytest.mark.e2e


async def test_vllm_reasoning_and_a_call_without_arguments(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai(
        "vllm_reasoning_noarg_tool.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.blocks() == [("thinking", "List the directory."), ("tool_use", ("LS", {}))]
    assert replay.message.content[1].id == "chatcmpl-tool-golden4e2a9c"
    assert replay.message.stop_reason == "tool_use"
    assert usage(replay.message) == (44, 0, 256, 18)


async def test_ollama_reasoning_and_a_whole_tool_call(balancer_factory, recorded_openai_upstream):
    replay = await replay_openai(
        "ollama_reasoning_tool.sse", balancer_factory, recorded_openai_upstream
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:tool_use", "input_json_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert replay.blocks() == [
        ("thinking", "Check git status."),
        ("tool_use", ("Bash", {"command": "git status"})),
    ]
    assert usage(replay.message) == (180, 0, 0, 25)


async def test_llamacpp_calls_without_ids_get_distinct_ids(
    balancer_factory, recorded_openai_upstream
):
    replay = await replay_openai("llamacpp_no_ids.sse", balancer_factory, recorded_openai_upstream)

    assert replay.blocks() == [
        ("tool_use", ("TodoRead", {})),
        ("tool_use", ("Glob", {"pattern": "*.py"})),
    ]
    first, second = (block.id for block in replay.message.content)
    assert first.startswith("toolu_") and second.startswith("toolu_") and first != second
    assert usage(replay.message) == (150, 0, 0, 30)
