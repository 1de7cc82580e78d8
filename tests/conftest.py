"""Shared fixtures: simulated providers and a real balancer, both on 127.0.0.1 port 0.

Everything streams through real sockets (STYLE.md): the balancer runs its real aiohttp runner
(with handler cancellation, as in production) inside the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import settings

from ccbalancer.app import build_app, build_site
from ccbalancer.config import Config, parse_config
from ccbalancer.mock import MockServer
from ccbalancer.observe.logs import Redactor
from ccbalancer.runtime import Runtime

# CI runs hypothesis with a fixed seed, so a green build stays green on a re-run; locally it
# explores new examples every time.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# asyncio debug mode reports callbacks that block the loop; the fixture below fails on them.
os.environ.setdefault("PYTHONASYNCIODEBUG", "1")
asyncio.base_events.BaseEventLoop.slow_callback_duration = 1.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long fault soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fail_on_blocked_loop(caplog: pytest.LogCaptureFixture) -> Any:
    """Fails a test whose code blocked the event loop for a second or more (asyncio debug
    mode reports such callbacks; the bound is generous because these machines are shared)."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    yield
    blocked = [
        r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()
    ]
    assert not blocked, f"the event loop was blocked: {blocked}"


class Clock:
    """The one fake clock of the tests: a callable clock (``clock()``) and a ``Scheduler``
    (``time()``, ``call_at()``) whose timers fire only when the test ``advance``s it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[_Timer] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(when, callback)
        self._timers.append(timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move time on, firing every timer that falls due on the way, in order."""
        target = self.now + seconds
        while True:
            due = [t for t in self._timers if not t.cancelled and t.when <= target]
            if not due:
                break
            timer = min(due, key=lambda t: t.when)
            self._timers.remove(timer)
            self.now = max(self.now, timer.when)
            timer.callback()
        self.now = target

    @property
    def pending(self) -> list[float]:
        """When the timers still armed are due."""
        return sorted(t.when for t in self._timers if not t.cancelled)


@dataclass
class _Timer:
    when: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


async def until(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait, bounded, for state that has no notification to wait on (polling is the last
    resort: prefer awaiting an event)."""
    async with asyncio.timeout(seconds):
        while not predicate():
            await asyncio.sleep(0.005)


async def settle() -> None:
    """Let every ready callback and task step run (no timing involved)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def mock() -> AsyncIterator[MockServer]:
    server = MockServer(port=0, seed=7)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def config_text(
    mock: MockServer,
    providers: list[tuple[str, str]] | list[str],
    routes: dict[str, list[str | tuple[str, str] | tuple[str, str, int]]] | None = None,
    settings: str = "",
    provider_extra: dict[str, str] | None = None,
) -> str:
    """A config for providers served by the mock. ``providers``: names (anthropic) or
    (name, type). ``routes``: pattern -> provider names (priority = list order) or tuples
    (name, model[, priority])."""
    lines = ["providers:"]
    names: list[str] = []
    for item in providers:
        name, kind = (item, "anthropic") if isinstance(item, str) else item
        names.append(name)
        base = mock.anthropic_url(name) if kind == "anthropic" else mock.openai_url(name)
        extra = (provider_extra or {}).get(name, "")
        key = f"sk-prov-{name}-secret"
        lines.append(
            f'  - {{name: {name}, type: {kind}, base_url: "{base}", auth_value: "{key}"{extra}}}'
        )
    lines.append("model_routes:")
    for pattern, entries in (routes or {"*": list(names)}).items():
        lines.append(f'  "{pattern}":')
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                name, model, priority = entry, "passthrough", i + 1
            elif len(entry) == 2:
                name, model, priority = entry[0], entry[1], i + 1
            else:
                name, model, priority = entry  # type: ignore[misc]
            lines.append(f"    - {{provider: {name}, model: {model}, priority: {priority}}}")
    lines.append("settings:")
    lines.append("  log_file_path: ''")
    lines.append("  history: {enabled: false}")
    lines.append("  deduplication: {enabled: false}")
    for line in settings.strip("\n").splitlines():
        lines.append("  " + line if line.strip() else line)
    return "\n".join(lines) + "\n"


@dataclass
class Balancer:
    url: str
    runtime: Runtime
    session: aiohttp.ClientSession
    clock: Clock = field(default_factory=Clock)  # the runtime's clock when ``manual_clock``
    runner: web.AppRunner | None = None

    async def stop(self) -> None:
        """Shut this balancer down now, as SIGTERM would (e.g. to start another on its files)."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await self.session.close()
            await runner.cleanup()

    async def post(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        return await self.session.post(
            self.url + "/v1/messages",
            json=body,
            headers={"x-api-key": "sk-client-1", **(headers or {})},
        )


BalancerFactory = Callable[..., Any]


@pytest.fixture
async def balancer_factory() -> AsyncIterator[BalancerFactory]:
    """Starts balancers on port 0; ``await factory(config_or_text, clock=...)``. The history
    stays off unless ``history=True`` (then ``settings.history`` decides)."""
    started: list[Balancer] = []

    async def start(
        config: Config | str,
        *,
        config_path: str | None = None,
        manual_clock: bool = False,
        history: bool = False,
        redactor: Redactor | None = None,
    ) -> Balancer:
        """``redactor``: the one of a ``configure_logging`` handle, as ``serve`` passes it."""
        if isinstance(config, str):
            config = parse_config(config, "<test>")
        clock = Clock()
        runtime = Runtime(
            config,
            config_path,
            **({"clock": clock} if manual_clock else {}),
            history=history,
            redactor=redactor,
        )
        app = build_app(runtime)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = build_site(runner, runtime, "127.0.0.1", 0)
        await site.start()
        port = site.port
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        balancer = Balancer(f"http://127.0.0.1:{port}", runtime, session, clock, runner)
        started.append(balancer)
        return balancer

    yield start
    for balancer in reversed(started):
        await balancer.stop()


@pytest.fixture
async def recorded_upstream() -> AsyncIterator[Callable[..., Any]]:
    """``await serve(name, writes, headers)``: an Anthropic-type upstream on 127.0.0.1 that
    answers every request by writing ``writes`` verbatim, one write each; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def serve(name: str, writes: list[bytes], headers: dict[str, str] | None = None) -> str:
        async def upstream(request: web.Request) -> web.StreamResponse:
            sse = {"content-type": "text/event-stream", **(headers or {})}
            resp = web.StreamResponse(headers=sse)
            await resp.prepare(request)
            for chunk in writes:
                await resp.write(chunk)
            return resp

        app = web.Application()
        app.router.add_post(f"/{name}/v1/messages", upstream)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/{name}"

    yield serve
    for runner in runners:
        await runner.cleanup()


@dataclass
class RawUpstream:
    """An upstream that speaks HTTP by hand: after reading a request it writes ``steps``
    (bytes, or a float: pause that many seconds) to the socket verbatim, then holds the
    connection open until the test ends. For framing no server library would produce."""

    steps: list[bytes | float]
    url: str = ""
    requests: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        await reader.readexactly(length)
        self.requests += 1
        for step in self.steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                writer.write(step)
                await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # hold it open: the balancer must notice on its own


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[list[bytes | float]], Any]]:
    """``await serve(steps)`` -> a ``RawUpstream`` listening on 127.0.0.1."""

    started: list[RawUpstream] = []

    async def serve(steps: list[bytes | float]) -> RawUpstream:
        upstream = RawUpstream(steps)
        server = await asyncio.start_server(upstream._answer, "127.0.0.1", 0)
        started.append(upstream)
        upstream.server = server
        upstream.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/raw"
        return upstream

    yield serve
    for upstream in started:
        assert upstream.server is not None
        upstream.server.close()
        for writer in upstream.writers:
            writer.close()
        await upstream.server.wait_closed()


