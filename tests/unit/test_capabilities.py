"""What a provider cannot take, per type and declared capabilities (issue 15, items 4-5)."""

from __future__ import annotations

from typing import Any

import pytest

from ccbalancer.config import parse_config
from ccbalancer.dialects.capabilities import (
    DEFAULT_CAPABILITIES,
    Capabilities,
    refused,
    request_needs,
)
from ccbalancer.errors import ConfigError

PNG = {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}
PDF = {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}
OPENAI = DEFAULT_CAPABILITIES["openai"]
ANTHROPIC = DEFAULT_CAPABILITIES["anthropic"]


def _body(*blocks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": list(blocks)}], **fields}


def _refused(body: dict[str, Any], kind: str, caps: Capabilities) -> list[str]:
    return refused(request_needs(body), kind, caps)


def _result(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": "t", "content": list(content)}


def test_plain_claude_code_turns_need_nothing_special() -> None:
    body = _body(
        {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
        _result({"type": "text", "text": "ok"}),
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
    )
    assert request_needs(body) == frozenset()


@pytest.mark.parametrize(
    ("blocks", "fields", "openai", "anthropic"),
    [
        pytest.param([{"type": "image", "source": PNG}], {}, [], [], id="image"),
        pytest.param([_result({"type": "image", "source": PNG})], {}, [], [], id="image-in-result"),
        pytest.param([{"type": "document", "source": PDF}], {}, ["document"], [], id="pdf"),
        pytest.param(
            [{"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}],
            {},
            ["document"],
            [],
            id="pdf-by-url",
        ),
        pytest.param(
            [{"type": "document", "source": {"type": "text", "data": "notes"}}],
            {},
            [],
            [],
            id="text-document",
        ),
        pytest.param(
            [],
            {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            ["tool web_search_20250305"],
            [],
            id="web-search-tool",
        ),
        pytest.param(
            [{"type": "server_tool_use", "id": "s", "name": "web_fetch", "input": {}}],
            {},
            ["server_tool_use"],
            [],
            id="server-tool-use-history",
        ),
        pytest.param(
            [{"type": "code_execution_tool_result", "tool_use_id": "s", "content": {}}],
            {},
            ["code_execution_tool_result"],
            [],
            id="server-tool-result-history",
        ),
        pytest.param(
            [{"type": "container_upload", "file_id": "f"}],
            {},
            ["container_upload"],
            [],
            id="upload",
        ),
        pytest.param(
            [_result({"type": "tool_reference", "tool_name": "Grep"})], {}, [], [], id="reference"
        ),
        pytest.param([], {"mcp_servers": [{"type": "url"}]}, ["mcp_servers"], [], id="mcp"),
        pytest.param([{"type": "hologram_2031"}], {}, ["hologram_2031"], [], id="unknown"),
    ],
)
def test_what_each_type_cannot_take_by_default(
    blocks: list[dict[str, Any]], fields: dict[str, Any], openai: list[str], anthropic: list[str]
) -> None:
    body = _body(*blocks, **fields)
    assert _refused(body, "openai", OPENAI) == openai
    assert _refused(body, "anthropic", ANTHROPIC) == anthropic


def test_declared_capabilities_narrow_what_a_provider_takes() -> None:
    body = _body(
        {"type": "image", "source": PNG},
        {"type": "document", "source": PDF},
        {"type": "server_tool_use", "id": "s", "name": "bash_code_execution", "input": {}},
        _result({"type": "tool_reference", "tool_name": "Grep"}),
        tools=[
            {"type": "web_search_20250305", "name": "web_search"},
            {"type": "web_fetch_20250910", "name": "web_fetch"},
        ],
    )
    relay = Capabilities(images=False, files=False, server_tools=("web_*",))
    assert _refused(body, "anthropic", relay) == [
        "document",
        "image",
        "server_tool_use",  # code_execution is not in the list
        "tool_reference",  # nor is tool search
    ]
    everything = Capabilities(server_tools=("web_*", "code_execution", "tool_search"))
    assert _refused(body, "anthropic", everything) == []
    # an OpenAI provider that takes files still cannot run server tools
    openai_files = Capabilities(files=True, server_tools=False)
    assert _refused(body, "openai", openai_files) == [
        "server_tool_use",
        "tool web_fetch_20250910",
        "tool web_search_20250305",
    ]


def _config(extra: str, kind: str = "openai") -> Any:
    text = (
        "providers:\n"
        f"  - {{name: p, type: {kind}, base_url: 'http://127.0.0.1:1'{extra}}}\n"
        "model_routes: {'*': [{provider: p}]}\n"
    )
    return parse_config(text, "providers.yaml").providers[0]


def test_config_defaults_per_type_and_overrides() -> None:
    assert _config("").accepts == Capabilities(files=False, server_tools=False)
    assert _config("", "anthropic").accepts == Capabilities()
    assert _config(", capabilities: {files: true}").accepts.files is True
    relay = _config(", capabilities: {server_tools: [web_search], thinking: false}", "anthropic")
    assert relay.accepts == Capabilities(server_tools=("web_search",), thinking=False)
    assert relay.body_options.thinking is False


@pytest.mark.parametrize(
    ("extra", "kind", "reason"),
    [
        (", capabilities: {server_tools: true}", "openai", "cannot run Anthropic server tools"),
        (", betas: {drop: [x]}", "openai", "betas applies to type: anthropic providers only"),
        (", strip_billing_header: true", "openai", "applies to type: anthropic providers only"),
        (", prompt_cache_key: true", "anthropic", "applies to type: openai providers only"),
        (", cache_control: true", "anthropic", "applies to type: openai providers only"),
        (", betas: {drop: [a], allow: [b]}", "anthropic", "either drop or allow"),
        (", capabilities: {pdf: true}", "openai", "capabilities.pdf: unknown key"),
    ],
)
def test_misplaced_provider_keys_are_config_errors(extra: str, kind: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(extra, kind)
    assert "providers[0]" in str(caught.value)
    assert reason in str(caught.value)
