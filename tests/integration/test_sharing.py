"""Sharing identical requests through real sockets (DESIGN.md section 7).

One upstream call serves every identical request: followers in flight, retries from the cache.
The call belongs to the balancer, not to any client: a slow client only slows itself, a client
leaving cuts nobody else, and when every client has gone an uncommitted call stops at once
while a committed one lives on for ``orphan_grace``. Failures are never shared after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from ccbalancer.mock import MockServer, Script
from ccbalancer.sharing.broadcast import Broadcast
from tests.conftest import Balancer, config_text, msg, parse_frames, read_events, until

SHARED = "x-ccbalancer-shared"
# ~8 MB in 800 deltas of ~10 KB: twice what loopback TCP buffers (tcp_wmem max 4 MB by default)
# and aiohttp's write buffer hold for a client that stops reading, so its writer really blocks.
BIG_TEXT = "abcdefghi " * 800_000
BIG_EVENTS = 800


def sharing(extra: str = "", **dedup: object) -> str:
    """Settings with sharing on; ``dedup`` adds ``deduplication`` fields."""
    fields = ", ".join(f"{k}: {v}" for k, v in {"enabled": "true", **dedup}.items())
    return f"deduplication: {{{fields}}}\n" + extra


frames = parse_frames


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")


def the_call(b: Balancer) -> Broadcast:
    """The one in-flight call of a test."""
    (broadcast,) = b.runtime.hub.inflight.values()
    return broadcast


async def all_released(b: Balancer, mock: MockServer) -> None:
    """Every call ended, nothing registered, no upstream stream left open."""
    await until(lambda: b.runtime.hub.live == 0 and mock.active_streams == 0)
    assert b.runtime.hub.inflight == {}


async def read_until(resp: Any, needle: bytes) -> bytes:
    seen = b""
    async with asyncio.timeout(10):
        while needle not in seen:
            chunk = await resp.content.readany()
            assert chunk, f"stream ended before {needle!r}"
            seen += chunk
    return seen


def shared_count(b: Balancer, role: str) -> float:
    value = b.runtime.metrics.registry.get_sample_value("ccbalancer_shared_total", {"role": role})
    return value or 0.0


class SlowClient:
    """A client that reads only when told, over a socket with a tiny receive buffer: once the
    kernel buffers are full the balancer's writes to it really block (backpressure, not a
    sleep). HTTP/1.0, so the body is simply everything up to EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}

    @classmethod
    async def post(cls, b: Balancer, body: dict[str, Any], key: str = "sk-client-1") -> SlowClient:
        url = urlsplit(b.url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        payload = orjson.dumps(body)
        head = (
            f"POST /v1/messages HTTP/1.0\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nx-api-key: {key}\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        return cls(reader, writer)

    async def read_head(self) -> None:
        """The status line and headers: one read, then the client stops reading."""
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()

    async def read_rest(self) -> bytes:
        async with asyncio.timeout(30):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- one upstream call, many clients ---------------------------------------------------------


async def test_identical_concurrent_requests_share_one_upstream_call_and_identical_streams(
    mock, balancer_factory
):
    mock.configure("a", Script(first_event_delay=0.5, delay=0.01))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    n = 5

    async def one() -> tuple[str, bytes]:
        resp = await b.post(msg("share me"))
        assert resp.status == 200
        return resp.headers[SHARED], await resp.read()

    results = await asyncio.gather(*(one() for _ in range(n)))
    assert len(mock.requests("a")) == 1
    roles = sorted(role for role, _ in results)
    assert roles == ["follower"] * (n - 1) + ["leader"]
    bodies = {body for _, body in results}
    assert len(bodies) == 1
    events = frames(bodies.pop())
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert text_of(events) == "Hello from the ccbalancer mock."
    await all_released(b, mock)
    # counted when each request's record is finished, just after its last byte went out
    await until(lambda: shared_count(b, "follower") == n - 1)
    assert shared_count(b, "leader") == 1


async def test_followers_joining_before_the_first_byte_get_the_stream_live(mock, balancer_factory):
    """Followers that join while nothing has been produced yet still see each event as it
    arrives: the upstream stalls after its first delta and they must get that delta."""
    mock.configure(
        "a", Script(text="alpha beta gamma delta", events=4, first_event_delay=0.5, stall_after=4)
    )
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing(orphan_grace=0.2)))
    async with asyncio.TaskGroup() as group:
        leader = group.create_task(b.post(msg()))
        await asyncio.wait_for(mock.wait_requests("a", 1), 10)
        followers = [group.create_task(b.post(msg())) for _ in range(3)]
        await until(lambda: the_call(b).subscribers == 4)
        assert the_call(b).head is None  # all four joined before anything was produced
    responses = [leader.result()] + [f.result() for f in followers]
    assert [r.headers[SHARED] for r in responses] == ["leader"] + ["follower"] * 3
    for resp in responses:
        seen = await read_until(resp, b"text_delta")
        assert b"content_block_start" in seen
    assert mock.active_streams == 1 and not the_call(b).done  # live, not at the end
    for resp in responses:
        resp.close()
    await all_released(b, mock)
    assert len(mock.requests("a")) == 1


