"""Connections a client holds open (issue 14, item 9 and its small items).

Slow request heads, bodies that trickle, idle keep-alive sockets: each is bounded by a
setting, so a balancer bound beyond loopback cannot be held open by slowloris clients. And a
streaming client that leaves or reads slowly is recorded and judged by what it really took.
"""

from __future__ import annotations

import asyncio
import socket

from ccbalancer.mock import Script
from ccbalancer.observe.record import RequestRecord
from tests.conftest import config_text, envelope_of, msg, raw_http, until

HEAD = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"


async def _open(b) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = b.url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


def _records(b) -> list[RequestRecord]:
    """Every request record the balancer writes from now on."""
    records: list[RequestRecord] = []
    finished = b.runtime.finished

    def keep(record: RequestRecord) -> None:
        records.append(record)
        finished(record)

    b.runtime.finished = keep
    return records


async def test_request_headers_trickling_past_the_header_timeout_get_408(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings="client_header_timeout: 0.5\n"))
    reader, writer = await _open(b)
    answer = b""
    try:
        async with asyncio.timeout(20):
            for byte in HEAD:  # a byte every 50 ms: well past 0.5 s before the head is whole
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    async with asyncio.timeout(0.05):
                        answer = await reader.read()
                    break
                except TimeoutError:
                    continue
            else:
                answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b'"timeout_error"' in body
    assert mock.requests("a") == []


async def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"], settings="client_header_timeout: 0.3\n"))
    reader, writer = await _open(b)
    try:
        async with asyncio.timeout(20):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")


async def test_a_body_trickling_past_the_body_deadline_is_refused(mock, balancer_factory):
    """Each byte comes well within ``client_read_timeout``, but the whole body does not come
    within ``client_body_timeout``: the limit is on the total, not only on each gap."""
    settings = "client_body_timeout: 1\nclient_read_timeout: 10\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings))
    reader, writer = await _open(b)
    writer.write(HEAD + b"x-api-key: k\r\ncontent-length: 1000\r\n\r\n")
    answer = b""
    try:
        async with asyncio.timeout(20):
            for _ in range(1000):
                writer.write(b" ")
                await writer.drain()
                try:
                    async with asyncio.timeout(0.1):
                        answer = await reader.readuntil(b"}}")
                    break
                except TimeoutError:
                    continue
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"incomplete after 1s" in body
    assert mock.requests("a") == []


async def test_idle_keep_alive_connections_are_closed(mock, balancer_factory):
    settings = "client_idle_timeout: 0.5\nclient_header_timeout: 60\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings))
    connections = [await _open(b) for _ in range(50)]
    try:
        for _, writer in connections:
            writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        async with asyncio.timeout(20):
            for reader, _ in connections:
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200") and b"close" not in head.lower()
            for reader, _ in connections:  # then nothing: each is closed by the balancer
                await reader.readuntil(b"}")
                assert await reader.read() == b""
    finally:
        for _, writer in connections:
            writer.close()


async def test_a_client_that_leaves_mid_stream_is_recorded_with_what_it_was_given(
    mock, balancer_factory
):
    mock.configure("a", Script(events=60, delay=0.02))
    b = await balancer_factory(config_text(mock, ["a"]))
    records = _records(b)
    resp = await b.post(msg())
    got = b""
    async with asyncio.timeout(20):
        while got.count(b"text_delta") < 3:
            got += await resp.content.readany()
    resp.close()
    await until(lambda: len(records) == 1, 20.0)
    (record,) = records
    assert record.outcome == "cancelled" and record.status == 200
    assert record.events >= 4 and record.bytes >= len(got) // 2
    assert record.ttfb is not None


async def _reading_until_recorded(b, records, pause: float | None) -> RequestRecord:
    """A streaming client with a tiny receive window that reads 512 bytes every ``pause``
    seconds (``None``: never reads), until the balancer has recorded its request."""
    host, port = b.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock, limit=512)
    body = b'{"model":"m","stream":true,"messages":[]}'
    writer.write(HEAD + b"x-api-key: k\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    try:
        async with asyncio.timeout(60):
            while not records:
                if pause is None:
                    await asyncio.sleep(0.05)
                elif await reader.read(512):
                    await asyncio.sleep(pause)
    finally:
        writer.close()
    return records[0]


async def test_a_client_that_reads_slowly_but_steadily_is_dropped_as_too_slow(
    mock, balancer_factory
):
    """It takes bytes all along (~25 KB/s), only fewer than a catch-up piece (64 KB) per
    one-second window: "too slow", not "stopped reading"."""
    mock.configure("a", Script(text="abcdefghi " * 600_000, events=600))
    b = await balancer_factory(config_text(mock, ["a"], settings="client_write_timeout: 1\n"))
    record = await _reading_until_recorded(b, _records(b), 0.02)
    assert record.outcome == "cancelled" and record.status == 200
    assert record.error.startswith("client too slow: accepted "), record.error
    assert 0 < record.bytes < 6_000_000


async def test_a_client_that_stops_reading_is_dropped_as_stopped(mock, balancer_factory):
    mock.configure("a", Script(text="abcdefghi " * 600_000, events=600))
    b = await balancer_factory(config_text(mock, ["a"], settings="client_write_timeout: 1\n"))
    record = await _reading_until_recorded(b, _records(b), None)
    assert record.outcome == "cancelled" and record.status == 200
    assert record.error == "client stopped reading for 1s"


async def test_a_body_that_is_not_an_object_is_a_400_over_a_raw_connection(mock, balancer_factory):
    """(Also: the raw client these tests use reads a plain refusal as expected.)"""
    b = await balancer_factory(config_text(mock, ["a"]))
    answer = await raw_http(b.url, HEAD + b"content-length: 2\r\n\r\n[]")
    assert answer.status == 400 and envelope_of(answer)["type"] == "invalid_request_error"


def test_the_aiohttp_internals_proxy_connection_relies_on_are_there() -> None:
    """proxy/connection.py reads RequestHandler's private state: an aiohttp upgrade must
    re-check it (then move this pin)."""
    import aiohttp
    from aiohttp.web_protocol import RequestHandler

    assert aiohttp.__version__.split(".")[:2] == ["3", "14"], aiohttp.__version__
    slots = set(RequestHandler.__slots__)
    assert {"_request_count", "_messages", "_request_in_progress"} <= slots
    for hook in ("data_received", "connection_made", "connection_lost", "handle_error"):
        assert callable(getattr(RequestHandler, hook))
