"""``ccbalancer mock``: serve the simulated providers until SIGINT/SIGTERM.

The top-level CLI owns argv; it hands the ``mock`` sub-parser to ``add_arguments`` and the
parsed namespace to ``run``. ``run_mock`` is the same server as a coroutine, for callers that
already run an event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from ccbalancer.mock.demo import DEMO_KINDS, DEMO_PROVIDERS
from ccbalancer.mock.script import Script
from ccbalancer.mock.server import MockServer

DEFAULT_PORT = 9100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"listen port (default {DEFAULT_PORT})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault RNG (fail_rate)")


def _describe(server: MockServer, providers: dict[str, Script]) -> list[str]:
    lines = [f"ccbalancer mock listening on {server.url}"]
    for name in providers:
        kind = DEMO_KINDS.get(name)
        if kind != "openai":
            lines.append(f"  {name:<12} anthropic  base_url: {server.anthropic_url(name)}")
        if kind != "anthropic":
            lines.append(f"  {name:<12} openai     base_url: {server.openai_url(name)}")
    lines.append(
        f"Any other name works too ({server.url}/<name> or {server.url}/<name>/v1); "
        f"control API: {server.url}/_mock/stats"
    )
    return lines


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` inside the block. A no-op where the loop cannot install
    handlers (not the main thread, Windows)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def run_mock(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    providers: dict[str, Script] | None = None,
    *,
    seed: int = 0,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve until ``stop`` is set, or, without ``stop``, until SIGINT/SIGTERM.

    ``providers`` (default ``DEMO_PROVIDERS``) become the default scripts of those names; the
    base URLs are printed to ``out`` (default stdout).
    """
    providers = DEMO_PROVIDERS if providers is None else providers
    own_stop = stop is None
    stop = stop or asyncio.Event()
    # handlers go in before the URLs are printed: whoever reads them may signal at once
    with _signals_set(stop) if own_stop else contextlib.nullcontext():
        async with MockServer(host, port, seed) as server:
            for name, script in providers.items():
                server.configure(name, script)
            print("\n".join(_describe(server, providers)), file=out or sys.stdout, flush=True)
            await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not a dependency on Windows; plain asyncio serves the same
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(args: argparse.Namespace) -> int:
    """``ccbalancer mock``: exit status 0 after a signal, 1 when the port cannot be bound."""
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(run_mock(args.host, args.port, seed=getattr(args, "seed", 0)))
    except OSError as exc:
        print(f"ccbalancer mock: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the handlers were installed
        pass
    return 0
