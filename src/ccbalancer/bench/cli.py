"""``ccbalancer bench``: the load generator and its report (DESIGN.md sections 2 and 10).

Starts the mock (and nginx or a floor for ``--reference``) and, per scenario repeat,
a fresh balancer per run as child processes (or targets running ones), runs each scenario
directly against the mock, then through the balancer, the references and each ``--variant``,
and prints one table with all of them, their differences and ratios. ``--duration`` runs the
soak instead. The exit status is 1 when any run lost, duplicated or reordered an event or left
a stream unfinished (what the CI smoke checks), 2 when the flags or the processes under test
cannot be used and 130 when interrupted; timings never decide it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from ccbalancer.bench import compare, floor, reference, report, runner, soak, variants
from ccbalancer.bench.client import HEADERS, headers_with
from ccbalancer.bench.procs import (
    MOCK_URL_ENV,
    Child,
    balancer_child,
    balancer_config,
    listener_pid,
    mock_child,
    raise_nofile,
)
from ccbalancer.bench.scenarios import FULL, Scenario, select
from ccbalancer.bench.variants import Variant, VariantError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", action="append", choices=list(FULL), metavar="NAME",
        help=f"run only this scenario (repeatable; default all): {', '.join(FULL)}",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians shown")
    parser.add_argument("--json", metavar="PATH", help="also write the full results as JSON")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, all scenarios, seconds (CI)"
    )
    parser.add_argument(
        "--timeline", action="store_true",
        help="also print each run's latency and RSS by half-second slice (where the tail is)",
    )  # fmt: skip
    parser.add_argument(
        "--burst", action="store_true",
        help="start all streams at once (default: each scenario's ramp, see docs/benchmarks.md)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS",
        help="soak: keep --soak-clients streams open back to back this long; report RSS",
    )  # fmt: skip
    parser.add_argument(
        "--soak-clients", type=int, default=200, metavar="N", help="soak: open streams (200)"
    )
    parser.add_argument(
        "--soak-events", type=int, default=100, metavar="N", help="soak: events per stream (100)"
    )
    parser.add_argument(
        "--soak-delay", type=float, default=0.05, metavar="SECONDS",
        help="soak: gap between events (0.05)",
    )  # fmt: skip
    parser.add_argument(
        "--reference", action="append", choices=["nginx", *compare.FLOORS], default=[],
        help="also run every scenario through nginx (needs"
        f" {reference.NGINX}: {reference.INSTALL}), through the thinnest aiohttp proxy (the"
        " floor of the prescribed stack) or through the thinnest proxy with no HTTP library"
        " (python), and report ccbalancer's ratios to it (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--nginx-binary", default=reference.NGINX, metavar="PATH",
        help=f"the nginx for --reference nginx ({reference.NGINX})",
    )  # fmt: skip
    parser.add_argument(
        "--variant", action="append", metavar="NAME=YAML",
        help="also run a balancer with this YAML merged into the bench's config, e.g."
        " 'nodedup=settings: {deduplication: {enabled: false}}' (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--variant-header", action="append", metavar="NAME=Header:Value",
        help="send this request header in variant NAME's runs (repeatable)",
    )  # fmt: skip
    parser.add_argument("--mock-url", help="use this running mock (http://127.0.0.1:P)")
    parser.add_argument(
        "--balancer-url",
        help="use this running balancer (needs --mock-url; it must route * to that mock)",
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _refusal(args: argparse.Namespace) -> str | None:
    """Why these flags cannot run, in one line; None when they can."""
    if args.balancer_url and not args.mock_url:
        return "--balancer-url needs --mock-url"
    if args.repeat < 1:
        return "--repeat must be at least 1"
    if args.duration and (args.reference or args.variant):
        return "--reference and --variant apply to the scenarios, not to the soak (--duration)"
    if args.variant and args.balancer_url:
        return "--variant needs balancers the bench starts itself (drop --balancer-url)"
    binary = Path(args.nginx_binary)
    if "nginx" in args.reference and not (binary.is_file() and os.access(binary, os.X_OK)):
        return f"--reference nginx needs {binary}, which is missing: {reference.INSTALL}"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _refusal(args)
    chosen: list[Variant] = []
    if problem is None:
        try:  # checked against the schema before anything starts (the mock URL is a stand-in)
            env = os.environ | {MOCK_URL_ENV: _ANY}
            base = balancer_config(_ANY)
            chosen = variants.parse(args.variant, args.variant_header, base, env)
        except VariantError as exc:
            problem = str(exc)
    if problem is not None:
        print(f"ccbalancer bench: {problem}", file=sys.stderr)
        return 2
    nofile = raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="ccbalancer-bench-"))
    with asyncio.Runner(loop_factory=_loop_factory()) as loop:
        try:
            status = loop.run(_main(args, logs, chosen, nofile))
        except RuntimeError as exc:  # a process under test failed to start
            print(f"ccbalancer bench: {exc}\n(logs kept in {logs})", file=sys.stderr)
            return 2
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("ccbalancer bench: interrupted; the processes it started are stopped",
                  file=sys.stderr)  # fmt: skip
            status = 130
    if status in (0, 130):
        shutil.rmtree(logs, ignore_errors=True)
    else:
        print(f"(process logs kept in {logs})", file=sys.stderr)
    return status


_ANY = "http://127.0.0.1:1"


def _port(url: str) -> int | None:
    return urlsplit(url).port


async def _main(args: argparse.Namespace, logs: Path, chosen: list[Variant], nofile: int) -> int:
    children: list[Child] = []  # stopped in reverse order of start
    source = report.source_digest()
    # SIGTERM ends the run like Ctrl-C does (asyncio.Runner's own handler): the main task is
    # cancelled, so every ``finally`` stops the children it started
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        if args.mock_url:
            mock_url = args.mock_url.rstrip("/")
            port = _port(mock_url)
            mock_pid = listener_pid(port) if port else None
        else:
            mock = mock_child(logs)
            children.append(mock)
            await mock.start()
            mock_url, mock_pid = mock.url, mock.pid
        balancers = _balancers(args, logs, mock_url)
        if args.duration:
            return await _soak(args, mock_url, balancers, source)
        setup = runner.Setup(mock_url, mock_pid, balancers, variants=chosen)
        about: dict[str, Any] = {"reference": None, "variants": [v.describe() for v in chosen]}
        if "nginx" in args.reference:
            nginx, config = reference.nginx_child(args.nginx_binary, mock_url, logs, nofile)
            children.append(nginx)
            await nginx.start()
            setup = dataclasses.replace(setup, nginx=runner.Target.at(nginx.url, nginx.pid))
            version = await asyncio.to_thread(reference.nginx_version, args.nginx_binary)
            about["reference"] = {
                "name": "nginx", "binary": args.nginx_binary, "version": version, "config": config,
            }  # fmt: skip
        floors: dict[str, runner.Target] = {}
        for kind in dict.fromkeys(args.reference):
            if kind in compare.FLOORS:
                child = floor.floor_child(kind, mock_url, logs)
                children.append(child)
                await child.start()
                floors[compare.FLOORS[kind].key] = runner.Target.at(child.url, child.pid)
        if floors:
            setup = dataclasses.replace(setup, floors=floors)
            about["floors"] = {"kinds": list(floors), "aiohttp": aiohttp.__version__}
        return await _scenarios(args, setup, source, about)
    finally:
        for child in reversed(children):
            await child.stop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


Balancers = Callable[[Variant | None], contextlib.AbstractAsyncContextManager[runner.Target]]


def _balancers(args: argparse.Namespace, logs: Path, mock_url: str) -> Balancers:
    """How a run gets its balancer: a fresh child per run (plain, or with a variant's config),
    or the one at ``--balancer-url``."""
    serial = itertools.count(1)
    base = balancer_config(mock_url)

    @contextlib.asynccontextmanager
    async def balancer(variant: Variant | None) -> AsyncIterator[runner.Target]:
        if args.balancer_url:
            url = args.balancer_url.rstrip("/")
            port = _port(url)
            yield runner.Target.at(url, listener_pid(port) if port else None)
            return
        number = next(serial)
        if variant is None:
            child = balancer_child(f"balancer-{number}", base, logs, mock_url)
            headers = HEADERS
        else:
            config = variant.config(base)
            child = balancer_child(f"balancer-{number}-{variant.name}", config, logs, mock_url)
            headers = headers_with(variant.headers)
        await child.start()
        try:
            yield runner.Target.at(child.url, child.pid, headers)
        finally:
            await child.stop()

    return balancer


async def _scenarios(
    args: argparse.Namespace, setup: runner.Setup, source: str, about: dict[str, Any]
) -> int:
    chosen: list[Scenario] = select(args.scenario, smoke=args.smoke, burst=args.burst)
    results: dict[str, Any] = {}
    for scenario in chosen:
        repeats: list[dict[str, Any]] = []
        for number in range(1, args.repeat + 1):
            print(f"bench: {scenario.name} ({scenario.label}) run {number}/{args.repeat}",
                  file=sys.stderr, flush=True)  # fmt: skip
            repeats.append(await runner.run_repeat(scenario, setup))
        results[scenario.name] = {
            "title": scenario.label,
            "params": {
                "kind": scenario.kind, "clients": scenario.clients, "events": scenario.events,
                "delay_s": scenario.delay, "requests": scenario.requests,
                "ramp_s": scenario.ramp,
            },
            "complete": all(runner.complete(r) for r in repeats),
            "median": report.merge(repeats),
            "repeats": repeats,
        }  # fmt: skip
    checks = [] if args.smoke else report.targets(results) + compare.targets(results)
    complete = all(data["complete"] for data in results.values())
    print(report.table(results, args.repeat))
    ratios = compare.lines(results)
    if ratios:
        print(ratios)
    if args.timeline:
        print(report.timeline(results))
    if checks:
        print(report.target_lines(checks))
    print("completeness: OK" if complete else "completeness: FAILED (see << INCOMPLETE)")
    _write_json(args.json, {
        "command": report.command_line(), "machine": report.machine(), "smoke": args.smoke,
        "repeat": args.repeat, "burst": args.burst, "complete": complete,
        "source": _source(source), **about, "scenarios": results, "targets": checks,
    })  # fmt: skip
    return 0 if complete else 1


async def _soak(args: argparse.Namespace, mock_url: str, balancers: Balancers, source: str) -> int:
    clients = min(args.soak_clients, 20) if args.smoke else args.soak_clients
    events = min(args.soak_events, 20) if args.smoke else args.soak_events
    async with balancers(None) as target:
        result = await soak.soak(mock_url, target, clients, events, args.soak_delay, args.duration)
    print(soak.summary(result))
    complete = bool(result["completeness"]["ok"])
    _write_json(args.json, {
        "command": report.command_line(), "machine": report.machine(), "complete": complete,
        "source": _source(source), "soak": result,
    })  # fmt: skip
    return 0 if complete else 1


def _source(start: str) -> dict[str, Any]:
    """The source fingerprint at the start and the end; they differ when someone edited the
    balancer while it was being measured (then the repeats may have run different code)."""
    end = report.source_digest()
    if end == start:
        print(f"balancer source digest: {start}")
    else:
        print(f"warning: the balancer's source changed during the run ({start} -> {end})")
    return {"at_start": start, "at_end": end, "changed": end != start}


def _write_json(path: str | None, value: dict[str, Any]) -> None:
    if path:
        Path(path).write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")
