"""Shared fixtures: simulated providers and a real balancer, both on 127.0.0.1 port 0.

Everything streams through real sockets (STYLE.md): the balancer runs its real aiohttp runner
(with handler cancellation, as in production) inside the test's event loop.
"""

from __future__ import annotations

import asyncio
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
    clock: list[float] = field(default_factory=lambda: [0.0])

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
    """Starts balancers on port 0; ``await factory(config_or_text, clock=...)``."""
    started: list[tuple[web.AppRunner, aiohttp.ClientSession]] = []

    async def start(
        config: Config | str,
        *,
        config_path: str | None = None,
        manual_clock: bool = False,
        redactor: Redactor | None = None,
    ) -> Balancer:
        """``redactor``: the one of a ``configure_logging`` handle, as ``serve`` passes it."""
        if isinstance(config, str):
            config = parse_config(config, "<test>")
        clock_box = [1000.0]
        clock = (lambda: clock_box[0]) if manual_clock else None
        runtime = Runtime(
            config,
            config_path,
            **({"clock": clock} if clock else {}),
            history=False,
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
        started.append((runner, session))
        return Balancer(f"http://127.0.0.1:{port}", runtime, session, clock_box)

    yield start
    for runner, session in reversed(started):
        await session.close()
        await runner.cleanup()


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
