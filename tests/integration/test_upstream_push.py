"""upstream/push.py: response bodies pushed to a sink by aiohttp itself, pinned to the aiohttp
it was verified on, with the reader-task fallback for any other version."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest

from ccbalancer.config.schema import ProviderConfig, TimeoutPhase
from ccbalancer.errors import UpstreamError
from ccbalancer.upstream import push
from ccbalancer.upstream.client import UpstreamClient, UpstreamResponse

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


@dataclass
class Collected:
    """A sink that records what it was given, in order."""

    parts: list[bytes] = field(default_factory=list)
    ends: int = 0
    errors: list[UpstreamError] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def data(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def end(self) -> None:
        self.ends += 1
        self.finished.set()

    def failed(self, error: UpstreamError) -> None:
        self.errors.append(error)
        self.finished.set()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    upstream = UpstreamClient()
    yield upstream
    await upstream.close()


async def _open(client: UpstreamClient, url: str) -> UpstreamResponse:
    provider = ProviderConfig(name="raw", type="anthropic", base_url=url)
    return await client.open(provider, url + "/v1/messages", {}, b"{}", TimeoutPhase())


def test_the_read_hook_is_verified_for_the_installed_aiohttp() -> None:
    """push.py relies on StreamReader's _waiter slot and on what aiohttp calls on it. A new
    aiohttp must be checked against it (and added to VERIFIED) before it is trusted."""
    assert aiohttp.__version__.startswith(push.VERIFIED), aiohttp.__version__


async def test_a_body_is_pushed_in_order_without_a_reader_task(client, raw_upstream) -> None:
    upstream = await raw_upstream(
        [HEAD + chunk(b"one "), 0.05, chunk(b"two "), 0.05, chunk(b"three"), b"0\r\n\r\n"]
    )
    response = await _open(client, upstream.url)
    sink = Collected()
    tasks_before = len(asyncio.all_tasks())
    response.stream(sink)
    assert len(asyncio.all_tasks()) == tasks_before  # no task reads this body
    async with asyncio.timeout(5):
        await sink.finished.wait()
    response.close()
    assert b"".join(sink.parts) == b"one two three" and sink.ends == 1 and sink.errors == []
    assert len(sink.parts) >= 2  # delivered as it arrived, not at the end


async def test_what_came_with_the_headers_is_delivered_first(client, raw_upstream) -> None:
    upstream = await raw_upstream([HEAD + chunk(b"early") + b"0\r\n\r\n"])
    response = await _open(client, upstream.url)
    await asyncio.sleep(0.05)  # the whole body is buffered before anyone streams it
    sink = Collected()
    response.stream(sink)
    async with asyncio.timeout(5):
        await sink.finished.wait()
    response.close()
    assert sink.parts == [b"early"] and sink.ends == 1


async def test_a_connection_cut_mid_body_is_a_failure(client, raw_upstream) -> None:
    upstream = await raw_upstream([HEAD + chunk(b"half"), 0.05])
    response = await _open(client, upstream.url)
    sink = Collected()
    response.stream(sink)
    await asyncio.sleep(0.1)
    for writer in upstream.writers:  # the upstream goes away without the last chunk
        writer.close()
    async with asyncio.timeout(5):
        await sink.finished.wait()
    response.close()
    assert sink.parts == [b"half"] and sink.ends == 0
    assert [e.message for e in sink.errors] == ["connection closed mid-response"]


async def test_a_closed_response_tells_its_sink_nothing_more(client, raw_upstream) -> None:
    upstream = await raw_upstream([HEAD + chunk(b"a"), 0.2, chunk(b"b"), b"0\r\n\r\n"])
    response = await _open(client, upstream.url)
    sink = Collected()
    response.stream(sink)
    await asyncio.sleep(0.05)
    response.close()
    await asyncio.sleep(0.4)
    assert sink.parts == [b"a"] and sink.ends == 0 and sink.errors == []


async def test_an_unverified_aiohttp_falls_back_to_a_reader_task(
    client, raw_upstream, monkeypatch
) -> None:
    monkeypatch.setattr(push, "VERIFIED", ("0.0.",))
    upstream = await raw_upstream([HEAD + chunk(b"x"), 0.05, chunk(b"y"), b"0\r\n\r\n"])
    response = await _open(client, upstream.url)
    sink = Collected()
    response.stream(sink)
    assert any(t.get_name().startswith("upstream:body") for t in asyncio.all_tasks())
    async with asyncio.timeout(5):
        await sink.finished.wait()
    response.close()
    assert b"".join(sink.parts) == b"xy" and sink.ends == 1
