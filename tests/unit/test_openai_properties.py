"""Property tests: any well-formed OpenAI stream, cut into bytes anywhere, becomes an Anthropic
event sequence that follows the grammar, that the official SDK accumulates, and that says what
the source said; damaged or odd input never raises anything but ``ValueError``."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import orjson
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccbalancer.dialects.capabilities import Capabilities, refused, request_needs
from ccbalancer.dialects.openai import (
    SYNTHETIC_SIGNATURE_PREFIX,
    OpenAIStreamDecoder,
    OpenAIStreamTranslator,
    map_openai_error,
    to_openai_request,
)
from ccbalancer.dialects.openai.request import Untranslatable
from ccbalancer.sse.event import Event

MODEL = "claude-opus-5-5"
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EVENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
DELTA_TYPES = {
    "text": {"text_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "tool_use": {"input_json_delta"},
}

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
TOOL_INPUTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4)
FRAGMENTS = st.lists(st.text(max_size=10), min_size=1, max_size=4)
# A thinking fragment as a content part: Mistral's nested form, a flat one, other gateways'.
THINKING_PARTS = [
    lambda text: {"type": "thinking", "thinking": [{"type": "text", "text": text}]},
    lambda text: {"type": "thinking", "thinking": text},
    lambda text: {"type": "reasoning", "text": text},
]
# Chunks that carry nothing: an empty delta, no choices, null or empty content.
EMPTY_CHUNKS = [
    lambda chunk: chunk({}),
    lambda chunk: {**chunk({}), "choices": []},
    lambda chunk: chunk({"content": None}),
    lambda chunk: chunk({"content": []}),
]


@dataclass
class Script:
    """One upstream answer: the bytes a server sends and what they mean."""

    body: bytes
    blocks: list[tuple[str, str]]  # ("text" | "thinking", text), merged as a client sees them
    tools: list[tuple[str, str, dict[str, Any]]]  # (id, name, input) in index order
    stop_reason: str
    usage: dict[str, int] | None
    cuts: list[int] = field(default_factory=list)


def _split(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=5)))
    return [text[a:b] for a, b in pairwise([0, *cuts, len(text)])]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    reasoning_key = draw(st.sampled_from(["reasoning_content", "reasoning"]))
    segments = draw(
        st.lists(st.tuples(st.sampled_from(["text", "thinking"]), FRAGMENTS), max_size=4)
    )
    calls = draw(st.lists(st.tuples(NAMES, TOOL_INPUTS, st.booleans()), max_size=3))
    upstream_id = draw(st.from_regex(r"chatcmpl-[A-Za-z0-9]{1,12}", fullmatch=True))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": upstream_id,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": None,
        }

    chunks: list[dict[str, Any]] = []
    if draw(st.booleans()):
        chunks.append(chunk({"role": "assistant", "content": draw(st.sampled_from(["", None]))}))
    # How text and thinking travel: their own delta keys (OpenAI, DeepSeek, OpenRouter), a
    # `content` list of parts, one per chunk or several in one chunk (Mistral), or a mix.
    form = draw(st.sampled_from(["keys", "parts", "mixed"]))
    grouped: list[dict[str, Any]] = []

    def flush() -> None:
        if grouped:
            chunks.append(chunk({"content": list(grouped)}))
            grouped.clear()

    blocks: list[tuple[str, str]] = []
    for kind, fragments in segments:
        for fragment in fragments:
            style = form if form != "mixed" else draw(st.sampled_from(["keys", "parts", "grouped"]))
            if style == "keys":
                flush()
                chunks.append(chunk({"content" if kind == "text" else reasoning_key: fragment}))
            else:
                part = (
                    {"type": "text", "text": fragment}
                    if kind == "text"
                    else draw(st.sampled_from(THINKING_PARTS))(fragment)
                )
                grouped.append(part)
                if style != "grouped":
                    flush()
            if draw(st.integers(0, 5)) == 0:  # an empty chunk between any two
                flush()
                chunks.append(draw(st.sampled_from(EMPTY_CHUNKS))(chunk))
            if not fragment:
                continue
            if blocks and blocks[-1][0] == kind:
                blocks[-1] = (kind, blocks[-1][1] + fragment)
            else:
                blocks.append((kind, fragment))
    flush()

    tools = []
    pieces: list[list[str]] = []
    for index, (name, tool_input, pretty) in enumerate(calls):
        arguments = (
            json.dumps(tool_input, indent=1) if pretty else orjson.dumps(tool_input).decode()
        )
        no_arguments = not tool_input and draw(st.booleans())
        pieces.append([] if no_arguments else _split(draw, arguments))
        tools.append((f"call_{index}_{draw(st.integers(0, 999))}", name, tool_input))

    def header(index: int, arguments: str) -> dict[str, Any]:
        call_id, name, _ = tools[index]
        return {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    def fragment(index: int, arguments: str) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    mode = draw(st.sampled_from(["sequential", "interleaved", "one_chunk"]))
    if tools and mode == "one_chunk":
        chunks.append(chunk({"tool_calls": [header(i, "".join(p)) for i, p in enumerate(pieces)]}))
    elif tools and mode == "interleaved":
        chunks.append(chunk({"tool_calls": [header(i, "") for i in range(len(tools))]}))
        order = draw(st.permutations([i for i, p in enumerate(pieces) for _ in p]))
        queues = [list(p) for p in pieces]
        chunks.extend(fragment(i, queues[i].pop(0)) for i in order)
    else:
        for i, parts in enumerate(pieces):
            first = parts[0] if parts and draw(st.booleans()) else ""
            chunks.append(chunk({"tool_calls": [header(i, first)]}))
            chunks.extend(fragment(i, part) for part in (parts[1:] if first else parts))

    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
    finish_chunk = chunk({}, finish)
    usage = None
    # Where the usage goes: its own chunk after finish_reason (OpenAI), the finish chunk
    # itself (DeepSeek, Groq), a chunk before finish_reason (vLLM's running usage), inside
    # the finishing choice (Moonshot); and where the cache count sits in it.
    place = draw(st.sampled_from(["tail", "on_finish", "before_finish", "in_choice", None]))
    if place is not None:
        prompt = draw(st.integers(0, 10**6))
        completion = draw(st.integers(0, 10**5))
        cached = draw(st.integers(0, prompt))
        reported: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        where = draw(st.sampled_from(["details", "deepseek", "moonshot"]))
        if where == "details":
            reported["prompt_tokens_details"] = {"cached_tokens": cached}
        elif where == "deepseek":
            reported |= {
                "prompt_cache_hit_tokens": cached,
                "prompt_cache_miss_tokens": prompt - cached,
            }
        else:
            reported["cached_tokens"] = cached
        if place == "tail":
            tail: dict[str, Any] = {"id": upstream_id, "usage": reported}
            shape = draw(st.sampled_from(["empty", "null", "missing"]))
            if shape != "missing":
                tail["choices"] = [] if shape == "empty" else None
            chunks.append(finish_chunk)
            chunks.append(tail)
        elif place == "on_finish":
            chunks.append(finish_chunk | {"usage": reported})
        elif place == "before_finish":
            chunks.append({"id": upstream_id, "choices": [], "usage": reported})
            chunks.append(finish_chunk)
        else:
            finish_chunk["choices"][0]["usage"] = reported
            chunks.append(finish_chunk)
        usage = {
            "input_tokens": prompt - cached,
            "cache_read_input_tokens": cached,
            "output_tokens": completion,
        }
    else:
        chunks.append(finish_chunk)

    newline = draw(st.sampled_from(["\n", "\r\n"]))
    frames = [f"data: {orjson.dumps(c).decode()}{newline}{newline}" for c in chunks]
    if draw(st.booleans()):
        frames.insert(draw(st.integers(0, len(frames))), f": keep-alive{newline}{newline}")
    if draw(st.booleans()):
        frames.append(f"data: [DONE]{newline}{newline}")
    body = "".join(frames).encode()

    mapped = {"length": "max_tokens", "content_filter": "refusal"}
    stop_reason = mapped.get(finish, "tool_use" if tools else "end_turn")
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=8))))
    return Script(body, blocks, tools, stop_reason, usage, cuts)


def _decode(body: bytes, cuts: list[int]) -> list[Event]:
    decoder = OpenAIStreamDecoder(MODEL)
    events: list[Event] = []
    for a, b in pairwise([0, *cuts, len(body)]):
        events += decoder.feed(body[a:b], 0.0)
    return events + decoder.close()


class Grammar:
    """Checks message_start, (block start, deltas, stop)* with indices 0, 1, 2…, never
    interleaved, then message_delta, message_stop; an error event may end it anywhere."""

    def __init__(self) -> None:
        self.started = False
        self.next_index = 0
        self.open: str | None = None
        self.last_delta: str | None = None
        self.delta_sent = False
        self.over = False

    def add(self, name: str, payload: dict[str, Any]) -> None:
        assert not self.over, f"{name} after the end of the message"
        assert payload["type"] == name
        if name == "error":
            assert payload["error"]["type"] in ("api_error", "overloaded_error")
            self.over = True
            return
        if not self.started:
            assert name == "message_start"
            self.started = True
            return
        index = payload.get("index")
        if name == "content_block_start":
            assert self.open is None and not self.delta_sent
            assert index == self.next_index
            self.open = payload["content_block"]["type"]
            self.last_delta = None
        elif name == "content_block_delta":
            assert self.open is not None and index == self.next_index
            assert payload["delta"]["type"] in DELTA_TYPES[self.open]
            assert self.last_delta != "signature_delta", "signature_delta must be the last delta"
            self.last_delta = payload["delta"]["type"]
        elif name == "content_block_stop":
            assert self.open is not None and index == self.next_index
            if self.open == "thinking":
                assert self.last_delta == "signature_delta"
            if self.open == "tool_use":
                assert self.last_delta == "input_json_delta"
            self.open = None
            self.next_index += 1
        elif name == "message_delta":
            assert self.open is None and not self.delta_sent
            self.delta_sent = True
        else:
            assert name == "message_stop" and self.delta_sent
            self.over = True

    def check(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for name, payload in events:
            self.add(name, payload)


def _sdk_message(events: list[Event]) -> Any:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        model = EVENT_ADAPTER.validate_python(event.json())
        snapshot = accumulate_event(event=model, current_snapshot=snapshot, json_bufs=json_bufs)
    return snapshot


@SETTINGS
@given(scripts())
def test_any_split_stream_is_a_valid_anthropic_stream_that_says_the_same(script: Script) -> None:
    events = _decode(script.body, script.cuts)
    grammar = Grammar()
    grammar.check([(e.name, e.json()) for e in events])
    assert grammar.over and grammar.delta_sent, (
        "complete streams end with message_delta, message_stop"
    )

    message = _sdk_message(events)
    texts = [
        (b.type, b.text if b.type == "text" else b.thinking)
        for b in message.content
        if b.type != "tool_use"
    ]
    calls = [(b.id, b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert texts == script.blocks
    assert calls == script.tools
    assert message.model == MODEL
    assert message.stop_reason == script.stop_reason
    for block in message.content:
        if block.type == "thinking":
            assert block.signature.startswith(SYNTHETIC_SIGNATURE_PREFIX)
    if script.usage is not None:
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (
            script.usage["input_tokens"],
            script.usage["cache_read_input_tokens"],
            script.usage["output_tokens"],
        )


@st.composite
def damaged(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    body = bytearray(draw(scripts()).body)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        at = draw(st.integers(0, len(body)))
        if action == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == "delete":
            del body[at : at + draw(st.integers(1, 20))]
        elif action == "insert":
            body[at:at] = draw(
                st.binary(max_size=8) | st.sampled_from([b"\n\n", b"data: ", b'"', b"{", b"[DONE]"])
            )
        else:
            del body[at:]
    cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=6))))
    return bytes(body), cuts


@SETTINGS
@given(damaged())
def test_damaged_streams_raise_only_value_error_and_never_break_the_grammar(
    case: tuple[bytes, list[int]],
) -> None:
    body, cuts = case
    decoder = OpenAIStreamDecoder(MODEL)
    grammar = Grammar()
    try:
        for a, b in pairwise([0, *cuts, len(body)]):
            grammar.check([(e.name, e.json()) for e in decoder.feed(body[a:b], 0.0)])
        grammar.check([(e.name, e.json()) for e in decoder.close()])
    except ValueError:
        pass


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | JSON_VALUES


ODD_CALLS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "index": _maybe(st.integers(0, 3)),
            "id": _maybe(st.sampled_from(["a", "b"])),
            "function": _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": _maybe(NAMES),
                        "arguments": _maybe(st.sampled_from(["{", "}", '"x"', ":1"])),
                    },
                )
            ),
        },
    ),
    max_size=3,
)
ODD_DELTAS = st.fixed_dictionaries(
    {},
    optional={
        "content": _maybe(st.text(max_size=4)),
        "reasoning_content": _maybe(st.text(max_size=4)),
        "reasoning": JSON_VALUES,
        "refusal": JSON_VALUES,
        "tool_calls": _maybe(ODD_CALLS),
        "function_call": JSON_VALUES,
    },
)
ODD_CHUNKS = st.fixed_dictionaries(
    {},
    optional={
        "id": JSON_VALUES,
        "choices": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "index": _maybe(st.just(0)),
                        "delta": _maybe(ODD_DELTAS),
                        "finish_reason": _maybe(
                            st.sampled_from(["stop", "length", "tool_calls", "error"])
                        ),
                    },
                ),
                max_size=2,
            )
        ),
        "usage": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "prompt_tokens": JSON_VALUES,
                    "completion_tokens": JSON_VALUES,
                    "prompt_tokens_details": _maybe(
                        st.fixed_dictionaries({}, optional={"cached_tokens": JSON_VALUES})
                    ),
                },
            )
        ),
        "error": st.none() | JSON_VALUES,
    },
)


@SETTINGS
@given(st.lists(ODD_CHUNKS, max_size=8), st.booleans())
def test_odd_chunk_shapes_never_crash_the_translator(
    chunks: list[dict[str, Any]], done: bool
) -> None:
    translator = OpenAIStreamTranslator(MODEL)
    grammar = Grammar()
    try:
        for chunk in chunks:
            grammar.check(translator.feed(chunk))
        grammar.check(translator.done() if done else translator.eof())
    except ValueError:
        pass


BLOCKS = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            [
                "text",
                "image",
                "tool_use",
                "tool_result",
                "thinking",
                "redacted_thinking",
                "document",
                "x",
                "tool_reference",
                "server_tool_use",
                "web_search_tool_result",
                "container_upload",
            ]
        )
    },
    optional={
        "text": JSON_VALUES,
        "source": _maybe(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["base64", "url", "text", "file"])},
                optional={"media_type": JSON_VALUES, "data": JSON_VALUES, "url": JSON_VALUES},
            )
        ),
        "id": JSON_VALUES,
        "name": JSON_VALUES,
        "input": JSON_VALUES,
        "tool_use_id": JSON_VALUES,
        "content": JSON_VALUES
        | st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["text", "image", "document", "tool_reference"])},
                optional={"text": JSON_VALUES, "tool_name": JSON_VALUES},
            )
        ),
        "is_error": JSON_VALUES,
        "thinking": JSON_VALUES,
        "tool_name": JSON_VALUES,
        "title": JSON_VALUES,
        "cache_control": _maybe(st.just({"type": "ephemeral"})),
    },
)
REQUESTS = st.fixed_dictionaries(
    {
        "model": st.just("claude"),
        "messages": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "assistant", "system", "tool"])},
                    optional={
                        "content": _maybe(st.lists(_maybe(BLOCKS), max_size=4)),
                        "output_config": JSON_VALUES,
                    },
                ),
                max_size=4,
            )
        ),
    },
    optional={
        "system": _maybe(st.lists(_maybe(BLOCKS), max_size=3)),
        "tools": _maybe(
            st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": JSON_VALUES,
                        "type": JSON_VALUES | st.sampled_from(["custom", "web_search_20250305"]),
                        "input_schema": JSON_VALUES,
                        "description": JSON_VALUES,
                    },
                ),
                max_size=3,
            )
        ),
        "tool_choice": _maybe(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["auto", "any", "none", "tool"])},
                optional={"name": JSON_VALUES, "disable_parallel_tool_use": JSON_VALUES},
            )
        ),
        "max_tokens": JSON_VALUES,
        "temperature": JSON_VALUES,
        "stop_sequences": JSON_VALUES | st.lists(JSON_VALUES),
        "thinking": _maybe(
            st.fixed_dictionaries({"type": st.sampled_from(["enabled", "adaptive", "disabled"])})
        ),
        "output_config": _maybe(st.fixed_dictionaries({}, optional={"effort": JSON_VALUES})),
    },
)


@SETTINGS
@given(REQUESTS, st.booleans(), st.booleans())
def test_any_request_shape_converts_or_names_what_it_cannot_send(
    request: dict[str, Any], files: bool, keep_cache: bool
) -> None:
    """Never a silent drop: the converter either translates the request or refuses it naming
    exactly what ``capabilities.refused`` names for such a provider, so the relay's skip and
    the converter always agree."""
    before = copy.deepcopy(request)
    expected = refused(request_needs(request), "openai", Capabilities(files=files))
    try:
        body = to_openai_request(
            request, "gpt-4o", files=files, cache_control=keep_cache, cache_key="session-1"
        )
    except Untranslatable as error:
        assert error.labels == expected
        assert expected
        return
    finally:
        assert request == before
    assert not expected
    assert body["stream"] is True
    for message in body["messages"]:
        assert message["role"] in ("system", "user", "assistant", "tool")
    orjson.dumps(body)


ERROR_BODIES = (
    st.binary(max_size=300)
    | JSON_VALUES.map(orjson.dumps)
    | st.fixed_dictionaries(
        {
            "error": JSON_VALUES
            | st.fixed_dictionaries(
                {},
                optional={
                    "message": JSON_VALUES | st.text(max_size=600),
                    "code": JSON_VALUES,
                    "type": JSON_VALUES,
                },
            )
        }
    ).map(orjson.dumps)
)


@SETTINGS
@given(st.integers(100, 599), ERROR_BODIES)
def test_any_error_body_maps_to_a_short_anthropic_error(status: int, body: bytes) -> None:
    error_type, message = map_openai_error(status, body)
    assert error_type.endswith("_error") or error_type == "request_too_large"
    assert 0 < len(message) <= 200
    assert "\n" not in message


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_split_points_do_not_change_the_events(chunk_size: int) -> None:
    """A fixed example of the property above, kept readable for when it fails."""
    frames = [
        {"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "é✓"}}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    body = (
        b"".join(b"data: " + orjson.dumps(f) + b"\r\n\r\n" for f in frames)
        + b"data: [DONE]\r\n\r\n"
    )
    whole = [e.raw for e in _decode(body, [])]
    cuts = list(range(chunk_size, len(body), chunk_size))
    assert [e.raw for e in _decode(body, cuts)] == whole
