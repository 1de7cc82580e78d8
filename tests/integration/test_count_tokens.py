"""count_tokens under load (issue 15, item 10): the VS Code extension sends dozens of identical
calls a second. Identical ones share one upstream call and its answer for a minute; a failing
count never costs the provider its health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

COUNT = {"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "count me"}]}


@dataclass
class CountingUpstream:
    """An Anthropic-type upstream whose count_tokens answers ``status`` once ``gate`` opens."""

    url: str = ""
    status: int = 200
    calls: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def count(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.arrived.set()
        await self.gate.wait()
        if self.status != 200:
            return web.json_response(
                {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
                status=self.status,
            )
        body: dict[str, Any] = await request.json()
        return web.json_response({"input_tokens": 1000 + len(str(body["messages"]))})


@pytest.fixture
async def upstream() -> AsyncIterator[CountingUpstream]:
    counting = CountingUpstream()
    app = web.Application()
    app.router.add_post("/u/v1/messages/count_tokens", counting.count)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    counting.url = f"http://127.0.0.1:{port}/u"
    yield counting
    await runner.cleanup()


def _config(upstream: CountingUpstream) -> str:
    return (
        "providers:\n"
        f"  - {{name: u, type: anthropic, base_url: '{upstream.url}', auth_value: sk-u}}\n"
        "model_routes: {'*': [{provider: u}]}\n"
        "settings: {log_file_path: '', history: {enabled: false}}\n"
    )


async def _count(b: Any, body: dict[str, Any] = COUNT, key: str = "sk-client-1") -> Any:
    resp = await b.session.post(
        b.url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": key}
    )
    return resp.status, dict(resp.headers), await resp.json()


async def test_identical_counts_share_one_call_then_its_answer_for_a_minute(
    upstream, balancer_factory
):
    b = await balancer_factory(_config(upstream), manual_clock=True)

    async with asyncio.timeout(30), asyncio.TaskGroup() as group:
        waiting = [group.create_task(_count(b)) for _ in range(5)]
        await upstream.arrived.wait()
        upstream.gate.set()  # the other four share the call in flight or its cached answer
    answers = [task.result() for task in waiting]

    assert upstream.calls == 1
    assert {(status, body["input_tokens"]) for status, _, body in answers} == {(200, 1041)}
    assert all(headers["x-provider-used"] == "u" for _, headers, _ in answers)

    assert (await _count(b))[2]["input_tokens"] == 1041  # cached: no new call
    assert upstream.calls == 1
    other = {**COUNT, "messages": [{"role": "user", "content": "something else"}]}
    await _count(b, other)
    assert upstream.calls == 2  # a different body is a different count
    await _count(b, key="sk-client-2")
    assert upstream.calls == 3  # and another client never shares

    b.clock.now += 61  # the minute is over
    await _count(b)
    assert upstream.calls == 4


async def test_a_failing_count_falls_back_to_the_estimate_without_touching_health(
    upstream, balancer_factory
):
    upstream.status = 529
    upstream.gate.set()
    b = await balancer_factory(_config(upstream))

    for _ in range(3):
        status, headers, body = await _count(b)
        assert status == 200
        assert headers["x-ccbalancer-estimated"] == "true"
        assert body["input_tokens"] > 0
    # the estimate is reused like any answer, so a failing upstream is not asked dozens of
    # times a second either
    assert upstream.calls == 1
    health = b.runtime.health.get("u")
    assert health.failures == 0
    assert health.available(b.runtime.clock())
