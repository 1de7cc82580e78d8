"""The relay over the in-memory transport: candidates, commit, deadlines and health release,
as the test writes each upstream's bytes and moves the clock. No sockets, no sleeps."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from ccbalancer.balance import Planner
from ccbalancer.config import parse_config
from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.openai import OpenAIDialect
from ccbalancer.errors import UpstreamConnectError
from ccbalancer.relay.call import Call
from ccbalancer.relay.relay import Relay
from ccbalancer.relay.transport import MemoryCall, MemoryTransport
from ccbalancer.sharing.broadcast import Broadcast, State
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry
from tests.conftest import Clock, parse_frames, settle

KEY = "sk-prov-secret-key-0123"
CONFIG = f"""
providers:
  - {{name: a, type: anthropic, base_url: "http://a.invalid", auth_value: "{KEY}"}}
  - {{name: b, type: anthropic, base_url: "http://b.invalid", auth_value: "sk-b-other-key"}}
model_routes:
  "*": [{{provider: a}}, {{provider: b}}]
settings:
  unhealthy_threshold: 1
  timeouts: {{first_event_timeout: 60, streaming: {{read_timeout: 120}}}}
"""

START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":'
    b'"message","role":"assistant","model":"m","content":[],"stop_reason":null,'
    b'"usage":{"input_tokens":11,"output_tokens":1}}}\n\n'
)
PING = b'event: ping\ndata: {"type":"ping"}\n\n'
BLOCK = (
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
DELTA = (
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":9}}\n\n'
)
END = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def text(value: str) -> bytes:
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"%s"}}\n\n' % value.encode()
    )


@dataclass
class Rig:
    relay: Relay
    transport: MemoryTransport
    health: HealthRegistry
    clock: Clock
    broadcast: Broadcast
    call: Call
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the relay for one request (after the test planned what the upstreams do)."""
        produce = self.relay.produce(self.call, self.broadcast)
        self.task = asyncio.get_running_loop().create_task(produce)

    async def opened(self) -> MemoryCall:
        async with asyncio.timeout(5):
            return await self.transport.opened()

    async def done(self) -> None:
        assert self.task is not None
        async with asyncio.timeout(5):
            await self.task

    def frames(self) -> list[tuple[str, dict[str, object]]]:
        return parse_frames(b"".join(self.broadcast.get(i).raw for i in range(self.broadcast.end)))


@pytest.fixture
async def rig() -> Rig:
    config = parse_config(CONFIG)
    clock = Clock()
    health = HealthRegistry(HealthPolicy.from_settings(config.settings), clock)
    transport = MemoryTransport()
    relay = Relay(
        transport,
        Planner(health),
        health,
        {"anthropic": AnthropicDialect(), "openai": OpenAIDialect()},
        scrub=lambda t: t.replace(KEY, "***"),
        scheduler=clock,
    )
    call = Call(config, {"model": "m", "messages": []}, "m", "", {}, "", "s1", None, "req_1")
    rig = Rig(relay, transport, health, clock, Broadcast(None, 1 << 20, 0.0), call)
    yield rig
    if rig.task is not None:
        rig.task.cancel()


async def test_a_refused_connection_fails_over_and_counts_against_that_provider(rig: Rig) -> None:
    rig.transport.refuse("a", UpstreamConnectError("a", "connection refused"))
    rig.start()
    b = await rig.opened()
    b.send(START + BLOCK + text("hi") + STOP + DELTA + END)
    await rig.done()
    assert rig.broadcast.state is State.FINISHED and rig.broadcast.head.provider == "b"
    outcome = rig.broadcast.outcome
    assert [(x.provider, x.outcome) for x in outcome.attempts] == [("a", "failover"), ("b", "ok")]
    a, ok = rig.health.get("a"), rig.health.get("b")
    assert (a.failures, a.in_flight, ok.failures, ok.in_flight) == (1, 0, 0, 0)
    assert outcome.usage.input_tokens == 11 and outcome.usage.output_tokens == 9


async def test_nothing_within_the_first_event_timeout_fails_over_invisibly(rig: Rig) -> None:
    rig.start()
    a = await rig.opened()
    await settle()
    rig.clock.advance(59.9)
    await settle()
    assert not a.closed and len(rig.transport.sent) == 1
    rig.clock.advance(0.1)
    b = await rig.opened()
    assert a.closed
    assert rig.broadcast.state is State.WAITING  # the client has seen nothing
    b.send(START + BLOCK + text("hi") + STOP + DELTA + END)
    await rig.done()
    assert rig.broadcast.outcome.attempts[0].detail == "first_event timeout after 60s"
    assert rig.health.get("a").failures == 1


