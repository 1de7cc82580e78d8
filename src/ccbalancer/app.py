"""Builds the aiohttp application and the site it listens on; start-up and clean-up own the
Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from ccbalancer.proxy import auth, dashboard, handler, info
from ccbalancer.proxy.connection import Site, expect_continue
from ccbalancer.runtime import RUNTIME, Runtime


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[auth.guard], client_max_size=runtime.config.settings.max_body_bytes
    )
    app[RUNTIME] = runtime
    router = app.router
    expect = expect_continue  # on every route, the catch-all included: aiohttp's runs first
    router.add_post("/v1/messages", handler.messages, expect_handler=expect)
    router.add_post("/v1/messages/count_tokens", info.count_tokens, expect_handler=expect)
    router.add_get("/v1/models", info.models, expect_handler=expect)
    router.add_route("HEAD", "/", info.root, expect_handler=expect)
    router.add_get("/", info.root, allow_head=False, expect_handler=expect)
    router.add_get("/health", info.health, expect_handler=expect)
    router.add_get("/providers", info.providers, expect_handler=expect)
    router.add_post("/providers/reload", info.reload, expect_handler=expect)
    router.add_get("/metrics", info.metrics, expect_handler=expect)
    router.add_get("/dashboard", dashboard.page, expect_handler=expect)
    router.add_get("/dashboard/data", dashboard.data, expect_handler=expect)
    router.add_get(
        "/dashboard/request/{request_id}", dashboard.request_detail, expect_handler=expect
    )
    router.add_route("*", "/{anything:.*}", info.unknown, expect_handler=expect)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.close()

    app.cleanup_ctx.append(lifespan)
    return app


def build_site(
    runner: web.AppRunner, runtime: Runtime, host: str, port: int, **kwargs: Any
) -> web.TCPSite:
    """The listening site: its connections time out idle and slow request heads and answer
    malformed HTTP in the Anthropic envelope (``proxy.connection``)."""
    return Site(runner, runtime, host, port, **kwargs)
