"""Faults around the balancer: dead pooled connections, stalled clients, leaks, and keys."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import psutil
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from ccbalancer.config import parse_config
from ccbalancer.mock import Script
from ccbalancer.proxy.auth import guard
from ccbalancer.runtime import RUNTIME, Runtime
from tests.conftest import config_text, msg, read_events, until

FIXTURES = Path(__file__).parent.parent / "fixtures"
FAST = """timeouts:
  first_event_timeout: 0.5
  streaming: {connect_timeout: 2, read_timeout: 0.5, pool_timeout: 2}
"""


async def test_a_dead_pooled_connection_is_retried_once_on_the_same_provider(
    mock, balancer_factory
):
    """The upstream keeps the first connection alive, then closes it when the second request
    arrives on it (a keep-alive race). The balancer retries on a fresh connection to the same
    provider: no failover, no health strike."""
    body = (FIXTURES / "mock-tool-use-stream.sse").read_bytes()
    answer = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                if served == 1:
                    break  # second request on this connection: drop it without an answer
                writer.write(answer)
                await writer.drain()
                served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        text = config_text(mock, ["raw", "b"]).replace(
            mock.anthropic_url("raw"), f"http://127.0.0.1:{port}/raw"
        )
        b = await balancer_factory(text)
        for i in range(2):
            resp = await b.post(msg(f"r{i}"), {"x-claude-code-session-id": f"s{i}"})
            events = await read_events(resp)
            assert resp.status == 200 and resp.headers["x-provider-used"] == "raw"
            assert events[-1][0] == "message_stop"
        assert mock.requests("b") == []
        assert b.runtime.health.get("raw").failure_count == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_a_client_that_stops_reading_is_dropped_and_others_continue(mock, balancer_factory):
    settings = FAST + "client_write_timeout: 0.5\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings))
    mock.configure("a", Script(text="y" * 4000, events=3000))  # ~12 MB of events
    host, port = b.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    import orjson

    payload = orjson.dumps(msg("stalled"))
    request = (
        f"POST /v1/messages HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nx-api-key: k\r\n\r\n"
    ).encode() + payload
    await asyncio.get_running_loop().sock_sendall(sock, request)
    try:
        # another client is served normally while the first one sits there
        mock.enqueue("a", Script())
        other = await b.post(msg("other"))
        assert (await read_events(other))[-1][0] == "message_stop"
        get = b.runtime.metrics.registry.get_sample_value
        await until(lambda: get("ccbalancer_active_subscribers") == 0, 15)
        assert (
            b.runtime.health.get("a").failure_count == 0
        )  # the client's fault, not the provider's
    finally:
        sock.close()


async def test_no_task_or_socket_is_left_after_many_faults(mock, balancer_factory):
    b = await balancer_factory(
        config_text(mock, ["a", "b"], settings=FAST + "unhealthy_threshold: 1000\n")
    )
    faults = [
        Script(status=500),
        Script(reset_before_headers=True),
        Script(error_after=1),
        Script(cut_after=1, cut_mid_event=True),
        Script(events=6, cut_after=5),
        Script(events=6, stall_after=5),
        Script(events=6, error_after=5),
        Script(first_event_delay=2),
        Script(invalid_json_at=3),
    ]

    async def round_of_faults(tag: str) -> None:
        for i, fault in enumerate(faults):
            mock.enqueue("a", fault)
            resp = await b.post(msg(f"{tag}-{i}"), {"x-claude-code-session-id": f"{tag}{i}"})
            await resp.read()
        # and clients that leave mid-stream
        mock.configure("a", Script(events=40, delay=0.02))
        for i in range(3):
            resp = await b.post(msg(f"{tag}-leave-{i}"), {"x-claude-code-session-id": f"{tag}L{i}"})
            await resp.content.readany()
            resp.close()
        mock.configure("a", Script())
        await until(lambda: not (b.runtime.hub.live or mock.active_streams), 15)

    process = psutil.Process()
    await round_of_faults("warm")
    tasks = len(asyncio.all_tasks())
    fds = process.num_fds()
    for tag in ("r1", "r2", "r3"):
        await round_of_faults(tag)
    assert len(asyncio.all_tasks()) == tasks
    assert process.num_fds() <= fds + 4  # pooled keep-alive connections may vary slightly
    assert b.runtime.health.get("a").in_flight == 0 and b.runtime.health.get("b").in_flight == 0


async def test_passthrough_never_forwards_the_balancers_own_keys(mock, balancer_factory):
    settings = "auth: {enabled: true, api_key: sk-inbound-key-1}\nadmin_api_key: sk-admin-key-1\n"
    text = config_text(mock, ["p"], settings=settings).replace(
        'auth_value: "sk-prov-p-secret"', 'auth_value: "passthrough"'
    )
    b = await balancer_factory(text)
    resp = await b.session.post(
        b.url + "/v1/messages",
        json=msg(),
        headers={"x-api-key": "sk-inbound-key-1", "authorization": "Bearer user-upstream-token"},
    )
    await resp.read()
    seen = mock.requests("p")[-1].headers
    assert seen["x-api-key"] == "user-upstream-token"
    assert "sk-inbound-key-1" not in str(seen) and "sk-admin-key-1" not in str(seen)


class _Transport:
    def __init__(self, peer: str) -> None:
        self.peer = peer

    def get_extra_info(self, name: str, default=None):
        return (self.peer, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


async def test_admin_endpoint_is_loopback_only_while_auth_is_off(mock):
    config = parse_config(config_text(mock, ["a"]))
    app = web.Application()
    app[RUNTIME] = Runtime(config, history=False)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="reloaded")

    for peer, status in (("203.0.113.9", 403), ("127.0.0.1", 200), ("::1", 200)):
        request = make_mocked_request(
            "POST", "/providers/reload", app=app, transport=_Transport(peer)
        )
        response = await guard(request, ok)
        assert response.status == status, peer
    await app[RUNTIME].client.close()


async def test_a_truncated_request_body_gets_a_400(mock, balancer_factory):
    """The client promises more bytes than it sends, then stops sending (but stays)."""
    b = await balancer_factory(config_text(mock, ["a"], settings="client_read_timeout: 0.5\n"))
    host, port = b.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 5000\r\n\r\n{"model": "claude-x", "messa'
    )
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.readuntil(b"}}")
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b'"invalid_request_error"' in body
    assert mock.requests("a") == []


async def test_unknown_event_and_delta_types_and_odd_framing_pass_through(
    mock, balancer_factory, recorded_upstream
):
    """New event and delta types must be forwarded (clients ignore what they do not know);
    comment lines, CRLF and multi-line data do not break the stream."""
    frames = [
        b'event: message_start\r\ndata: {"type":"message_start","message":{"id":"msg_x",'
        b'"type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
        b'"usage":{"input_tokens":3,"output_tokens":0}}}\r\n\r\n',
        b": keep-alive comment\r\n\r\n",
        b'event: content_block_start\r\ndata: {"type":"content_block_start","index":0,\r\n'
        b'data: "content_block":{"type":"text","text":""}}\r\n\r\n',
        b'event: mystery_event\r\ndata: {"type":"mystery_event","x":1}\r\n\r\n',
        b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"future_delta","y":2}}\r\n\r\n',
        b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"ok"}}\r\n\r\n',
        b'event: content_block_stop\r\ndata: {"type":"content_block_stop","index":0}\r\n\r\n',
        b'event: message_delta\r\ndata: {"type":"message_delta",'
        b'"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1}}\r\n\r\n',
        b'event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r\n',
    ]

    base = await recorded_upstream("odd", frames)
    b = await balancer_factory(config_text(mock, ["odd"]).replace(mock.anthropic_url("odd"), base))
    streamed = await read_events(await b.post(msg()))
    names = [n for n, _ in streamed]
    assert "mystery_event" in names
    assert any(d.get("delta", {}).get("type") == "future_delta" for _, d in streamed)
    assert names[-1] == "message_stop"
    message = await (await b.post(msg("again", stream=False))).json()
    assert message["content"] == [{"type": "text", "text": "ok"}]
