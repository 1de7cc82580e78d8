"""The simulated providers: one aiohttp server, any number of named providers.

Every path starts with the provider's name (``/{name}/v1/messages``, ``/{name}/v1/chat/
completions``), so one server plays all the providers of a test, the demo or the benchmark;
names need no registration. Per request the Script is chosen as directive > enqueued >
configured default, the request is recorded, and the answer is rendered by the dialect of the
path; a request continuing a cut answer (``continuation.py``) gets the rest of that answer.
``/_mock/...`` exposes the same controls over HTTP for out-of-process users (``control.py``).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from ccbalancer.mock import control
from ccbalancer.mock.anthropic import AnthropicDialect
from ccbalancer.mock.dialect import Json, MockDialect
from ccbalancer.mock.openai import OpenAIDialect
from ccbalancer.mock.respond import call_for, error_response, respond
from ccbalancer.mock.script import Script, apply_fields, directive_fields

DEFAULT_NAME = "default"  # the provider behind the root paths (/v1/messages ...)
MODELS = ("claude-opus-5-5", "claude-sonnet-4-6", "claude-haiku-4-5", "mock-model")
# Claude Code bodies grow past aiohttp's 1 MiB default in long sessions; the API allows 32 MB.
MAX_BODY = 64 * 1024 * 1024
# A stalled or slow stream must not hold close() for aiohttp's default 60 s grace period.
SHUTDOWN_GRACE = 0.2


@dataclass
class RecordedRequest:
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any] | None  # None when the body is not a JSON object
    raw: bytes


def _json(value: Json) -> web.Response:
    return web.Response(body=orjson.dumps(value), content_type="application/json")


def _parse(raw: bytes) -> Json | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class MockServer:
    """Simulated Anthropic and OpenAI providers on one real HTTP server."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, seed: int = 0, *, max_recorded: int = 10_000
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.max_recorded = max_recorded  # per provider; the oldest records go first
        self._anthropic = AnthropicDialect()
        self._openai = OpenAIDialect()
        self._defaults: dict[str, Script] = {}
        self._queues: dict[str, deque[Script]] = {}
        self._records: dict[str, deque[RecordedRequest]] = {}
        self._counts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._active = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen and return the base URL ``http://HOST:PORT``."""
        if self._runner is not None:
            raise RuntimeError("MockServer already started")
        app = web.Application(client_max_size=MAX_BODY)
        self._add_routes(app)
        # handler_cancellation: a client that leaves cancels its handler, which is what ends
        # stalls and slow streams; the default (off) would keep them writing into the void.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE
        )
        await runner.setup()
        # the benchmark opens ~1,000 connections at once; the default backlog of 128 would
        # drop SYNs and add 1 s retransmits to its latencies
        site = web.TCPSite(runner, self.host, self.port, backlog=4096)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._url = f"http://{host}:{port}"
        return self._url

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> MockServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("MockServer not started")
        return self._url

    def anthropic_url(self, name: str) -> str:
        """``base_url`` of an anthropic provider (the balancer calls ``{base}/v1/messages``)."""
        return f"{self.url}/{name}"

    def openai_url(self, name: str) -> str:
        """``base_url`` of an openai provider (the balancer calls ``{base}/chat/completions``)."""
        return f"{self.url}/{name}/v1"

    # --- scripting and inspection ------------------------------------------------------------

    def configure(self, name: str, script: Script | None = None, **fields: Any) -> None:
        """Set the default behaviour of provider ``name`` (``script`` with ``fields`` laid over
        it). Raises ``ValueError`` for an unknown field or a value of the wrong type."""
        self._defaults[name] = apply_fields(script or Script(), fields)

    def enqueue(self, name: str, *scripts: Script) -> None:
        """One-shot scripts for the next requests to ``name``, consumed in order."""
        self._queues.setdefault(name, deque()).extend(scripts)

    def requests(self, name: str) -> list[RecordedRequest]:
        """Every model, count_tokens and models request ``name`` received, in order."""
        return list(self._records.get(name, ()))

    def reset(self) -> None:
        """Forget scripts, queues, records and counters; re-seed the fault RNG."""
        self._defaults.clear()
        self._queues.clear()
        self._records.clear()
        self._counts.clear()
        self._failures.clear()
        self._rng.seed(self.seed)

    @property
    def active_streams(self) -> int:
        """Model-call responses in progress (from the request to the last byte or the abort)."""
        return self._active

    def stats(self) -> Json:
        names = sorted(set(self._counts) | set(self._queues) | set(self._defaults))
        return {
            "active_streams": self._active,
            "requests_total": sum(self._counts.values()),
            "providers": {
                name: {"requests": self._counts[name], "queued": len(self._queues.get(name, ()))}
                for name in names
            },
        }

    async def wait_streams(self, count: int = 0) -> None:
        """Wait until exactly ``count`` responses are in progress (e.g. 0 once a client left a
        stall). Unbounded: wrap it in ``asyncio.timeout``."""
        await self._wait(lambda: self._active == count)

    async def wait_requests(self, name: str, count: int) -> list[RecordedRequest]:
        """Wait until ``name`` has received at least ``count`` requests and return them.
        Unbounded: wrap it in ``asyncio.timeout``."""
        await self._wait(lambda: len(self._records.get(name, ())) >= count)
        return self.requests(name)

    async def _wait(self, ready: Callable[[], bool]) -> None:
        if ready():
            return
        entry = (ready, asyncio.get_running_loop().create_future())
        self._waiters.append(entry)
        try:
            await entry[1]
        finally:
            self._waiters.remove(entry)

    def _changed(self) -> None:
        for ready, future in self._waiters:
            if not future.done() and ready():
                future.set_result(None)

    # --- HTTP ----------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        control.add_routes(app, self)
        router = app.router
        for prefix in ("", "/{name}"):  # "" serves the provider called DEFAULT_NAME
            router.add_post(prefix + "/v1/messages", self._messages)
            router.add_post(prefix + "/v1/messages/count_tokens", self._count_tokens)
            router.add_post(prefix + "/v1/chat/completions", self._chat)
            router.add_get(prefix + "/v1/models", self._models)
        router.add_post("/{name}/chat/completions", self._chat)
        for path in ("/", "/{name}", "/{name}/"):  # Claude Code probes HEAD / before a session
            router.add_get(path, self._root)

    def _record(self, request: web.Request, raw: bytes, body: Json | None) -> str:
        name = request.match_info.get("name", DEFAULT_NAME)
        headers = {key.lower(): value for key, value in request.headers.items()}
        record = RecordedRequest(request.path, request.query_string, headers, body, raw)
        records = self._records.get(name)
        if records is None:
            records = self._records[name] = deque(maxlen=self.max_recorded)
        records.append(record)
        self._counts[name] += 1
        if self._waiters:
            self._changed()
        return name

    async def _root(self, request: web.Request) -> web.Response:
        return _json({"ok": True, "service": "ccbalancer mock"})

    async def _models(self, request: web.Request) -> web.Response:
        self._record(request, b"", None)
        # one list both clients read: Anthropic's fields and paging plus OpenAI's "object"
        data = [
            {
                "type": "model",
                "object": "model",
                "id": model,
                "display_name": model,
                "created_at": "2026-01-01T00:00:00Z",
                "created": 1767225600,
                "owned_by": "mock",
            }
            for model in MODELS
        ]
        listing = {"object": "list", "data": data, "has_more": False}
        return _json({**listing, "first_id": MODELS[0], "last_id": MODELS[-1]})

    async def _count_tokens(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self._record(request, raw, _parse(raw))
        # ~4 bytes of JSON per token: rough, like every local estimate
        return _json({"input_tokens": max(1, len(raw) // 4)})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._model_call(request, self._anthropic)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._model_call(request, self._openai)

    def _script_for(self, name: str, dialect: MockDialect, body: Json) -> Script:
        fields = directive_fields(dialect.directive_text(body), name)
        if fields:
            apply_fields(Script(), fields)  # reject a bad directive before consuming the queue
        queue = self._queues.get(name)
        script = queue.popleft() if queue else self._defaults.get(name) or Script()
        script = apply_fields(script, fields)
        if script.fail_rate > 0 and self._rng.random() < script.fail_rate:
            self._failures[name] += 1
            if self._failures[name] % 2:
                return replace(
                    script, status=529, error_type="overloaded_error", error_message="Overloaded"
                )
            # cut after message_start / the role chunk: before content, so a balancer can
            # still fail over without the client noticing
            return replace(script, cut_after=1, cut_mid_event=True)
        return script

    async def _model_call(self, request: web.Request, dialect: MockDialect) -> web.StreamResponse:
        raw = await request.read()
        parsed = _parse(raw)
        name = self._record(request, raw, parsed)
        body = parsed or {}
        # a continuation is answered by the script of the request it continues: its directive
        # sits in that request's last user message, not in the resume turn
        continuation = dialect.continuation(body)
        asked = continuation.original if continuation is not None else body
        try:
            script = self._script_for(name, dialect, asked)
        except ValueError as exc:
            return error_response(dialect, call_for(dialect, body, Script()), 400, str(exc))
        self._active += 1
        if self._waiters:
            self._changed()
        try:
            return await respond(request, dialect, script, body, continuation)
        except ConnectionResetError:  # the client left while we wrote; nobody to answer
            return web.Response()
        finally:
            self._active -= 1
            if self._waiters:
                self._changed()
