"""The load generator: many concurrent clients in this process, one aiohttp session.

The measurement loop does as little as possible — read a chunk, note ``time.monotonic_ns()``,
keep both — so the bench's own CPU time does not leak into the latencies it reports; all
parsing happens afterwards (``measure.py``). A request never raises: transport errors and
timeouts are recorded on its record and counted as incomplete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from ccbalancer.bench.scenarios import CLIENT_KEY

HEADERS = {
    "content-type": "application/json",
    "x-api-key": CLIENT_KEY,
    "anthropic-version": "2023-06-01",
}
_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


def headers_with(extra: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The bench's request headers with ``extra`` (lower-case names) added or replacing."""
    return {**HEADERS, **dict(extra)}


@dataclass(slots=True)
class Record:
    """What one client saw: the status, the sharing role and each chunk with its read time
    (CLOCK_MONOTONIC ns, the clock of the mock's stamps)."""

    started: int
    status: int = 0
    shared: str = ""
    chunks: list[bytes] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    ended: int = 0
    error: str = ""


def session(timeout: float) -> aiohttp.ClientSession:
    """A session without a connection cap (the default 100 would queue the 1,000 streams)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


async def fetch(
    http: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    deadline: float,
    start_at: float = 0.0,
    headers: Mapping[str, str] = HEADERS,
) -> Record:
    """One request; the body is read as it arrives, chunk by chunk. ``start_at``: the
    ``loop.time()`` to wait for before sending (spreads the starts of a run)."""
    loop = asyncio.get_running_loop()
    if start_at > loop.time():
        await asyncio.sleep(start_at - loop.time())
    record = Record(time.monotonic_ns())
    chunks, times = record.chunks, record.times
    now = time.monotonic_ns
    try:
        async with asyncio.timeout(deadline):
            async with http.post(url, data=payload, headers=headers) as resp:
                record.status = resp.status
                record.shared = resp.headers.get("x-ccbalancer-shared", "")
                read = resp.content.readany
                while chunk := await read():
                    times.append(now())
                    chunks.append(chunk)
    except _ERRORS as exc:
        record.error = type(exc).__name__
    record.ended = time.monotonic_ns()
    return record


async def run_streams(
    url: str,
    payloads: Sequence[bytes],
    window: float,
    deadline: float,
    headers: Mapping[str, str] = HEADERS,
) -> list[Record]:
    """All ``payloads`` at once (their starts spread evenly over ``window`` seconds)."""
    loop = asyncio.get_running_loop()
    count = len(payloads)
    first = loop.time() + 0.05  # lets every task be created before the first send
    async with session(deadline) as http, asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(
                fetch(http, url, payload, deadline, first + window * i / count, headers),
                name=f"bench-stream-{i}",
            )
            for i, payload in enumerate(payloads)
        ]
    return [task.result() for task in tasks]


async def run_whole(
    url: str,
    payloads: Sequence[bytes],
    concurrency: int,
    deadline: float,
    headers: Mapping[str, str] = HEADERS,
) -> list[Record]:
    """``payloads`` sent in order by ``concurrency`` workers, each one request after another
    (a body is taken only when its request is sent: ``payloads`` may make them on demand)."""
    pending = iter(payloads)
    done: list[Record] = []

    async def worker(http: aiohttp.ClientSession) -> None:
        while (payload := next(pending, None)) is not None:
            done.append(await fetch(http, url, payload, deadline, headers=headers))

    async with session(deadline) as http, asyncio.TaskGroup() as group:
        for i in range(concurrency):
            group.create_task(worker(http), name=f"bench-worker-{i}")
    return done


async def get_json(url: str, timeout: float = 5.0) -> object:
    """``GET url`` as JSON (the mock's control API, the balancer's /health)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.get(url) as resp,
    ):
        resp.raise_for_status()
        return await resp.json(content_type=None)