async def test_pings_do_not_stretch_the_wait_for_content(rig: Rig) -> None:
    rig.start()
    a = await rig.opened()
    a.send(START)
    await settle()
    for _ in range(11):
        rig.clock.advance(10)
        a.send(PING)
        await settle()
    rig.clock.advance(10)  # 120 s after message_start, pings all along
    b = await rig.opened()
    assert a.closed
    b.send(START + BLOCK + STOP + DELTA + END)
    await rig.done()
    assert rig.broadcast.head.provider == "b"
    assert rig.broadcast.outcome.attempts[0].detail == "first_content timeout after 120s"


async def test_pings_alone_after_the_commit_end_the_stream_with_an_error_event(rig: Rig) -> None:
    rig.start()
    a = await rig.opened()
    a.send(START + BLOCK + text("half"))
    await settle()
    assert rig.broadcast.state is State.COMMITTED
    for _ in range(12):
        rig.clock.advance(10)
        a.send(PING)
        await settle()
    await rig.done()
    names = [name for name, _ in rig.frames()]
    assert names[-1] == "error" and names.count("ping") == 11  # the 12th came too late
    failure = rig.broadcast.failure
    assert failure is not None and failure.committed and "idle timeout" in failure.message
    assert rig.health.get("a").failures == 1 and rig.health.get("a").in_flight == 0
    assert len(rig.transport.sent) == 1  # no second attempt after the commit


async def test_content_keeps_a_committed_stream_alive_past_read_timeout(rig: Rig) -> None:
    rig.start()
    a = await rig.opened()
    a.send(START + BLOCK)
    await settle()
    for n in range(30):  # 300 s of text, a delta every 10 s
        rig.clock.advance(10)
        a.send(text(str(n)))
        await settle()
    a.send(STOP + DELTA + END)
    await rig.done()
    assert rig.broadcast.succeeded and rig.health.get("a").failures == 0


async def test_a_client_error_is_returned_as_is_and_neutral_for_health(rig: Rig) -> None:
    a = rig.transport.respond("a", 400, {"content-type": "application/json"})
    a.send(b'{"type":"error","error":{"type":"invalid_request_error","message":"bad"}}')
    a.end()
    rig.start()
    await rig.done()
    failure = rig.broadcast.failure
    assert failure is not None and (failure.status, failure.message) == (400, "bad")
    assert len(rig.transport.sent) == 1
    health = rig.health.get("a")
    assert (health.failures, health.requests, health.in_flight) == (0, 1, 0)


async def test_every_byte_a_client_gets_from_an_upstream_is_scrubbed(rig: Rig) -> None:
    """An upstream that echoes the key (here: in its returned header and its mid-stream
    error) never gets it to the client."""
    a = rig.transport.respond(
        "a", 200, {"content-type": "text/event-stream", "request-id": f"req {KEY}"}
    )
    a.send(START + BLOCK + text("hi"))
    a.send(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"bad key %s"}}\n\n' % KEY.encode()
    )
    rig.start()
    await rig.done()
    head = rig.broadcast.head
    assert head is not None and head.headers["request-id"] == "req ***"
    name, frame = rig.frames()[-1]
    assert name == "error" and frame["error"] == {
        "type": "overloaded_error",
        "message": "bad key ***",
    }
    failure = rig.broadcast.failure
    assert failure is not None and KEY not in failure.message


async def test_cancellation_releases_health_neutrally(rig: Rig) -> None:
    rig.start()
    a = await rig.opened()
    a.send(START + BLOCK)
    await settle()
    assert rig.task is not None
    rig.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rig.task
    health = rig.health.get("a")
    assert (health.in_flight, health.failures, health.requests) == (0, 0, 1)
    assert a.closed


async def test_each_upstream_response_is_shown_to_the_headers_hook_before_anything_else(
    rig: Rig,
) -> None:
    """The rate-limit room hook (issue 17): once per response, the error that failed over
    included, with its status and every header, before the relay acts on the answer."""
    seen: list[tuple[str, int, str, int]] = []

    def hook(provider: str, status: int, headers: list[tuple[str, str]]) -> None:
        remaining = next(value for name, value in headers if "remaining" in name)
        seen.append((provider, status, remaining, rig.health.get(provider).failures))

    rig.relay.on_headers = hook
    refusal = rig.transport.respond("a", 429, {"x-ratelimit-remaining-requests": "0"})
    refusal.send(b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}')
    rig.transport.respond("b", 200, {"anthropic-ratelimit-requests-remaining": "7"})
    rig.start()
    await rig.opened()
    b = await rig.opened()
    b.send(START + BLOCK + text("hi") + STOP + DELTA + END)
    await rig.done()
    # a's 429 was seen before it counted against a (failures still 0 then)
    assert seen == [("a", 429, "0", 0), ("b", 200, "7", 0)]
    assert rig.health.get("a").failures == 1
    assert rig.broadcast.head is not None and rig.broadcast.head.provider == "b"


