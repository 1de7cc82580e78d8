"""Budgets that hold across instances (issue 18): two balancers on one real redis-server share
each client's counts; without Redis reachable, each instance still holds its own."""

from __future__ import annotations

import asyncio
import socket

import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events
from tests.integration.test_redis_sharing import flushed, redis_url  # noqa: F401 (fixtures)

ALICE = "sk-alice-0123456789abcdef"
MODEL = "claude-haiku-4-5"  # $1 input, $5 output per million tokens
# The mock reports 25 input tokens and 7 output tokens for its default answer: $0.00006.
COST = 25 * 1e-6 + 7 * 5e-6
BUDGET = 0.00027  # four answers leave it unspent, the fifth spends it


def _config(mock, url: str, limits: str) -> str:
    text = config_text(mock, ["a"], settings=f"redis: {{url: '{url}'}}\n")
    return text + f"clients:\n  - {{name: alice, key: {ALICE}, {limits}}}\n"


async def _post(b, text: str):
    resp = await b.post(msg(text, model=MODEL), {"x-api-key": ALICE})
    body = await resp.read()
    return resp.status, body


async def test_two_instances_hold_one_shared_budget_under_concurrent_load(
    mock,
    balancer_factory,
    flushed,  # noqa: F811
):
    from redis.asyncio import Redis

    one = await balancer_factory(_config(mock, flushed, f"usd_per_day: {BUDGET}"))
    two = await balancer_factory(_config(mock, flushed, f"usd_per_day: {BUDGET}"))
    redis = Redis.from_url(flushed, decode_responses=True)
    served = 0
    try:
        for wave in range(10):  # four at a time, two at each instance, until both refuse
            results = await asyncio.gather(
                *(_post(b, f"wave {wave} request {i}") for i, b in enumerate([one, two] * 2))
            )
            statuses = [status for status, _ in results]
            assert set(statuses) <= {200, 429}
            served += statuses.count(200)
            if statuses.count(429) == 4:
                break
            # the answers' usage is in Redis before the next wave: only a wave is in flight
            await _until_charged(redis, served)
        # one budget: each instance alone would have let five through (ten together);
        # shared, it is passed by at most the requests in flight when it ran out (a wave)
        assert 5 <= served <= 5 + 4 - 1
        assert len(mock.requests("a")) == served
        for b in (one, two):
            status, body = await _post(b, "after")
            assert status == 429 and b"usd_per_day" in body
        await _until_charged(redis, served)
        day = await _day(redis)
    finally:
        await redis.aclose()
    assert int(day["requests"]) == served  # the refused ones were never admitted
    assert float(day["usd"]) == pytest.approx(served * COST)
    assert int(day["tokens"]) == served * 32


async def _day(redis) -> dict[str, str]:
    keys = [k async for k in redis.scan_iter("ccb:acct:alice:d:*")]
    assert len(keys) == 1
    return await redis.hgetall(keys[0])


async def _until_charged(redis, served: int) -> None:
    for _ in range(200):
        day = await _day(redis)
        usd, requests = float(day.get("usd") or 0), int(day.get("requests") or 0)
        if usd >= served * COST * 0.999 and requests >= served:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the usage of {served} answers never reached Redis")


async def test_max_concurrency_counts_the_requests_in_flight_at_every_instance(
    mock,
    balancer_factory,
    flushed,  # noqa: F811
):
    one = await balancer_factory(_config(mock, flushed, "max_concurrency: 1"))
    two = await balancer_factory(_config(mock, flushed, "max_concurrency: 1"))
    mock.enqueue("a", Script(delay=0.05, events=20))
    slow = await one.post(msg("slow", model=MODEL), {"x-api-key": ALICE})
    assert slow.status == 200
    status, body = await _post(two, "elsewhere")
    assert status == 429 and b"max_concurrency" in body
    assert (await read_events(slow))[-1][0] == "message_stop"
    for _ in range(50):  # the slot is freed in Redis just after the stream ends
        status, _ = await _post(two, "now")
        if status == 200:
            break
        await asyncio.sleep(0.05)
    assert status == 200


async def test_without_redis_each_instance_still_holds_the_budget_on_its_own(
    mock, balancer_factory
):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    b = await balancer_factory(_config(mock, url, "usd_per_day: 0.00005"))
    assert (await _post(b, "first"))[0] == 200
    status, body = await _post(b, "second")
    assert status == 429 and b"usd_per_day" in body


async def test_concurrency_leases_live_while_renewed_and_free_themselves_when_not(
    flushed,  # noqa: F811
):
    """An instance renews the slots of its requests in flight; one that died (stopped
    renewing) holds them only until their lease ends."""
    import time

    from ccbalancer.accounting import Client
    from ccbalancer.accounting.budgets import windows
    from ccbalancer.accounting.shared import SharedLedger
    from ccbalancer.config.clients import ClientConfig
    from ccbalancer.redislink import RedisLink
    from ccbalancer.tasks import TaskOwner

    warnings: list[str] = []

    def warn(event: str, detail: str) -> None:
        warnings.append(f"{event}: {detail}")

    links = [
        RedisLink(flushed, max_connections=8, pool_timeout=1, connect_timeout=2, read_timeout=2)
        for _ in range(2)
    ]  # two instances, each with its own link
    alive = SharedLedger(links[0], warn, lease_ms=1000, renew_every=0.1)
    other = SharedLedger(links[1], warn, lease_ms=1000)
    alice = Client("alice", ClientConfig(name="alice", key=ALICE, max_concurrency=1))
    owner = TaskOwner("test")
    try:
        assert await alive.admit(alice, "req-held", windows(time.time())) is None
        owner.spawn(alive.renew_leases(), "renew")
        await asyncio.sleep(2.5)  # two and a half leases, renewed
        refused = await other.admit(alice, "req-other", windows(time.time()))
        assert refused is not None and refused.limit == "max_concurrency"
        await owner.close()  # the instance "dies": no more renewals
        for _ in range(100):  # bounded: the lease ends within a second
            if await other.admit(alice, "req-later", windows(time.time())) is None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the dead instance's slot never freed")
    finally:
        await owner.close()
        await alive.close()
        await other.close()
        for link in links:
            await link.close()
    assert not warnings
