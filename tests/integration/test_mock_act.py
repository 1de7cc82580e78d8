"""``Script.act`` over real sockets, in both wire formats: a request that offers tools and asks
for an action gets a tool call, the tool's result gets a text answer; only scripts that ask for
it act (the demo's providers do, the tests' and the benchmark's default does not)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from ccbalancer.mock import DEMO_PROVIDERS, MockServer, Script
from ccbalancer.sse import MessageAccumulator, SSEParser

ENVIRONMENT = "<system-reminder>\n# Environment\n - Primary working directory: /w/proj\n"
ANTHROPIC_TOOLS = [
    {"name": name, "description": name, "input_schema": {"type": "object"}}
    for name in ("Bash", "Read")
]
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": t["name"], "parameters": {"type": "object"}}}
    for t in ANTHROPIC_TOOLS
]


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    async with MockServer() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def ask(words: str, tools: bool = True) -> dict[str, Any]:
    content = [{"type": "text", "text": ENVIRONMENT}, {"type": "text", "text": words}]
    body: dict[str, Any] = {"model": "claude-test", "max_tokens": 100, "stream": True}
    body["messages"] = [{"role": "user", "content": content}]
    if tools:
        body["tools"] = ANTHROPIC_TOOLS
    return body


async def anthropic_message(
    http: aiohttp.ClientSession, mock: MockServer, body: dict[str, Any]
) -> dict[str, Any]:
    async with http.post(mock.anthropic_url("p") + "/v1/messages", json=body) as response:
        accumulator = MessageAccumulator()
        for event in SSEParser().feed(await response.read()):
            accumulator.add(event)
    return accumulator.result()


async def test_an_acting_provider_lists_then_answers_about_the_listing(mock, http):
    mock.configure("p", DEMO_PROVIDERS["healthy"], delay=0.0, first_event_delay=0.0)
    first = await anthropic_message(http, mock, ask("list the files here"))

    assert first["stop_reason"] == "tool_use"
    (call,) = first["content"]
    assert call["type"] == "tool_use" and call["name"] == "Bash"
    assert call["input"] == {"command": "ls", "description": "List the files here"}

    follow_up = ask("list the files here")
    follow_up["messages"] += [
        {"role": "assistant", "content": [call]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call["id"], "content": "a.py\nb.md"}
            ],
        },
    ]
    second = await anthropic_message(http, mock, follow_up)
    assert second["stop_reason"] == "end_turn"
    assert "I ran `ls` in /w/proj: 2 entries: a.py, b.md." in second["content"][0]["text"]

    follow_up["messages"] += [
        {"role": "assistant", "content": second["content"]},
        {"role": "user", "content": [{"type": "text", "text": "show me b.md"}]},
    ]
    third = await anthropic_message(http, mock, follow_up)
    (read,) = third["content"]
    assert read["name"] == "Read" and read["input"] == {"file_path": "/w/proj/b.md"}


async def test_without_tools_or_without_act_the_scripted_text_comes_back(mock, http):
    mock.configure("p", Script(text="canned", act=True))
    no_tools = await anthropic_message(http, mock, ask("list the files here", tools=False))
    assert no_tools["content"] == [{"type": "text", "text": "canned"}]
    mock.configure("p", Script(text="canned"))  # the default: tests and the benchmark
    not_acting = await anthropic_message(http, mock, ask("list the files here"))
    assert not_acting["content"] == [{"type": "text", "text": "canned"}]


async def test_a_directive_turns_act_on_for_one_request(mock, http):
    mock.configure("p", Script(text="canned"))
    message = await anthropic_message(http, mock, ask('list the files here <<mock {"act": true}>>'))
    assert [block["name"] for block in message["content"]] == ["Bash"]


async def test_an_acting_openai_provider_calls_the_tool_in_chat_completion_chunks(mock, http):
    mock.configure("p", Script(act=True))
    body = {
        "model": "gpt-test",
        "stream": True,
        "tools": OPENAI_TOOLS,
        "messages": [
            {"role": "system", "content": ENVIRONMENT},
            {"role": "user", "content": "list the files here"},
        ],
    }
    async with http.post(mock.openai_url("p") + "/chat/completions", json=body) as response:
        raw = await response.read()
    chunks = [orjson.loads(e.data) for e in SSEParser().feed(raw) if e.data != b"[DONE]"]
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["function"]["name"] == "Bash"
    arguments = "".join(call["function"].get("arguments", "") for call in calls)
    assert orjson.loads(arguments)["command"] == "ls"

    body["messages"] += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": calls[0]["id"],
                    "type": "function",
                    "function": {"name": "Bash", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "only.txt"},
    ]
    async with http.post(mock.openai_url("p") + "/chat/completions", json=body) as response:
        raw = await response.read()
    text = "".join(
        orjson.loads(e.data)["choices"][0]["delta"].get("content") or ""
        for e in SSEParser().feed(raw)
        if e.data != b"[DONE]" and orjson.loads(e.data)["choices"]
    )
    assert "I ran `ls` in /w/proj: 1 entry: only.txt." in text
