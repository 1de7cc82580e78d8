"""Anthropic streams with thinking, server tools and the MCP connector, passed through.

Sources: https://docs.claude.com/en/api/messages-streaming (event grammar, thinking with
``signature_delta``), https://docs.claude.com/en/docs/agents-and-tools/tool-use/web-search-tool
(``server_tool_use`` with streamed input, ``web_search_tool_result``, ``citations_delta`` with
``web_search_result_location``, ``usage.server_tool_use.web_search_requests``),
https://docs.claude.com/en/docs/agents-and-tools/mcp-connector (``mcp_tool_use`` /
``mcp_tool_result`` blocks, the ``mcp_servers`` request field, beta ``mcp-client-2025-04-04``),
https://docs.claude.com/en/docs/build-with-claude/prompt-caching (cache read and creation
counts).
"""

from __future__ import annotations

import pytest

from tests.golden.replay import replay_anthropic, usage

pytestmark = pytest.mark.e2e

WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
MCP_SERVER = {"type": "url", "url": "https://mcp.example.com/sse", "name": "example-mcp"}


async def test_thinking_web_search_and_citations_pass_through(balancer_factory, recorded_upstream):
    replay = await replay_anthropic(
        "anthropic_thinking_web_search.sse",
        balancer_factory,
        recorded_upstream,
        tools=[WEB_SEARCH],
        thinking={"type": "enabled", "budget_tokens": 1024},
        max_tokens=2048,
    )

    assert replay.shape == [
        "message_start",
        "start:thinking", "thinking_delta", "signature_delta", "stop",
        "start:server_tool_use", "input_json_delta", "stop",
        "start:web_search_tool_result", "stop",
        "start:text", "text_delta", "citations_delta", "text_delta", "stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    message = replay.message
    assert replay.blocks() == [
        ("thinking", "I should search for the release date."),
        ("server_tool_use", ("web_search", {"query": "python 3.14 release date"})),
        ("web_search_tool_result", None),
        ("text", "Python 3.14 was released on 7 October 2025."),
    ]
    assert message.content[0].signature == "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxbgoldenSig"
    assert message.content[2].content[0].url == "https://peps.python.org/pep-0745/"
    assert message.content[3].citations[0].cited_text == "3.14.0 final: Tuesday, 2025-10-07"
    assert message.stop_reason == "end_turn"
    assert usage(message) == (2679, 3, 10240, 510)
    assert message.usage.server_tool_use.web_search_requests == 1


async def test_mcp_connector_blocks_pass_through(balancer_factory, recorded_upstream):
    replay = await replay_anthropic(
        "anthropic_mcp_connector.sse",
        balancer_factory,
        recorded_upstream,
        mcp_servers=[MCP_SERVER],
        betas=["mcp-client-2025-04-04"],
    )

    assert replay.blocks() == [
        ("text", "I'll echo it."),
        ("mcp_tool_use", ("echo", {"param1": "hello"})),
        ("mcp_tool_result", None),
        ("text", "The server echoed: hello"),
    ]
    assert replay.message.content[1].server_name == "example-mcp"
    assert replay.message.content[2].content[0].text == "hello"
    assert usage(replay.message) == (512, 0, 0, 64)