HEDGED = CONFIG.replace(
    "  unhealthy_threshold: 1\n", "  unhealthy_threshold: 1\n  hedge_after: 5\n"
)


@pytest.fixture
async def hedged() -> Rig:
    config = parse_config(HEDGED)
    clock = Clock()
    health = HealthRegistry(HealthPolicy.from_settings(config.settings), clock)
    transport = MemoryTransport()
    relay = Relay(
        transport, Planner(health), health, {"anthropic": AnthropicDialect()}, scheduler=clock
    )
    call = Call(config, {"model": "m", "messages": []}, "m", "", {}, "", "s1", None, "req_1")
    rig = Rig(relay, transport, health, clock, Broadcast(None, 1 << 20, 0.0), call)
    yield rig
    if rig.task is not None:
        rig.task.cancel()


async def test_a_slow_first_candidate_is_hedged_and_the_first_to_commit_wins(hedged: Rig) -> None:
    hedged.start()
    a = await hedged.opened()
    hedged.clock.advance(4.9)
    await settle()
    assert len(hedged.transport.sent) == 1  # not yet
    hedged.clock.advance(0.1)
    b = await hedged.opened()
    b.send(START + BLOCK + text("fast"))
    await settle()
    assert a.closed  # the loser's upstream request is cancelled at once
    b.send(STOP + DELTA + END)
    await hedged.done()
    assert hedged.broadcast.head is not None and hedged.broadcast.head.provider == "b"
    records = [(x.provider, x.outcome, x.hedged) for x in hedged.broadcast.outcome.attempts]
    assert records == [("a", "cancelled", False), ("b", "ok", True)]  # in the order started
    a_health = hedged.health.get("a")
    assert (a_health.failures, a_health.in_flight) == (0, 0)  # neutral for the loser


async def test_the_first_candidate_may_still_win_after_the_hedge_started(hedged: Rig) -> None:
    hedged.start()
    a = await hedged.opened()
    hedged.clock.advance(5)
    b = await hedged.opened()
    a.send(START + BLOCK + text("first") + STOP + DELTA + END)
    await hedged.done()
    assert b.closed and hedged.broadcast.head.provider == "a"
    assert [(x.provider, x.outcome) for x in hedged.broadcast.outcome.attempts] == [
        ("b", "cancelled"),  # recorded the moment a committed
        ("a", "ok"),
    ]
    assert hedged.health.get("b").in_flight == 0


async def test_a_fast_first_candidate_never_triggers_a_hedge(hedged: Rig) -> None:
    hedged.start()
    a = await hedged.opened()
    a.send(START + BLOCK + text("quick"))
    await settle()
    hedged.clock.advance(60)  # long past hedge_after, but committed
    await settle()
    a.send(STOP + DELTA + END)
    await hedged.done()
    assert len(hedged.transport.sent) == 1


async def test_a_hedged_first_candidate_that_fails_leaves_the_hedge_to_answer(
    hedged: Rig,
) -> None:
    hedged.start()
    a = await hedged.opened()
    hedged.clock.advance(5)
    b = await hedged.opened()
    a.cut(UpstreamConnectError("a", "connection refused"))
    await settle()
    b.send(START + BLOCK + text("b") + STOP + DELTA + END)
    await hedged.done()
    assert hedged.broadcast.head.provider == "b"
    assert [(x.provider, x.outcome) for x in hedged.broadcast.outcome.attempts] == [
        ("a", "failover"),
        ("b", "ok"),
    ]
    assert hedged.health.get("a").failures == 1


async def test_no_hedge_goes_to_a_provider_that_ran_out_of_room_meanwhile(hedged: Rig) -> None:
    hedged.start()
    a = await hedged.opened()
    hedged.relay.planner.ratelimits.observe("b", 429, [("retry-after", "60")])
    hedged.clock.advance(5)
    await settle()
    assert len(hedged.transport.sent) == 1  # b is full: a is left to answer alone
    a.send(START + BLOCK + text("slow but sure") + STOP + DELTA + END)
    await hedged.done()
    assert [(x.provider, x.outcome) for x in hedged.broadcast.outcome.attempts] == [("a", "ok")]
