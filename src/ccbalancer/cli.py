"""The command line: argv -> config -> logging -> server. The only reader of argv and env."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from ccbalancer import __version__
from ccbalancer.config.load import load_config, parse_config
from ccbalancer.config.schema import Config
from ccbalancer.errors import ConfigError

DEFAULT_CONFIG = "config.yaml"


def config_path(arg: str | None) -> str:
    return arg or os.environ.get("CCBALANCER_CONFIG") or DEFAULT_CONFIG


def _load_or_exit(path: str) -> Config:
    warnings: list[str] = []
    try:
        config = load_config(path, warn=warnings.append)
    except ConfigError as error:
        print(f"ccbalancer: invalid config: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for text in warnings:
        print(f"ccbalancer: warning: {path}: {text}", file=sys.stderr)
    return config


def _tune_gc() -> None:
    """After start-up: move everything allocated so far out of the collector's sight and make
    young-generation collections rarer. Streams keep thousands of small objects alive; with
    the default thresholds, full collections paused the loop for up to 445 ms at 1,000 streams
    (docs/benchmarks.md has the before/after)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _install_uvloop() -> None:
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
    streams up to ``drain_timeout``, end the rest with ``event: error``, return."""
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
        await site.start()
        bound = site.port
        _tune_gc()
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


# -- commands ------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = _load_or_exit(path)
    host = args.host or config.settings.host
    port = args.port if args.port is not None else config.settings.port
    _install_uvloop()
    asyncio.run(serve_app(config, path, host, port))
    return 0


def demo_config(mock_url: str, port: int) -> Config:
    text = f"""
providers:
  - {{name: flaky, type: anthropic, base_url: "{mock_url}/flaky", auth_value: demo-key}}
  - {{name: healthy, type: anthropic, base_url: "{mock_url}/healthy", auth_value: demo-key}}
  - {{name: openai, type: openai, base_url: "{mock_url}/openai/v1", auth_value: demo-key}}
model_routes:
  "*haiku*":
    - {{provider: openai, model: gpt-4o-mini, priority: 1}}
    - {{provider: healthy, model: passthrough, priority: 2}}
  "*":
    - {{provider: flaky, model: passthrough, priority: 1}}
    - {{provider: healthy, model: passthrough, priority: 2}}
    - {{provider: openai, model: gpt-4o, priority: 3}}
settings:
  failure_cooldown: 15
  unhealthy_threshold: 2
  log_file_path: ""
  history: {{enabled: false}}
  port: {port}
