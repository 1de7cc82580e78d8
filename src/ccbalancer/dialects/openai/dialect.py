"""The ``openai`` dialect: how ccbalancer talks to an OpenAI-compatible Chat Completions server.

``OpenAIDialect`` implements ``dialects.base.Dialect``: the URL, the translated body, headers
that carry only the Bearer credential (nothing Anthropic-specific leaks upstream), and error
mapping. ``OpenAIStreamDecoder`` implements ``StreamDecoder``: response bytes go through the
shared ``SSEParser``, each ``data:`` frame is parsed once with orjson and handed to the
``OpenAIStreamTranslator``, and the resulting Anthropic events are encoded once, stamped
with the time their bytes arrived. A server that answers the streaming request with a plain
JSON completion (by content type, or by a body that starts with ``{``) gets the same event
sequence. Sans-IO: bytes in, events out.
"""

from __future__ import annotations

from typing import Any

import orjson

from ccbalancer.dialects.base import DEFAULT_HEADER_OPTIONS, BodyOptions, HeaderOptions
from ccbalancer.dialects.openai.errors import map_openai_error
from ccbalancer.dialects.openai.request import to_openai_request
from ccbalancer.dialects.openai.response import completion_chunks
from ccbalancer.dialects.openai.stream import Events, OpenAIStreamTranslator
from ccbalancer.sse.event import Event, encode_event
from ccbalancer.sse.parser import SSEParser

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024
_ENDPOINT = "/chat/completions"
_SSE, _JSON = "sse", "json"
_DONE = b"[DONE]"
# UTF-8 BOM and blank lines may precede the first byte that tells SSE from JSON.
_LEADING = b" \t\r\n\xef\xbb\xbf"
_SSE_STARTS = (b"data", b"event", b"id", b"retry", b":")


class OpenAIDialect:
    """Dialect for ``type: openai`` providers; per-provider choices come with each body."""

    kind = "openai"
    wants_input_estimate = True

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes

    def url(self, base_url: str, query: str) -> str:
        # The client's query string is Anthropic's `beta=true`; an OpenAI server has no use
        # for it and some reject unknown parameters.
        base = base_url.rstrip("/")
        return base if base.endswith(_ENDPOINT) else base + _ENDPOINT

    def body(
        self,
        request: dict[str, Any],
        upstream_model: str,
        options: BodyOptions,
        *,
        session: str = "",
    ) -> bytes:
        return orjson.dumps(
            to_openai_request(
                request,
                upstream_model,
                reasoning_effort=options.reasoning_effort and options.thinking,
                reasoning_history=options.reasoning_history,
                max_tokens_limit=options.max_tokens,
                files=options.files,
                cache_control=options.cache_control,
                cache_key=session if options.prompt_cache_key else "",
            )
        )

    def headers(
        self,
        client_headers: dict[str, str],
        credential: str,
        auth_type: str,
        options: HeaderOptions = DEFAULT_HEADER_OPTIONS,
    ) -> dict[str, str]:
        # Both auth types are Bearer for OpenAI. Client headers (anthropic-*, x-api-key,
        # x-stainless-*, the session id) mean nothing here and are not forwarded.
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if credential:  # local servers (Ollama, vLLM) often run without a key
            headers["authorization"] = "Bearer " + credential
        return headers

    def decoder(
        self, client_model: str, content_type: str, *, input_estimate: int = 0
    ) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(
            client_model, content_type, self.max_event_bytes, input_estimate=input_estimate
        )

    def error(self, status: int, body: bytes) -> tuple[str, str]:
        return map_openai_error(status, body)


class OpenAIStreamDecoder:
    """Response bytes of one OpenAI answer -> Anthropic ``Event``s, incrementally."""

    # message_start carries the caller's local estimate of input tokens (OpenAI servers report
    # usage only at the end); records must take usage from message_delta only.
    start_usage_estimated = True

    __slots__ = (
        "_body",
        "_json_type",
        "_max_bytes",
        "_mode",
        "_parser",
        "_received",
        "_translator",
    )

    def __init__(
        self,
        client_model: str,
        content_type: str = "text/event-stream",
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        *,
        input_estimate: int = 0,
    ) -> None:
        self._translator = OpenAIStreamTranslator(client_model, input_estimate)
        self._parser = SSEParser(max_event_bytes)
        self._max_bytes = max_event_bytes
        media_type = content_type.split(";", 1)[0].strip().lower()
        self._json_type = media_type == "application/json" or media_type.endswith("+json")
        self._mode: str | None = None  # decided by the first bytes of the body
        self._body = b""
        self._received = 0.0

    def feed(self, chunk: bytes, received: float) -> list[Event]:
        if self._translator.ended:
            return []  # after message_stop or an error nothing else is meaningful
        self._received = received
        if self._mode is None:
            self._body += chunk
            start = self._body.lstrip(_LEADING)
            mode = _mode(start, self._json_type) if start else None
            if mode is None:
                return []
            self._mode = mode
            chunk = start if mode == _JSON else self._body
            self._body = b""
        if self._mode == _JSON:
            return self._feed_json(chunk)
        out: list[Event] = []
        for event in self._parser.feed(chunk, received):
            self._encode(self._translate(event.name, event.data), out)
            if self._translator.ended:
                break
        return out

    def close(self) -> list[Event]:
        self._parser.close()
        out: list[Event] = []
        if self._mode == _JSON and self._body and not self._translator.ended:
            self._encode(self._completion(self._parse_body()), out)
        self._encode(self._translator.eof(), out)
        return out

    def _translate(self, name: str, data: bytes) -> Events:
        data = data.strip()
        if data == _DONE:
            return self._translator.done()
        if not data:  # an empty data line used as a keep-alive
            return []
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError(f"upstream sent invalid JSON in a data line: {data[:60]!r}") from None
        if not isinstance(value, dict):
            raise ValueError("upstream sent a data line that is not a JSON object")
        if name == "error" and "error" not in value:  # `event: error` with a bare payload
            value = {"error": value}
        return self._translator.feed(value)

    def _feed_json(self, chunk: bytes) -> list[Event]:
        self._body += chunk
        if len(self._body) > self._max_bytes:
            raise ValueError(f"upstream JSON answer larger than {self._max_bytes} bytes")
        # Parse only when the bytes so far could end a document: a body arriving in many
        # pieces is then parsed about once instead of once per piece.
        if not self._body.rstrip().endswith(b"}"):
            return []
        try:
            value = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            return []
        out: list[Event] = []
        self._encode(self._completion(value), out)
        return out

    def _parse_body(self) -> object:
        try:
            return orjson.loads(self._body)
        except orjson.JSONDecodeError:
            raise ValueError("upstream sent an incomplete or invalid JSON answer") from None

    def _completion(self, value: object) -> Events:
        if not isinstance(value, dict):
            raise ValueError("upstream JSON answer is not an object")
        self._body = b""
        pairs: Events = []
        for chunk in completion_chunks(value):
            pairs.extend(self._translator.feed(chunk))
        pairs.extend(self._translator.done())
        return pairs

    def _encode(self, pairs: Events, out: list[Event]) -> None:
        received = self._received
        out.extend(encode_event(name, payload, received) for name, payload in pairs)


def _mode(start: bytes, json_type: bool) -> str | None:
    """SSE or JSON from the body's first bytes, None while too few arrived to tell. Servers
    mislabel both ways, but no SSE stream starts with ``{`` and no JSON with a field name."""
    if start[:1] == b"{":
        return _JSON
    if not json_type or start.startswith(_SSE_STARTS):
        return _SSE
    if any(field.startswith(start) for field in _SSE_STARTS):
        return None
    return _JSON