async def _slow_follower_run(
    mock: MockServer, b: Balancer
) -> tuple[bytes, SlowClient, Broadcast, int]:
    """A leader that reads everything and a follower that stops after the headers. Returns the
    leader's body, the paused follower, the call, and how many subscribers were still
    attached once the leader had finished."""
    mock.configure("a", Script(text=BIG_TEXT, events=BIG_EVENTS, first_event_delay=0.5))
    async with asyncio.TaskGroup() as group:
        leader_task = group.create_task(b.post(msg()))
        await asyncio.wait_for(mock.wait_requests("a", 1), 10)
        slow = await SlowClient.post(b, msg())
        await until(lambda: the_call(b).subscribers == 2)
        broadcast = the_call(b)
    await slow.read_head()
    assert slow.status == 200 and slow.headers[SHARED] == "follower"
    leader_body = await leader_task.result().read()
    await until(lambda: broadcast.subscribers == 1)  # the leader's handler is done too
    return leader_body, slow, broadcast, broadcast.subscribers


async def test_slow_follower_does_not_delay_the_leader(mock, balancer_factory):
    """The producer never awaits a client: while a follower has stopped reading (its socket
    full, its writer blocked), the upstream is read to the end and the leader gets the whole
    answer; the follower is still being served afterwards."""
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader_body, slow, broadcast, attached = await _slow_follower_run(mock, b)
    events = frames(leader_body)
    assert events[-1][0] == "message_stop" and "error" not in [n for n, _ in events]
    assert broadcast.done and mock.active_streams == 0  # the upstream was read to its end
    # ...while the follower's writer, still attached, had not written it all (it ends
    # only once its client has everything)
    assert attached == 1
    follower_body = await slow.read_rest()
    await slow.close()
    assert leader_body.startswith(follower_body)  # whatever it got is the same stream
    assert len(mock.requests("a")) == 1
    await all_released(b, mock)