"""
    return parse_config(text, "<demo>")


def cmd_demo(args: argparse.Namespace) -> int:
    from ccbalancer.mock import DEMO_PROVIDERS, MockServer

    _install_uvloop()

    async def main() -> None:
        mock = MockServer(port=0, seed=1)
        for name, script in DEMO_PROVIDERS.items():
            mock.configure(name, script)
        await mock.start()
        try:
            config = demo_config(mock.url, args.port)

            def ready(port: int) -> None:
                base = f"http://127.0.0.1:{port}"
                print(
                    "\nccbalancer demo is running with simulated providers "
                    f"(flaky -> healthy -> openai) at {mock.url}\n\n"
                    "Point Claude Code at it:\n"
                    f"  export ANTHROPIC_BASE_URL={base}\n"
                    "  export ANTHROPIC_AUTH_TOKEN=demo\n\n"
                    "Or watch a stream:\n"
                    f"  curl -N {base}/v1/messages -H 'content-type: application/json' "
                    '-d \'{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,'
                    '"messages":[{"role":"user","content":"Hello"}]}\'\n\n'
                    f"Provider state: curl {base}/providers    Metrics: curl {base}/metrics\n"
                    "Ctrl-C stops it.\n",
                    flush=True,
                )

            await serve_app(config, None, "127.0.0.1", args.port, on_ready=ready)
        finally:
            await mock.close()

    asyncio.run(main())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = _load_or_exit(path)
    print(f"{path}: OK ({len(config.providers)} providers, {len(config.model_routes)} routes)")
    print("\nproviders:")
    for p in config.providers:
        state = "enabled" if p.enabled else "disabled"
        auth = "passthrough" if p.passthrough_auth else (p.auth_type if p.auth_value else "none")
        proxy = " via proxy" if p.proxy else ""
        print(f"  {p.name:<20} {p.type:<9} {state:<8} auth={auth}{proxy}  weight={p.weight:g}")
    strategy = config.settings.selection_strategy
    print(f"\nroutes (strategy: {strategy}; exact keys first, then globs in file order):")
    for key, entries in config.model_routes.items():
        targets = ", ".join(
            f"{e.priority}:{e.provider}({e.model})"
            for e in sorted(entries, key=lambda e: e.priority)
        )
        print(f"  {key:<24} -> {targets}")
    if args.probe:
        return asyncio.run(_probe(config))
    return 0


async def _probe(config: Config) -> int:
    from ccbalancer.runtime import Runtime

    runtime = Runtime(config, history=False)
    from ccbalancer.errors import UpstreamError

    failures = 0
    print("\nprobe (one tiny request per provider):")
    try:
        for p in config.providers:
            if not p.enabled:
                print(f"  {p.name:<20} skipped (disabled)")
                continue
            model = next(
                (
                    e.model
                    for entries in config.model_routes.values()
                    for e in entries
                    if e.provider == p.name and e.model != "passthrough"
                ),
                "claude-haiku-4-5",
            )
            dialect = runtime.dialects[p.type]
            body = {
                "model": model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}],
            }
            headers = dialect.headers({}, "" if p.passthrough_auth else p.auth_value, p.auth_type)
            headers.update(p.headers)
            started = time.perf_counter()
            try:
                resp = await runtime.client.open(
                    p,
                    dialect.url(p.base_url, ""),
                    headers,
                    dialect.body(body, model, p.body_options),
                    config.settings.timeouts.non_streaming,
                )
                status = resp.status
                answer = await resp.body(4096)
                resp.close()
                took = (time.perf_counter() - started) * 1000
                detail = "" if status == 200 else " " + dialect.error(status, answer)[1][:80]
                print(f"  {p.name:<20} HTTP {status}  {took:7.1f} ms{detail}")
                failures += status != 200
            except UpstreamError as error:
                print(f"  {p.name:<20} FAILED  {error.short}")
                failures += 1
    finally:
        await runtime.client.close()
    return 1 if failures else 0


def cmd_init(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"ccbalancer: {target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    text = resources.files("ccbalancer.config").joinpath("starter.yaml").read_text(encoding="utf-8")
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}; edit it, then: ccbalancer check -c {target}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccbalancer", description="Streaming load balancer for Claude Code"
    )
    parser.add_argument("--version", action="version", version=f"ccbalancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the balancer")
    serve.add_argument(
        "-c", "--config", help="config file (default: $CCBALANCER_CONFIG or ./config.yaml)"
    )
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="run with built-in simulated providers (no keys, no network)"
    )
    demo.add_argument("--port", type=int, default=9090)
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser("check", help="validate the config and print the routing table")
    check.add_argument("-c", "--config")
    check.add_argument(
        "--probe", action="store_true", help="send one tiny request to each provider"
    )
    check.set_defaults(func=cmd_check)

    init = sub.add_parser("init", help="write a commented starter config")
    init.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    init.add_argument("--force", action="store_true")
    init.set_defaults(func=cmd_init)

    from ccbalancer import mock

    mock_parser = sub.add_parser("mock", help="run the simulated providers alone")
    mock.add_arguments(mock_parser)
    mock_parser.set_defaults(func=mock.run)

    from ccbalancer.observe import stats

    stats_parser = sub.add_parser("stats", help="per-provider summary from the request history")
    stats.add_arguments(stats_parser)
    stats_parser.set_defaults(func=stats.run)

    from ccbalancer.bench import cli as bench

    bench_parser = sub.add_parser("bench", help="load generator: direct vs through the balancer")
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(func=bench.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 0