class RecordedOpenAIUpstreams:
    """``await serve(name, writes)``: an OpenAI-format upstream on 127.0.0.1 that answers every
    ``POST {base}/chat/completions`` by writing ``writes`` verbatim, one write each, and keeps
    each request body it received in ``requests[name]``; returns the provider's base URL."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = {}
        self._runners: list[web.AppRunner] = []

    async def __call__(
        self,
        name: str,
        writes: list[bytes],
        headers: dict[str, str] | None = None,
        content_type: str = "text/event-stream",
    ) -> str:
        received = self.requests.setdefault(name, [])

        async def upstream(request: web.Request) -> web.StreamResponse:
            received.append(await request.json())
            resp = web.StreamResponse(headers={"content-type": content_type, **(headers or {})})
            await resp.prepare(request)
            for chunk in writes:
                await resp.write(chunk)
            return resp

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(f"/{name}/v1/chat/completions", upstream)
        runner = web.AppRunner(app)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/{name}/v1"

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


@pytest.fixture
async def recorded_openai_upstream() -> AsyncIterator[RecordedOpenAIUpstreams]:
    upstreams = RecordedOpenAIUpstreams()
    yield upstreams
    await upstreams.close()


def msg(
    text: str = "Hello", *, stream: bool = True, model: str = "claude-sonnet-4-5", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    body.update(extra)
    return body


def parse_frames(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) for every SSE frame in ``raw``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for frame in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name = ""
        data: list[bytes] = []
        for line in frame.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            out.append((name, orjson.loads(b"\n".join(data))))
    return out


async def read_events(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) for every frame of an SSE response."""
    return parse_frames(await resp.read())


async def read_until(resp: aiohttp.ClientResponse, frames: int) -> bytes:
    """Reads a streaming answer until ``frames`` events arrived (its end need not come); what
    was read. Bounded: 30 s, and a stream that ends first fails the test."""
    seen = b""
    async with asyncio.timeout(30):
        while seen.count(b"\n\n") < frames:
            chunk = await resp.content.readany()
            assert chunk, seen
            seen += chunk
    return seen


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    version: str = "HTTP/1.1"

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this answer."""
        return self.version == "HTTP/1.0" or self.headers.get("connection", "") == "close"


async def raw_http(url: str, data: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send ``data`` as is on a fresh connection (bytes aiohttp's client would refuse to send)
    and read one response: its head, then ``content-length`` bytes or up to EOF."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            while head.startswith(b"HTTP/1.1 100"):  # an interim answer: the real one follows
                head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip().lower()
                if k.strip().lower() == "connection"
                else v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
        version, status = lines[0].split()[:2]
        return RawAnswer(int(status), headers, body, version)
    finally:
        writer.close()


def envelope_of(answer: RawAnswer) -> dict[str, Any]:
    """The Anthropic error envelope of ``answer`` (asserts it is one)."""
    assert answer.headers.get("content-type", "").startswith("application/json"), answer
    payload = orjson.loads(answer.body)
    assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}, payload
    return dict(payload["error"])
