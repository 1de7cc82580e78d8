"""Long run under random faults (``pytest --soak``; CI runs it for a bounded time).

Hundreds of concurrent streams for ``CCB_SOAK_SECONDS``; every one must end in a clean
completion or a proper error, and RSS and the number of tasks must stay flat once warm.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

import orjson
import psutil
import pytest

from ccbalancer.mock import MockServer
from ccbalancer.observe.logs import configure_logging
from tests.conftest import config_text, msg, until

pytestmark = pytest.mark.soak

FAULTS: list[dict[str, object]] = [
    {},
    {},
    {},
    {"delay": 0.01, "events": 30},
    {"status": 529, "retry_after": 1},
    {"status": 500},
    {"reset_before_headers": True},
    {"error_after": 1},
    {"events": 20, "cut_after": 8},
    {"events": 20, "error_after": 8, "error_type": "overloaded_error"},
    {"events": 10, "stall_after": 5},
    {"cut_after": 1, "cut_mid_event": True},
    {"invalid_json_at": 4},
    {"line_ending": "crlf", "comments": True},
]


def _tasks() -> list[str]:
    """Running tasks other than idle keep-alive connection handlers of the two servers."""
    names = [repr(t.get_coro()) for t in asyncio.all_tasks()]
    return [n for n in names if "RequestHandler.start" not in n]


def _outcome(status: int, raw: bytes) -> str:
    """'ok', 'error' (a proper error), or a description of what is wrong."""
    if status != 200:
        body = orjson.loads(raw)
        return (
            "error"
            if body.get("type") == "error" and body["error"]["type"]
            else f"bad body {raw[:80]!r}"
        )
    frames = [f for f in raw.replace(b"\r\n", b"\n").split(b"\n\n") if f.strip()]
    last = frames[-1] if frames else b""
    if last.startswith(b"event: message_stop"):
        return "ok"
    if last.startswith(b"event: error"):
        return "error"
    return f"truncated: {last[:80]!r}"


async def test_soak_random_faults_every_stream_ends_properly_and_memory_stays_flat(
    balancer_factory, tmp_path
):
    settings = """timeouts:
  first_event_timeout: 1
  streaming: {connect_timeout: 2, read_timeout: 1, pool_timeout: 2}
unhealthy_threshold: 1000
sticky_provider_duration: 0
deduplication: {enabled: true}
cache: {ttl: 3, max_bytes: 8000000}
"""
    # the mock keeps only a few recorded requests: its own bookkeeping must not look like growth
    mock = MockServer(port=0, seed=3, max_recorded=20)
    await mock.start()
    # pytest keeps every captured log record in memory, which would look like a leak: log to a
    # file through the product's own pipeline instead, for the duration of the soak
    root = logging.getLogger()
    captured = [h for h in root.handlers if type(h).__module__.startswith("_pytest")]
    for handler in captured:
        root.removeHandler(handler)
    handle = configure_logging("INFO", str(tmp_path / "soak.jsonl"), console=False)
    try:
        await _soak(mock, balancer_factory, settings)
    finally:
        handle.close()
        for handler in captured:
            root.addHandler(handler)
        await mock.close()


async def _soak(mock: MockServer, balancer_factory, settings: str) -> None:
    seconds = float(os.environ.get("CCB_SOAK_SECONDS", "120"))
    concurrency = int(os.environ.get("CCB_SOAK_STREAMS", "200"))
    b = await balancer_factory(config_text(mock, ["a", "b", "c"], settings=settings))
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    counter = 0

    async def client(worker: int) -> None:
        nonlocal counter
        while time.monotonic() < deadline:
            counter += 1
            fault = {name: rng.choice(FAULTS) for name in ("a", "b")}
            directive = orjson.dumps({"providers": {**fault, "c": {}}}).decode()
            body = msg(f"soak {worker} {counter} <<mock {directive}>>", stream=rng.random() < 0.85)
            async with asyncio.timeout(30):
                resp = await b.post(body, {"x-claude-code-session-id": f"w{worker}"})
                raw = await resp.read()
            if not body["stream"] and resp.status == 200:
                result = "ok" if orjson.loads(raw)["type"] == "message" else "bad message"
            else:
                result = _outcome(resp.status, raw)
            outcomes[result] = outcomes.get(result, 0) + 1
            if result not in ("ok", "error"):
                problems.append(result)

    process = psutil.Process()
    samples: list[tuple[float, int, int]] = []

    async def sampler() -> None:
        while time.monotonic() < deadline:
            samples.append((time.monotonic(), process.memory_info().rss, len(asyncio.all_tasks())))
            await asyncio.sleep(2)

    baseline_tasks = len(_tasks())
    await asyncio.gather(sampler(), *(client(i) for i in range(concurrency)))
    await until(lambda: not (b.runtime.hub.live or mock.active_streams), 30)
    print(f"\nsoak: {sum(outcomes.values())} requests in {seconds:.0f}s: {outcomes}")
    print("rss MiB over time:", [round(rss / 2**20, 1) for _, rss, _ in samples])
    assert not problems, problems[:5]
    assert outcomes.get("ok", 0) > 0
    warm = [rss for t, rss, _ in samples if t >= samples[0][0] + seconds * 0.3]
    if len(warm) >= 2:
        assert max(warm) - warm[0] < 40 * 2**20, "RSS grew after warm-up"
    assert len(_tasks()) <= baseline_tasks, _tasks()[:10]
