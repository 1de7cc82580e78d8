"""Sharing across instances through a real redis-server (DESIGN.md section 7).

Two balancers in one test share one Redis: an identical request at the second instance
follows the first instance's upstream call (live, or replayed after it ended) instead of
making its own; failures are never shared with later requests; and when Redis is not there,
every instance simply serves its own requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from ccbalancer.mock import MockServer, Script
from tests.conftest import Balancer, config_text, msg, parse_frames, until

SHARED = "x-ccbalancer-shared"
TEXT = "Hello from the ccbalancer mock."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1, no persistence, stopped by its PID afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (scripts/test installs it with apt)")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):  # up to ~10 s
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}")
            subprocess.run(["sleep", "0.05"], check=True)
        else:
            pytest.fail("redis-server did not start listening")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def flushed(redis_url: str) -> AsyncIterator[str]:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    yield redis_url


def _config(mock: MockServer, url: str, extra: str = "") -> str:
    settings = f"deduplication: {{enabled: true}}\nredis: {{url: '{url}'}}\n" + extra
    return config_text(mock, ["a"], settings=settings)


async def _two(mock: MockServer, url: str, factory, extra: str = "") -> tuple[Balancer, Balancer]:
    first = await factory(_config(mock, url, extra))
    second = await factory(_config(mock, url, extra))
    return first, second


async def test_an_identical_request_at_another_instance_follows_the_call_in_flight(
    mock, balancer_factory, flushed
):
    mock.configure("a", Script(first_event_delay=0.3, delay=0.01))
    one, two = await _two(mock, flushed, balancer_factory)
    async with asyncio.TaskGroup() as group:
        leader = group.create_task(one.post(msg("share me")))
        await until(lambda: len(mock.requests("a")) == 1)
        follower = await two.post(msg("share me"))
    led = leader.result()
    assert (led.status, follower.status) == (200, 200)
    assert (led.headers[SHARED], follower.headers[SHARED]) == ("leader", "follower")
    assert follower.headers["x-provider-used"] == "a"
    led_body, followed_body = await led.read(), await follower.read()
    assert followed_body == led_body  # byte for byte, though it came through Redis
    events = parse_frames(followed_body)
    assert events[-1][0] == "message_stop"
    assert (
        "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta") == TEXT
    )
    assert len(mock.requests("a")) == 1


async def test_a_stream_longer_than_the_claim_stays_claimed_while_it_runs(
    mock, balancer_factory, flushed
):
    """The claim lasts ``deduplication_timeout`` (here 0.3 s) but is renewed by every batch
    the leader mirrors: a request arriving after the leader has been streaming for twice that
    still follows it. The stream's own pacing is the clock: the follower is sent once the
    leader has read 13 deltas the mock sends 50 ms apart (>= 0.6 s), no fixed sleep."""
    mock.configure("a", Script(events=24, delay=0.05))
    extra = "timeouts: {caching: {deduplication_timeout: 0.3}}\n"
    one, two = await _two(mock, flushed, balancer_factory, extra)
    leader = await one.post(msg())
    led = b""
    while led.count(b"event: content_block_delta") < 13:
        chunk = await leader.content.readany()
        assert chunk, "the leader's stream ended early"
        led += chunk
    follower = await two.post(msg())
    followed = await follower.read()
    led += await leader.read()
    assert follower.headers[SHARED] == "follower" and followed == led
    assert len(mock.requests("a")) == 1


async def test_a_finished_answer_is_replayed_at_another_instance(mock, balancer_factory, flushed):
    one, two = await _two(mock, flushed, balancer_factory)
    first = await one.post(msg())
    body = await first.read()
    assert first.headers[SHARED] == "leader"
    again = await two.post(msg())
    assert again.headers[SHARED] == "follower"
    assert await again.read() == body
    as_json = await two.post(msg(stream=False))  # a non-streaming duplicate, from the stream
    message = await as_json.json()
    assert as_json.status == 200 and message["content"][0]["text"] == TEXT
    assert message["id"] == parse_frames(body)[0][1]["message"]["id"]
    assert len(mock.requests("a")) == 1


async def test_a_failure_is_never_replayed_to_a_later_request_elsewhere(
    mock, balancer_factory, flushed
):
    mock.enqueue("a", Script(status=529, retry_after=1))
    one, two = await _two(mock, flushed, balancer_factory)
    failed = await one.post(msg())
    await failed.read()
    assert failed.status == 529
    retry = await two.post(msg())
    body = await retry.read()
    assert retry.status == 200 and retry.headers[SHARED] == "leader"
    assert parse_frames(body)[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 2


async def test_a_follower_makes_its_own_call_when_the_leader_sends_nothing_in_time(
    mock, balancer_factory, flushed
):
    mock.enqueue("a", Script(first_event_delay=3.0))  # the leader's call: silent for 3 s
    one = await balancer_factory(_config(mock, flushed, "timeouts: {first_event_timeout: 10}\n"))
    two = await balancer_factory(_config(mock, flushed, "timeouts: {first_event_timeout: 1}\n"))
    async with asyncio.TaskGroup() as group:
        stalled = group.create_task(one.post(msg()))
        await until(lambda: len(mock.requests("a")) == 1)
        own = await two.post(msg())
        body = await own.read()
    assert own.status == 200 and own.headers[SHARED] == "leader"
    assert parse_frames(body)[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 2
    late = stalled.result()  # the slow leader still answers its own client
    assert late.status == 200 and parse_frames(await late.read())[-1][0] == "message_stop"


async def test_without_redis_each_instance_serves_its_own_requests(mock, balancer_factory):
    closed = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    one, two = await _two(mock, closed, balancer_factory)
    for b in (one, two, one):
        resp = await b.post(msg())
        assert resp.status == 200
        assert parse_frames(await resp.read())[-1][0] == "message_stop"
    assert len(mock.requests("a")) == 1 + 1  # one call per instance; the repeat is cached locally


def _state(b: Balancer, provider: str) -> str:
    return b.runtime.health.get(provider).state(b.runtime.clock()).value


async def test_a_breaker_that_opens_at_one_instance_opens_at_the_others(
    mock, balancer_factory, flushed
):
    mock.enqueue("a", Script(status=529, retry_after=1))
    settings = (
        f"deduplication: {{enabled: true}}\nredis: {{url: '{flushed}'}}\n"
        "unhealthy_threshold: 1\nfailure_cooldown: 300\n"
    )
    text = config_text(mock, ["a", "b"], settings=settings)
    one, two = await balancer_factory(text), await balancer_factory(text)
    first = await one.post(msg("first"))  # a answers 529; the request fails over to b
    await first.read()
    assert first.status == 200 and first.headers["x-provider-used"] == "b"
    await until(lambda: _state(two, "a") == "cooling_down")
    providers = await (await two.session.get(two.url + "/providers")).json()
    (a,) = [p for p in providers["providers"] if p["name"] == "a"]
    assert a["state"] == "cooling_down" and a["cooldown_remaining_s"] > 200
    second = await two.post(msg("second"))  # goes straight to b: a is skipped here too
    await second.read()
    assert second.headers["x-provider-used"] == "b"
    assert len(mock.requests("a")) == 1
    late = await balancer_factory(text)  # an instance started afterwards learns it at start
    await until(lambda: _state(late, "a") == "cooling_down")
    assert _state(one, "a") == "cooling_down"  # its own opening did not come back to it


async def test_hundreds_of_concurrent_shared_requests_never_switch_redis_off(
    mock, balancer_factory, flushed, caplog
):
    """300 different questions, each asked at both instances at once: 600 requests in flight,
    300 followers reading Redis at the same time. redis-py's default pool of 100 connections
    ran out and that was taken for "Redis unavailable": sharing switched itself off."""
    caplog.set_level(logging.WARNING, logger="ccbalancer")
    count = 300
    mock.configure("a", Script(first_event_delay=1.0, events=8, delay=0.05))
    one, two = await _two(mock, flushed, balancer_factory)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def ask(b: Balancer, i: int) -> tuple[str, bytes]:
            async with session.post(
                b.url + "/v1/messages", json=msg(f"question {i}"), headers={"x-api-key": "k"}
            ) as resp:
                assert resp.status == 200
                return resp.headers[SHARED], await resp.read()

        async with asyncio.TaskGroup() as group:
            led = [group.create_task(ask(one, i)) for i in range(count)]
            await until(lambda: len(mock.requests("a")) == count, 60)
            followed = [group.create_task(ask(two, i)) for i in range(count)]
    roles = [task.result()[0] for task in led], [task.result()[0] for task in followed]
    assert roles == (["leader"] * count, ["follower"] * count)
    for a, b in zip(led, followed, strict=True):
        assert a.result()[1] == b.result()[1]
    assert len(mock.requests("a")) == count
    warnings = [r.msg for r in caplog.records if r.name == "ccbalancer"]
    assert not [w for w in warnings if isinstance(w, dict) and "redis" in str(w.get("event"))]


def _redis_events(caplog) -> list[str]:
    return [
        str(r.msg.get("event"))
        for r in caplog.records
        if r.name == "ccbalancer" and isinstance(r.msg, dict)
    ]


async def test_a_full_pool_is_busy_not_unavailable_and_sharing_goes_on(
    mock, balancer_factory, flushed, caplog
):
    """Every connection taken: a claim that cannot get one within ``pool_timeout`` is served
    locally and logged as busy, never as Redis unavailable, and Redis is used again at once.
    Followers and mirrors wait their turn: with two connections for twenty requests every
    answer is still whole."""
    caplog.set_level(logging.WARNING, logger="ccbalancer")
    extra = f"redis: {{url: '{flushed}', max_connections: 2, pool_timeout: 0.05}}\n"
    one, two = await _two(mock, flushed, balancer_factory, extra)
    link = one.runtime.remote._link
    async with link.use(), link.use():  # both connections in use, for as long as we like
        busy = await one.post(msg("while the pool is full"))
        assert busy.status == 200 and busy.headers[SHARED] == "leader"
        await busy.read()
    events = _redis_events(caplog)
    assert "redis_busy" in events and "redis_unavailable" not in events
    first = await one.post(msg("right after"))
    await first.read()
    again = await two.post(msg("right after"))
    assert again.headers[SHARED] == "follower"  # Redis was not switched off
    mock.configure("a", Script(first_event_delay=0.5, events=4, delay=0.05))
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(b.post(msg(f"q{i}"))) for i in range(10) for b in (one, two)]
    for task in tasks:
        answer = task.result()
        assert answer.status == 200
        assert parse_frames(await answer.read())[-1][0] == "message_stop"
    assert "redis_unavailable" not in _redis_events(caplog)


async def test_an_unreadable_entry_is_reported_as_such_not_as_redis_down(
    mock, balancer_factory, flushed, caplog
):
    """A head entry this version cannot parse (another version's, or damaged): the follower
    makes its own call and says why; Redis is not declared unavailable."""
    from redis.asyncio import Redis

    caplog.set_level(logging.WARNING, logger="ccbalancer")
    mock.enqueue("a", Script(first_event_delay=1.0))
    one, two = await _two(mock, flushed, balancer_factory)
    async with asyncio.TaskGroup() as group:
        leader = group.create_task(one.post(msg()))
        await until(lambda: len(mock.requests("a")) == 1)
        (key,) = one.runtime.hub.inflight
        client = Redis.from_url(flushed)
        await client.xadd(f"ccb:{key}:log", {b"k": b"head", b"p": b"a", b"h": b"{not json"})
        await client.aclose()
        own = await two.post(msg())
        await own.read()
    assert leader.result().status == 200 and own.status == 200
    assert own.headers[SHARED] == "leader"  # it asked the upstream itself
    events = _redis_events(caplog)
    assert "redis_bad_entry" in events and "redis_unavailable" not in events