async def test_slow_follower_still_gets_every_event_after_catching_up(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader_body, slow, _, _ = await _slow_follower_run(mock, b)
    follower_body = await slow.read_rest()
    await slow.close()
    assert frames(follower_body)[-1][0] == "message_stop"
    assert follower_body == leader_body


async def test_late_joiner_gets_the_same_stream_as_the_leader(mock, balancer_factory):
    """A follower that joins mid-stream gets the log so far, then the live events."""
    mock.configure("a", Script(events=30, delay=0.02))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader = await b.post(msg())
    head = b""
    async with asyncio.timeout(10):
        while head.count(b"text_delta") < 3:
            chunk = await leader.content.readany()
            assert chunk
            head += chunk
    call = the_call(b)
    assert not call.done
    late = await b.post(msg())
    assert late.headers[SHARED] == "follower"
    late_body = await late.read()
    leader_body = head + await leader.read()
    assert late_body == leader_body
    assert frames(late_body)[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 1
    await all_released(b, mock)


async def test_leader_disconnecting_mid_stream_does_not_cut_the_followers(mock, balancer_factory):
    mock.configure("a", Script(events=30, delay=0.03))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader = await b.post(msg())
    call = the_call(b)
    followers = [await b.post(msg()) for _ in range(2)]
    assert [f.headers[SHARED] for f in followers] == ["follower", "follower"]
    await read_until(leader, b"text_delta")
    leader.close()
    await until(lambda: call.subscribers == 2)
    assert not call.done  # the leader left while the answer was still coming
    bodies = [await f.read() for f in followers]
    assert bodies[0] == bodies[1]
    names = [n for n, _ in frames(bodies[0])]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "error" not in names
    assert names.count("content_block_delta") == 30
    assert len(mock.requests("a")) == 1
    assert b.runtime.health.get("a").failure_count == 0
    await all_released(b, mock)


@pytest.mark.parametrize("leader_streams", [True, False], ids=["streaming_leader", "json_leader"])
async def test_streaming_and_non_streaming_duplicates_share_one_call(
    leader_streams, mock, balancer_factory
):
    """A non-streaming client gets the accumulated Message of the shared stream (tool_use
    included, with the real message id); a streaming one gets the events."""
    mock.configure("a", Script(reply="tool_use", first_event_delay=0.5))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    async with asyncio.TaskGroup() as group:
        first = group.create_task(b.post(msg("run it", stream=leader_streams)))
        await asyncio.wait_for(mock.wait_requests("a", 1), 10)
        second = group.create_task(b.post(msg("run it", stream=not leader_streams)))
        await until(lambda: the_call(b).subscribers == 2)
    leader, follower = first.result(), second.result()
    assert (leader.headers[SHARED], follower.headers[SHARED]) == ("leader", "follower")
    streaming, plain = (leader, follower) if leader_streams else (follower, leader)
    events = await read_events(streaming)
    message = await plain.json()
    assert plain.status == 200 and plain.content_type == "application/json"
    start = next(d for n, d in events if n == "message_start")
    tool_start = next(d for n, d in events if n == "content_block_start")["content_block"]
    arguments = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert message["id"] == start["message"]["id"]
    (tool,) = [block for block in message["content"] if block["type"] == "tool_use"]
    assert tool["id"] == tool_start["id"] and tool["name"] == tool_start["name"]
    assert tool["input"] == orjson.loads(arguments)
    assert tool["input"]["command"] == "echo CCB_TOOL_OK"
    assert message["stop_reason"] == "tool_use"
    assert len(mock.requests("a")) == 1
    await all_released(b, mock)


@pytest.mark.parametrize("include", [False, True], ids=["max_tokens_ignored", "max_tokens_in_key"])
async def test_max_tokens_splits_sharing_only_when_configured(include, mock, balancer_factory):
    """Claude Code's non-streaming fallback caps max_tokens; by default it may still share."""
    mock.configure("a", Script(first_event_delay=0.5))
    setting = sharing(include_max_tokens_in_signature=str(include).lower())
    b = await balancer_factory(config_text(mock, ["a"], settings=setting))
    first, second = await asyncio.gather(
        b.post(msg(max_tokens=32000)), b.post(msg(stream=False, max_tokens=64000))
    )
    await first.read()
    await second.read()
    assert first.status == second.status == 200
    assert len(mock.requests("a")) == (2 if include else 1)
    await all_released(b, mock)


# -- completed answers -----------------------------------------------------------------------


async def test_retry_after_completion_is_served_from_the_cache(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    first = await b.post(msg())
    body = await first.read()
    assert first.headers[SHARED] == "leader"
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "cache"
    assert await retry.read() == body
    assert retry.headers["x-provider-used"] == "a"
    as_json = await b.post(msg(stream=False))
    assert as_json.headers[SHARED] == "cache"
    message = await as_json.json()
    assert message["content"][0]["text"] == "Hello from the ccbalancer mock."
    assert message["id"] == frames(body)[0][1]["message"]["id"]
    assert len(mock.requests("a")) == 1
    await until(lambda: shared_count(b, "cache") == 2)
    await all_released(b, mock)


@pytest.mark.parametrize("header", ["anthropic-beta", "anthropic-version"])
async def test_cached_answer_is_replayed_only_with_the_same_behaviour_headers(
    header, mock, balancer_factory
):
    """Claude Code's 400 fallbacks drop betas: such a retry is a different request."""
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    headers = {"anthropic-version": "2023-06-01", "anthropic-beta": "claude-code-20250219"}
    await (await b.post(msg(), headers=headers)).read()
    same = await b.post(msg(), headers=headers)
    await same.read()
    other = await b.post(msg(), headers={**headers, header: headers[header] + "-x"})
    await other.read()
    assert (same.headers[SHARED], other.headers[SHARED]) == ("cache", "leader")
    assert len(mock.requests("a")) == 2
    assert mock.requests("a")[-1].headers[header] == headers[header] + "-x"


async def test_retry_after_an_uncommitted_failure_goes_upstream_again(mock, balancer_factory):
    mock.enqueue("a", Script(status=529, retry_after=1))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    failed = await b.post(msg())
    await failed.read()
    assert failed.status == 529 and failed.headers[SHARED] == "leader"
    assert b.runtime.hub.inflight == {} and len(b.runtime.hub.cache) == 0
    retry = await b.post(msg())
    events = await read_events(retry)
    assert retry.status == 200 and retry.headers[SHARED] == "leader"
    assert events[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 2
    await all_released(b, mock)


async def test_retry_after_a_mid_stream_failure_gets_a_fresh_attempt_on_a_healthy_provider(
    mock, balancer_factory
):
    """The client saw event: error; its (non-streaming, as Claude Code does) retry must not be
    replayed the failure and must not go back to the provider that just failed."""
    mock.enqueue("a", Script(events=6, error_after=5))
    text = config_text(
        mock, ["a", "b"], settings=sharing("unhealthy_threshold: 1\nrecovery: {enabled: false}\n")
    )
    b = await balancer_factory(text)
    failed = await b.post(msg())
    names = [n for n, _ in await read_events(failed)]
    assert failed.status == 200 and names[-1] == "error"
    retry = await b.post(msg(stream=False, max_tokens=64000))
    assert retry.status == 200
    assert retry.headers[SHARED] == "leader" and retry.headers["x-provider-used"] == "b"
    message = await retry.json()
    assert message["stop_reason"] == "end_turn"
    assert (len(mock.requests("a")), len(mock.requests("b"))) == (1, 1)
    await all_released(b, mock)


async def test_different_inbound_keys_never_share(mock, balancer_factory):
    mock.configure("a", Script(first_event_delay=0.5))
    auth = "auth: {enabled: true, api_key: [sk-client-1, sk-client-2]}\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing(auth)))
    one, two = await asyncio.gather(
        b.post(msg(), headers={"x-api-key": "sk-client-1"}),
        b.post(msg(), headers={"x-api-key": "sk-client-2"}),
    )
    await one.read()
    await two.read()
    assert one.status == two.status == 200
    assert (one.headers[SHARED], two.headers[SHARED]) == ("leader", "leader")
    assert len(mock.requests("a")) == 2
    retry_two = await b.post(msg(), headers={"x-api-key": "sk-client-2"})
    assert retry_two.headers[SHARED] == "cache"
    assert await retry_two.read() == await two.read()  # its own answer, not the other key's
    assert len(b.runtime.hub.cache) == 2
    await all_released(b, mock)


# -- leaving -----------------------------------------------------------------------------------


async def test_uncommitted_call_is_cancelled_at_once_when_its_only_client_leaves(
    mock, balancer_factory
):
    """CLAUDE_CODE.md section 6: after a header timeout Claude Code re-sends the same bytes; joining
    the abandoned call would inherit its stall. The call stops at once (not after the grace)
    and the retry gets a fresh upstream call."""
    mock.enqueue("a", Script(first_event_delay=30))  # headers, then nothing for 30 s
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing(orphan_grace=30)))
    gone = await SlowClient.post(b, msg())
    await asyncio.wait_for(mock.wait_requests("a", 1), 10)
    await until(lambda: b.runtime.hub.live == 1 and the_call(b).subscribers == 1)
    await gone.close()
    await all_released(b, mock)
    health = b.runtime.health.get("a")
    assert health.in_flight == 0 and health.failure_count == 0
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "leader"
    assert (await read_events(retry))[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 2


async def test_committed_call_outlives_its_last_client_and_a_retry_joins_it(mock, balancer_factory):
    mock.configure("a", Script(events=40, delay=0.03))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader = await b.post(msg())
    call = the_call(b)
    await read_until(leader, b"text_delta")
    leader.close()
    await until(lambda: call.subscribers == 0)
    assert b.runtime.hub.live == 1 and mock.active_streams == 1  # still running, unowned
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "follower"
    events = frames(await retry.read())
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert [n for n, _ in events].count("content_block_delta") == 40
    assert len(mock.requests("a")) == 1
    await all_released(b, mock)


async def test_committed_call_that_ends_in_the_grace_is_replayed_from_the_cache(
    mock, balancer_factory
):
    mock.configure("a", Script(events=10, delay=0.02))
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing()))
    leader = await b.post(msg())
    await read_until(leader, b"text_delta")
    leader.close()
    await all_released(b, mock)
    assert len(b.runtime.hub.cache) == 1
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "cache"
    events = frames(await retry.read())
    assert [n for n, _ in events].count("content_block_delta") == 10
    assert events[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 1


async def test_orphan_is_cancelled_after_the_grace_and_its_provider_slot_released(
    mock, balancer_factory
):
    mock.enqueue("a", Script(events=4, stall_after=4))  # first delta, then silence
    b = await balancer_factory(config_text(mock, ["a"], settings=sharing(orphan_grace=1.0)))
    leader = await b.post(msg())
    call = the_call(b)
    await read_until(leader, b"text_delta")
    leader.close()
    await until(lambda: call.subscribers == 0)
    assert b.runtime.hub.live == 1 and mock.active_streams == 1  # within the grace
    await all_released(b, mock)
    health = b.runtime.health.get("a")
    assert health.in_flight == 0 and health.failure_count == 0  # leaving is nobody's fault
    assert len(b.runtime.hub.cache) == 0  # an abandoned answer is not an answer
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "leader"
    assert (await read_events(retry))[-1][0] == "message_stop"


# -- bounds ------------------------------------------------------------------------------------


async def test_slow_follower_past_the_log_cap_is_cut_with_an_error_event(mock, balancer_factory):
    """Memory per call is bounded; a follower that falls out of the retained window is told
    so with an event: error, never handed a stream with a hole in it."""
    b = await balancer_factory(
        config_text(mock, ["a"], settings=sharing(max_stream_bytes=1_000_000))
    )
    leader_body, slow, broadcast, _ = await _slow_follower_run(mock, b)
    assert broadcast.trimmed and broadcast.bytes <= 1_000_000
    names = [n for n, _ in frames(leader_body)]
    assert names[-1] == "message_stop" and "error" not in names  # the leader kept up
    follower_body = await slow.read_rest()
    await slow.close()
    events = frames(follower_body)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    cut = follower_body.rindex(b"event: error")
    assert leader_body.startswith(follower_body[:cut])  # a prefix, then the error: no hole
    await all_released(b, mock)
    assert len(b.runtime.hub.cache) == 0  # a trimmed log cannot be replayed
    mock.configure("a", Script())
    retry = await b.post(msg())
    assert retry.headers[SHARED] == "leader"
    await retry.read()
    assert len(mock.requests("a")) == 2


async def test_calls_older_than_the_join_window_are_not_joined(mock, balancer_factory):
    mock.configure("a", Script(events=20, delay=0.05))
    setting = sharing("timeouts: {caching: {deduplication_timeout: 30}}\n")
    b = await balancer_factory(config_text(mock, ["a"], settings=setting), manual_clock=True)
    first = await b.post(msg())
    b.clock.now += 29
    second = await b.post(msg())
    b.clock.now += 2
    third = await b.post(msg())
    roles = [r.headers[SHARED] for r in (first, second, third)]
    assert roles == ["leader", "follower", "leader"]
    for resp in (first, second, third):
        await resp.read()
    assert len(mock.requests("a")) == 2
    await all_released(b, mock)


async def test_nothing_is_left_in_memory_after_all_streams_end(mock, balancer_factory):
    """Successes, failures, a client leaving before and after commit: afterwards no call is
    registered or running, and once the TTL has passed the cache is empty too."""
    extra = "cache: {ttl: 60, max_bytes: 1000000}\nunhealthy_threshold: 10\n"
    setting = sharing(extra, orphan_grace=0.2)
    b = await balancer_factory(config_text(mock, ["a"], settings=setting), manual_clock=True)
    hub = b.runtime.hub
    ok = await b.post(msg("ok"))
    await ok.read()
    mock.enqueue("a", Script(status=500))
    failed = await b.post(msg("fails"))
    await failed.read()
    mock.enqueue("a", Script(events=6, error_after=5))
    mid = await b.post(msg("fails mid-stream"))
    await mid.read()
    mock.enqueue("a", Script(events=4, stall_after=4))
    committed = await b.post(msg("left after commit"))
    await read_until(committed, b"text_delta")
    committed.close()
    mock.enqueue("a", Script(first_event_delay=30))
    early = await SlowClient.post(b, msg("left before commit"))
    await asyncio.wait_for(mock.wait_requests("a", 5), 10)
    await early.close()
    await all_released(b, mock)
    assert len(hub.cache) == 1  # only the success
    assert b.runtime.health.get("a").in_flight == 0
    registry = b.runtime.metrics.registry
    await until(lambda: registry.get_sample_value("ccbalancer_active_subscribers") == 0)
    assert registry.get_sample_value("ccbalancer_active_streams") == 0
    b.clock.now += 60
    hub.sweep()  # what the runtime's sweeper does every few seconds
    assert len(hub.cache) == 0 and hub.cache.bytes == 0
    assert hub.inflight == {} and hub.live == 0


# -- sharing off -------------------------------------------------------------------------------


async def test_deduplication_disabled_turns_all_sharing_off(mock, balancer_factory):
    mock.configure("a", Script(first_event_delay=0.5))
    b = await balancer_factory(config_text(mock, ["a"]))  # config_text turns sharing off
    responses = await asyncio.gather(*(b.post(msg()) for _ in range(3)))
    for resp in responses:
        await resp.read()
        assert resp.status == 200 and SHARED not in resp.headers
    assert len(mock.requests("a")) == 3
    again = await b.post(msg())
    await again.read()
    assert len(mock.requests("a")) == 4  # no replay either
    assert len(b.runtime.hub.cache) == 0
    await until(lambda: shared_count(b, "none") == 4)
    assert shared_count(b, "leader") == shared_count(b, "follower") == shared_count(b, "cache") == 0
    await all_released(b, mock)


async def test_without_sharing_a_client_leaving_stops_its_call_at_once(mock, balancer_factory):
    """Nobody can join or replay an unshared call, so it must not run on for the grace."""
    mock.configure("a", Script(events=200, delay=0.05))  # ten seconds of stream
    unshared = "deduplication: {enabled: false, orphan_grace: 30}\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=unshared))
    resp = await b.post(msg())
    await read_until(resp, b"text_delta")
    resp.close()
    await until(lambda: b.runtime.hub.live == 0 and mock.active_streams == 0, seconds=3)
    assert b.runtime.health.get("a").in_flight == 0
