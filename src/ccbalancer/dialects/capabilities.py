"""What a request needs from a provider, and what a provider cannot take (issue 15, items 4-5).

A request may hold content that only some providers can serve: images, PDF documents,
Anthropic's server tools (``web_search``, ``web_fetch``, ``code_execution``, tool search, the MCP
connector) and the history blocks they leave (``server_tool_use``, ``*_tool_result``,
``container_upload``, ``mcp_tool_use``), or block types newer than this code. Sending such a
request to a provider that drops or rejects them gives the user a silently wrong answer or an
error, so the relay asks ``refused`` per candidate and skips those that cannot take it.

``refused`` answers *after* the translation the provider's dialect can do: an ``openai``
provider takes images (as ``image_url`` parts), base64 PDFs when it accepts files (as OpenAI
``file`` parts), plain-text documents (as text) and ``tool_reference`` blocks (as text: an
OpenAI provider gets every tool inline anyway); never server tools or unknown blocks, which
have no OpenAI form. An ``anthropic`` provider takes everything its ``Capabilities`` allow,
including block types this code does not know. The OpenAI request converter asks the same
question, so it can never drop a block silently. Sans-IO.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One provider's abilities. ``server_tools``: all, none, or glob patterns of the tool
    families it runs (``web_search``, ``web_fetch``, ``code_execution``, ``tool_search``,
    ``mcp``, and Anthropic-defined client tools by type: ``bash``, ``text_editor``, …)."""

    images: bool = True
    files: bool = True  # PDF documents
    server_tools: bool | tuple[str, ...] = True
    thinking: bool = True  # False: the provider is sent no thinking request

    def runs(self, family: str) -> bool:
        if isinstance(self.server_tools, bool):
            return self.server_tools
        return any(fnmatch.fnmatchcase(family, pattern) for pattern in self.server_tools)


DEFAULT_CAPABILITIES = {
    "anthropic": Capabilities(),
    "openai": Capabilities(files=False, server_tools=False),
}

# What a need is about: an image, a PDF the OpenAI converter can send as a file part, a
# document it cannot (URL, Files API id, mixed content), a server tool, a tool search result
# (``tool_reference``: text for OpenAI, Anthropic's tool search otherwise), an unknown block.
IMAGE, FILE, FOREIGN_FILE, SERVER_TOOL, REFERENCE, UNKNOWN = (
    "image", "file", "foreign_file", "tool", "reference", "?"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Need:
    label: str  # what the client is told: a block type, "tool <type>", a body field
    kind: str
    family: str = ""  # SERVER_TOOL: the tool family


# Block types the OpenAI converter translates; anything else in a message is UNKNOWN to it.
_TRANSLATED = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
# Server-side tool names -> the family a provider declares.
_FAMILIES = {
    "bash_code_execution": "code_execution",
    "text_editor_code_execution": "code_execution",
    "tool_search_tool_regex": "tool_search",
    "tool_search_tool_bm25": "tool_search",
    "mcp_toolset": "mcp",
    "mcp_tool": "mcp",
    "container_upload": "code_execution",
}
_DATED = re.compile(r"_\d{8}$")  # web_search_20250305 -> web_search


def _family(name: str) -> str:
    name = _DATED.sub("", name)
    return _FAMILIES.get(name, name)


def request_needs(body: dict[str, Any]) -> frozenset[Need]:
    """Everything in ``body`` that some provider may not take (scanned once per request)."""
    needs: set[Need] = set()
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind != "custom":
            needs.add(Need(f"tool {kind}", SERVER_TOOL, _family(kind)))
    if body.get("mcp_servers"):
        needs.add(Need("mcp_servers", SERVER_TOOL, "mcp"))
    if body.get("container"):
        needs.add(Need("container", SERVER_TOOL, "code_execution"))
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            _blocks(content, needs)
    return frozenset(needs)


def _blocks(blocks: Iterable[Any], needs: set[Need]) -> None:
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "image":
            source = block.get("source")
            file_id = isinstance(source, dict) and source.get("type") == "file"
            needs.add(Need("image", FOREIGN_FILE if file_id else IMAGE))
        elif kind == "document":
            need = _document(block)
            if need is not None:
                needs.add(need)
        elif kind == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                _blocks(content, needs)
        elif kind in ("server_tool_use", "mcp_tool_use"):
            name = block.get("name") if kind == "server_tool_use" else "mcp_tool"
            needs.add(Need(kind, SERVER_TOOL, _family(str(name))))
        elif isinstance(kind, str) and kind.endswith("_tool_result"):
            needs.add(Need(kind, SERVER_TOOL, _family(kind.removesuffix("_tool_result"))))
        elif kind == "container_upload":
            needs.add(Need(kind, SERVER_TOOL, _family(kind)))
        elif kind == "tool_reference":
            needs.add(Need(kind, REFERENCE, "tool_search"))
        elif isinstance(kind, str) and kind not in _TRANSLATED:
            needs.add(Need(kind, UNKNOWN))  # (a block without a type says nothing at all)


def _document(block: dict[str, Any]) -> Need | None:
    """None for documents any provider can read as text (text source, text-only content)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text":
        return None
    if kind == "content":
        content = source.get("content") if isinstance(source, dict) else None
        if isinstance(content, str) or (
            isinstance(content, list)
            and all(isinstance(b, dict) and b.get("type") == "text" for b in content)
        ):
            return None
    if kind == "base64":
        return Need("document", FILE)
    return Need("document", FOREIGN_FILE)


def refused(needs: frozenset[Need], provider_type: str, capabilities: Capabilities) -> list[str]:
    """Sorted labels of what a provider of ``provider_type`` with ``capabilities`` cannot
    take, after its dialect's translation; empty when it can serve the request."""
    openai = provider_type == "openai"
    out: set[str] = set()
    for need in needs:
        if need.kind == IMAGE:
            ok = capabilities.images
        elif need.kind == FILE:
            ok = capabilities.files
        elif need.kind == FOREIGN_FILE:
            ok = not openai and (
                capabilities.images if need.label == "image" else capabilities.files
            )
        elif need.kind == SERVER_TOOL:
            ok = not openai and capabilities.runs(need.family)
        elif need.kind == REFERENCE:
            ok = openai or capabilities.runs(need.family)
        else:
            ok = not openai
        if not ok:
            out.add(need.label)
    return sorted(out)
