"""proxy/direct.py: events written to the client's socket past aiohttp's writer, pinned to the
aiohttp it was verified on; any other version streams through aiohttp's writer unchanged."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from ccbalancer.mock import Script
from ccbalancer.proxy import direct
from tests.conftest import config_text, msg, parse_frames, read_events


def test_the_write_hook_is_verified_for_the_installed_aiohttp() -> None:
    """direct.py frames chunks itself and relies on aiohttp's writer holding nothing back
    after prepare(). A new aiohttp must be checked (and added to VERIFIED) first."""
    assert aiohttp.__version__.startswith(direct.VERIFIED), aiohttp.__version__


async def _raw_stream(url: str, body: bytes) -> bytes:
    """The whole HTTP/1.1 response as bytes off the socket, framing included."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"x-api-key: k\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    await writer.drain()
    async with asyncio.timeout(15):
        raw = await reader.read()
    writer.close()
    return raw


def _dechunk(body: bytes) -> tuple[bytes, int]:
    """The payload of a chunked body, and how many chunks carried it; fails on bad framing."""
    out, chunks = b"", 0
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n"
            return out, chunks
        assert body[size : size + 2] == b"\r\n", "chunk not terminated by CRLF"
        out, body, chunks = out + body[:size], body[size + 2 :], chunks + 1


@pytest.mark.parametrize("verified", [True, False], ids=["direct", "aiohttp-writer"])
async def test_a_stream_is_well_framed_whichever_path_writes_it(
    verified, mock, balancer_factory, monkeypatch
):
    if not verified:
        monkeypatch.setattr(direct, "VERIFIED", ("0.0.",))
    mock.configure("a", Script(events=30, delay=0.01))
    b = await balancer_factory(config_text(mock, ["a"]))
    raw = await _raw_stream(b.url, orjson.dumps(msg()))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    payload, chunks = _dechunk(body)
    assert chunks >= 30  # paced events are written one by one on both paths
    expected = await read_events(await b.post(msg()))
    assert [name for name, _ in parse_frames(payload)] == [name for name, _ in expected]
