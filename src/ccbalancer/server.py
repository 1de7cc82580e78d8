"""Running the balancer on a socket: bind, serve until a stop signal, drain, clean up.

``serve_app`` is what ``ccbalancer serve`` and ``ccbalancer demo`` both run. A port that cannot
be bound raises ``ListenError``, whose message is the one line a user needs (what went wrong and
how to pick another port); the commands print it and exit 2 instead of a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import signal
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ccbalancer.config.schema import Config

# Prometheus (and many exporters) also listen on 9090 by default: a busy port is common.
_CROWDED = {9090: " (Prometheus also uses 9090 by default)"}


class ListenError(Exception):
    """The listening socket could not be opened; ``str()`` says why and what to do."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        self.host, self.port, self.cause = host, port, cause
        where = f"{host}:{port}"
        if cause.errno == errno.EADDRINUSE:
            why = f"port {port} is already in use{_CROWDED.get(port, '')}"
        elif cause.errno == errno.EACCES:
            why = f"no permission to listen on port {port}"
        elif cause.errno == errno.EADDRNOTAVAIL:
            why = f"{host} is not an address of this machine"
        else:
            why = cause.strerror or str(cause)
        hint = f"pick another port with --port, e.g. --port {port + 1}" if port else ""
        super().__init__(f"cannot listen on {where}: {why}" + (f"; {hint}" if hint else ""))


def tune_gc() -> None:
    """After start-up: move everything allocated so far out of the collector's sight and make
    young-generation collections rarer. Streams keep thousands of small objects alive; with
    the default thresholds, full collections paused the loop for up to 445 ms at 1,000 streams
    (docs/benchmarks.md has the before/after)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve_app(
    config: Config,
    config_path: str | None,
    host: str,
    port: int,
    on_ready: Callable[[int], Awaitable[None] | None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the balancer until ``stop`` is set or SIGINT/SIGTERM: stop accepting, drain in-flight
    streams up to ``drain_timeout``, end the rest with ``event: error``, return. Raises
    ``ListenError`` when ``host:port`` cannot be bound."""
    from ccbalancer.app import build_app, build_site
    from ccbalancer.observe.logs import configure_logging
    from ccbalancer.runtime import Runtime

    settings = config.settings
    handle = configure_logging(settings.log_level, settings.log_file_path or None, console=True)
    runtime = Runtime(config, config_path, redactor=handle.redactor)
    app = build_app(runtime)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = build_site(runner, runtime, host, port, backlog=4096, reuse_address=True)
    try:
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(host, port, exc) from None
        bound = site.port
        tune_gc()
        runtime.log.info("listening", host=host, port=bound, providers=len(config.providers))
        if on_ready is not None:
            result = on_ready(bound)
            if result is not None:
                await result
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        runtime.log.info(
            "shutting_down", drain_timeout=settings.drain_timeout, live=runtime.hub.live
        )
        await site.stop()
        deadline = time.monotonic() + runtime.config.settings.drain_timeout
        await runtime.hub.drain(max(0.0, deadline - time.monotonic()))
        runtime.hub.abort("the balancer is shutting down; retry")
        await asyncio.sleep(0)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                asyncio.get_running_loop().remove_signal_handler(sig)
        await runner.cleanup()
        handle.close()
