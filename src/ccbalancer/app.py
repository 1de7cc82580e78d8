"""Builds the aiohttp application; start-up and clean-up own the Runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ccbalancer.proxy import auth, dashboard, handler, info
from ccbalancer.runtime import RUNTIME, Runtime


def build_app(runtime: Runtime) -> web.Application:
    app = web.Application(
        middlewares=[auth.guard], client_max_size=runtime.config.settings.max_body_bytes
    )
    app[RUNTIME] = runtime
    app.router.add_post("/v1/messages", handler.messages)
    app.router.add_post("/v1/messages/count_tokens", info.count_tokens)
    app.router.add_get("/v1/models", info.models)
    app.router.add_route("HEAD", "/", info.root)
    app.router.add_get("/", info.root, allow_head=False)
    app.router.add_get("/health", info.health)
    app.router.add_get("/providers", info.providers)
    app.router.add_post("/providers/reload", info.reload)
    app.router.add_get("/metrics", info.metrics)
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_get("/dashboard/data", dashboard.data)
    app.router.add_get("/dashboard/request/{request_id}", dashboard.request_detail)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        await runtime.start()
        yield
        await runtime.close()

    app.cleanup_ctx.append(lifespan)
    return app
