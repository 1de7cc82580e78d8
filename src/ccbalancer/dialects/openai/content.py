"""User-side content -> OpenAI chat messages: text, images, documents, tool results.

One Anthropic user message becomes its tool results as ``tool`` messages (OpenAI wants them
right after the assistant's ``tool_calls``), then one ``user`` message with the rest. What a
``tool`` message cannot carry (images, PDF files) follows in that user message, with a short
placeholder in the tool message so the model knows where it came from (PROTOCOL.md c.1).

Every block reaching this module has a translation: ``capabilities.refused`` was asked first
(``request.to_openai_request``), so nothing is dropped here except malformed blocks. PDFs become
OpenAI ``file`` parts (``{"type": "file", "file": {"filename", "file_data": "data:…"}}``, the
chat-completions content part for files) when the provider accepts files; plain-text
documents become text; Anthropic's ``tool_reference`` becomes a line naming the tool, since an
OpenAI provider is sent every tool inline anyway. ``Content.keep_cache`` keeps
``cache_control`` markers on text parts for relays that accept them (OpenRouter and the like).
Sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Text blocks of one message become one string: simple servers reject content arrays, and a
# blank line keeps Claude Code's <system-reminder> block visibly apart from the prompt.
JOIN = "\n\n"
_MOVED_PLACEHOLDER = "(the tool returned {what}; it follows in the next message)"
_DEFAULT_FILENAME = "document.pdf"

Part = dict[str, Any]


class Content:
    """Converts user content for one request (``keep_cache``: keep ``cache_control``)."""

    __slots__ = ("keep_cache",)

    def __init__(self, keep_cache: bool = False) -> None:
        self.keep_cache = keep_cache

    def text_part(self, text: str, block: dict[str, Any]) -> Part:
        part: Part = {"type": "text", "text": text}
        marker = block.get("cache_control")
        if self.keep_cache and isinstance(marker, dict):
            part["cache_control"] = marker
        return part

    def joined(self, parts: list[Part]) -> str | list[Part]:
        """One string when nothing but unmarked text; else the parts themselves."""
        if all(p["type"] == "text" and "cache_control" not in p for p in parts):
            return JOIN.join(p["text"] for p in parts)
        return parts

    def user(self, content: object) -> list[dict[str, Any]]:
        """One user message -> its tool results as ``tool`` messages, then one user message."""
        if isinstance(content, str):
            return [{"role": "user", "content": content}]
        if not isinstance(content, list):
            return []
        out: list[dict[str, Any]] = []
        moved: list[Part] = []
        parts: list[Part] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_result":
                out.append(self._tool_message(block, moved))
            else:
                parts.extend(self._parts(block))
        # `tool` messages cannot carry images or files: those follow as user content.
        parts = moved + parts
        if parts:
            out.append({"role": "user", "content": self.joined(parts)})
        return out

    def _parts(self, block: dict[str, Any]) -> list[Part]:
        kind = block.get("type")
        if kind == "text":
            text = block.get("text")
            return [self.text_part(text, block)] if isinstance(text, str) and text else []
        if kind == "image":
            image = image_part(block)
            return [image] if image is not None else []
        if kind == "document":
            return _document_parts(block, self.text_part)
        if kind == "tool_reference":
            name = block.get("tool_name")
            return [self.text_part(f"Tool loaded: {name}", block)] if isinstance(name, str) else []
        return []  # thinking and the like in a user turn: nothing a model reads

    def _tool_message(self, block: dict[str, Any], moved: list[Part]) -> dict[str, Any]:
        content = block.get("content")
        texts: list[str] = []
        carried: list[str] = []
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            for part in self._parts(item):
                if part["type"] == "text":
                    texts.append(part["text"])
                else:
                    moved.append(part)
                    carried.append("an image" if part["type"] == "image_url" else "a file")
        text = JOIN.join(t for t in texts if t)
        if not text and carried:
            text = _MOVED_PLACEHOLDER.format(what=" and ".join(dict.fromkeys(carried)))
        if block.get("is_error") is True:
            # OpenAI has no error flag on tool messages; the model must still learn it failed.
            text = "Error: " + text
        tool_use_id = block.get("tool_use_id")
        message: dict[str, Any] = {
            "role": "tool",
            "tool_call_id": tool_use_id if isinstance(tool_use_id, str) else "",
            "content": text,
        }
        if self.keep_cache and isinstance(block.get("cache_control"), dict):
            message["content"] = [self.text_part(text, block)]
        return message


def image_part(block: dict[str, Any]) -> Part | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return None
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        data = source.get("data")
        if isinstance(media_type, str) and isinstance(data, str):
            return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    elif kind == "url":
        url = source.get("url")
        if isinstance(url, str) and url:
            return {"type": "image_url", "image_url": {"url": url}}
    return None


def _document_parts(
    block: dict[str, Any], text_part: Callable[[str, dict[str, Any]], Part]
) -> list[Part]:
    source = block.get("source")
    if not isinstance(source, dict):
        return []
    kind = source.get("type")
    if kind == "text" and isinstance(source.get("data"), str) and source["data"]:
        return [text_part(source["data"], block)]
    if kind == "content":
        inner = source.get("content")
        if isinstance(inner, str):
            return [text_part(inner, block)] if inner else []
        texts = (
            [b.get("text") for b in inner if isinstance(b, dict)] if isinstance(inner, list) else []
        )
        joined = JOIN.join(t for t in texts if isinstance(t, str) and t)
        return [text_part(joined, block)] if joined else []
    if kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type")
        media_type = media_type if isinstance(media_type, str) else "application/pdf"
        title = block.get("title")
        filename = title if isinstance(title, str) and title else _DEFAULT_FILENAME
        data_url = f"data:{media_type};base64,{source['data']}"
        return [{"type": "file", "file": {"filename": filename, "file_data": data_url}}]
    return []
