"""Real-time passthrough: events reach the client as they arrive, bytes unchanged, in order."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from ccbalancer.mock import Script
from ccbalancer.relay.call import Call
from tests.conftest import config_text, msg, read_events, until

FIXTURES = Path(__file__).parent.parent / "fixtures"


async def test_first_event_reaches_client_while_upstream_is_still_sending(mock, balancer_factory):
    """The typewriter effect: the original balancer once delivered everything at the end.
    Here the upstream stalls after its first text delta and never finishes; the client must
    still receive that delta."""
    mock.configure("a", Script(text="alpha beta gamma delta", events=4, stall_after=4))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    assert resp.status == 200
    seen = b""
    async with asyncio.timeout(10):
        while b"text_delta" not in seen:
            chunk = await resp.content.readany()
            assert chunk, "stream ended before the first delta"
            seen += chunk
    assert mock.active_streams == 1  # the upstream is still open (stalled), not finished
    resp.close()


async def test_each_event_is_delivered_before_the_next_is_sent(mock, balancer_factory):
    """With a gap between upstream events, the client sees the events one by one."""
    mock.configure("a", Script(text="one two three four five", events=5, delay=0.15))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    arrivals: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    buffer = b""
    async with asyncio.timeout(20):
        while True:
            chunk = await resp.content.readany()
            if not chunk:
                break
            buffer += chunk
            arrivals.append((loop.time(), buffer.count(b"text_delta")))
    counts = [c for _, c in arrivals]
    # deltas arrived in separate reads: at some read exactly 1, later 2, ... (never all at once)
    for k in range(1, 6):
        assert k in counts, f"delta {k} never arrived on its own: {counts}"


async def test_http11_chunks_are_well_formed_and_each_paced_event_is_its_own(
    mock, balancer_factory
):
    """Events written straight from the producer carry their own chunk framing. Read over a
    raw socket and decoded strictly, every chunk is whole events (never a split one), each
    paced delta arrives in a chunk of its own, and the body ends with the terminal chunk."""
    mock.configure("a", Script(text="one two three four five", events=5, delay=0.05))
    b = await balancer_factory(config_text(mock, ["a"]))
    url = urlsplit(b.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    payload = orjson.dumps(msg())
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-api-key: sk-client-1\r\nContent-Length: %d\r\n\r\n%b" % (len(payload), payload)
    )
    chunks: list[bytes] = []
    async with asyncio.timeout(20):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        assert head.startswith("http/1.1 200") and "transfer-encoding: chunked" in head
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
            data = await reader.readexactly(size + 2)
            assert data[-2:] == b"\r\n", "chunk data not followed by CRLF"
            if size == 0:
                break
            chunks.append(data[:-2])
    writer.close()
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)
    deltas = [chunk.count(b"text_delta") for chunk in chunks if b"text_delta" in chunk]
    assert deltas == [1] * 5
    names = [line[7:] for line in b"".join(chunks).split(b"\n") if line.startswith(b"event: ")]
    assert names[0] == b"message_start" and names[-1] == b"message_stop"


async def test_passthrough_is_byte_exact(balancer_factory, mock, recorded_upstream):
    """A recorded Anthropic stream comes out of the balancer byte for byte."""
    recorded = (FIXTURES / "mock-tool-use-stream.sse").read_bytes()
    # odd-sized TCP writes split events anywhere
    writes = [recorded[i : i + 97] for i in range(0, len(recorded), 97)]
    base = await recorded_upstream("rec", writes, {"request-id": "req_rec_1"})
    b = await balancer_factory(config_text(mock, ["rec"]).replace(mock.anthropic_url("rec"), base))
    resp = await b.post(msg())
    body = await resp.read()
    assert resp.status == 200
    assert body == recorded
    assert resp.headers["request-id"] == "req_rec_1"
    assert resp.headers["x-provider-used"] == "rec"


async def test_two_hundred_events_arrive_complete_and_in_order(mock, balancer_factory):
    mock.configure("a", Script(stamp=True, events=200))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    events = await read_events(resp)
    texts = [d["delta"]["text"] for n, d in events if n == "content_block_delta"]
    seqs = [int(t.split(":")[0]) for t in texts]
    assert seqs == list(range(len(seqs))) or seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == 200
    names = [n for n, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]


async def test_non_streaming_client_gets_the_accumulated_message(mock, balancer_factory):
    mock.configure("a", Script(reply="thinking_tool"))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg(stream=False))
    assert resp.status == 200
    assert resp.content_type == "application/json"
    message = await resp.json()
    assert message["type"] == "message"
    assert message["id"].startswith("msg_")
    assert [block["type"] for block in message["content"]] == [
        "redacted_thinking",
        "thinking",
        "tool_use",
    ]
    assert (
        message["content"][2]["input"]
        == {
            "command": "echo CCB_TOOL_OK",
            "description": message["content"][2]["input"].get("description"),
        }
        or message["content"][2]["input"]["command"] == "echo CCB_TOOL_OK"
    )
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] > 0
    # the upstream was asked to stream even though the client did not
    assert mock.requests("a")[-1].body["stream"] is True


async def test_non_streaming_client_of_a_paced_stream_gets_every_delta(mock, balancer_factory):
    """Events that arrive one by one are added to the Message as they are published (the
    producer feeds the parked accumulator); the answer is the whole text, in order."""
    text = "one two three four five six"
    mock.configure("a", Script(text=text, events=6, delay=0.03))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg(stream=False))
    assert resp.status == 200
    message = await resp.json()
    assert [block["type"] for block in message["content"]] == ["text"]
    assert message["content"][0]["text"].split() == text.split()
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] > 0


async def test_upstream_headers_and_query_are_forwarded_and_hop_by_hop_dropped(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.session.post(
        b.url + "/v1/messages?beta=true",
        json=msg(),
        headers={
            "x-api-key": "sk-client-1",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            "x-claude-code-session-id": "sess-1",
            "proxy-authorization": "Basic c2VjcmV0",
            "te": "trailers",
        },
    )
    await resp.read()
    assert resp.status == 200
    assert resp.headers["x-provider-used"] == "a"
    assert resp.headers["request-id"].startswith("req_mock_")
    seen = mock.requests("a")[-1]
    assert seen.query == "beta=true"
    assert seen.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["x-api-key"] == "sk-prov-a-secret"  # the provider's key, not the client's
    assert "proxy-authorization" not in seen.headers
    assert "te" not in seen.headers


async def test_route_model_mapping_and_forced_provider(mock, balancer_factory):
    text = config_text(
        mock, ["a", "b"], routes={"*sonnet*": [("a", "mapped-model"), ("b", "passthrough")]}
    )
    b = await balancer_factory(text)
    resp = await b.post(msg())
    await resp.read()
    assert mock.requests("a")[-1].body["model"] == "mapped-model"
    resp = await b.post(msg("force", provider="b"))
    await resp.read()
    assert resp.headers["x-provider-used"] == "b"
    body = mock.requests("b")[-1].body
    assert body["model"] == "claude-sonnet-4-5"
    assert "provider" not in body


async def test_stream_ending_after_message_delta_gets_message_stop_added(mock, balancer_factory):
    mock.configure("a", Script(drop="message_stop"))
    b = await balancer_factory(config_text(mock, ["a"]))
    events = await read_events(await b.post(msg()))
    assert [n for n, _ in events][-2:] == ["message_delta", "message_stop"]


async def test_crlf_and_comment_framing_still_reaches_the_client(mock, balancer_factory):
    mock.configure("a", Script(line_ending="crlf", comments=True, split_data=True))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg(stream=False))
    message = await resp.json()
    assert message["content"][0]["text"] == "Hello from the ccbalancer mock."


async def test_client_disconnect_mid_stream_releases_the_upstream(mock, balancer_factory):
    mock.configure("a", Script(events=50, delay=0.05))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    async with asyncio.timeout(10):
        while b"text_delta" not in await resp.content.readany():
            pass
    resp.close()
    await until(lambda: not (b.runtime.hub.live or mock.active_streams))
    health = b.runtime.health.get("a")
    assert health.in_flight == 0
    assert health.failure_count == 0  # a client leaving is never the provider's fault


async def test_a_committed_stream_no_longer_holds_the_request_body(mock, balancer_factory):
    """Claude Code requests are often hundreds of KB and streams last minutes: once an attempt
    has committed no other can start, so the call lets go of the body while the stream goes on."""
    mock.configure("a", Script(events=20, delay=0.05))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg("padding " * 20_000))
    async with asyncio.timeout(10):
        while b"text_delta" not in await resp.content.readany():
            pass
    request_id = resp.headers["x-ccbalancer-request-id"]
    (call,) = [o for o in gc.get_objects() if isinstance(o, Call) and o.request_id == request_id]
    assert mock.active_streams == 1  # the stream is still going
    assert call.body == {} and call.headers == {}
    await resp.read()
