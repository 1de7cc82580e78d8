"""``ccbalancer bench``: the load generator and its report (DESIGN.md sections 2 and 10).

Starts the mock and, per scenario repeat, a fresh balancer as child processes (or targets
running ones), runs each scenario directly against the mock and then through the balancer,
and prints one table with both and their difference. ``--duration`` runs the soak instead.
The exit status is 1 when any run lost, duplicated or reordered an event or left a stream
unfinished (what the CI smoke checks), 2 when the processes under test could not be run and
130 when interrupted; timings never decide it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from ccbalancer.bench import report, runner, soak
from ccbalancer.bench.procs import Child, balancer_child, listener_pid, mock_child, raise_nofile
from ccbalancer.bench.scenarios import FULL, Scenario, select


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


def run(args: argparse.Namespace) -> int:
    if args.balancer_url and not args.mock_url:
        print("ccbalancer bench: --balancer-url needs --mock-url", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("ccbalancer bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="ccbalancer-bench-"))
    with asyncio.Runner(loop_factory=_loop_factory()) as loop:
        try:
            status = loop.run(_main(args, logs))
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


def _port(url: str) -> int | None:
    return urlsplit(url).port


async def _main(args: argparse.Namespace, logs: Path) -> int:
    mock: Child | None = None
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
            await mock.start()
            mock_url, mock_pid = mock.url, mock.pid
        if args.duration:
            return await _soak(args, logs, mock_url, mock_pid, source)
        return await _scenarios(args, logs, mock_url, mock_pid, source)
    finally:
        if mock is not None:
            await mock.stop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)


async def _with_balancer(
    args: argparse.Namespace, logs: Path, mock_url: str, mock_pid: int | None, serial: int
) -> tuple[runner.Setup, Child | None]:
    if args.balancer_url:
        url = args.balancer_url.rstrip("/")
        port = _port(url)
        return runner.Setup(mock_url, mock_pid, url, listener_pid(port) if port else None), None
    child = balancer_child(mock_url, logs, serial)
    await child.start()
    return runner.Setup(mock_url, mock_pid, child.url, child.pid), child


async def _scenarios(
    args: argparse.Namespace, logs: Path, mock_url: str, mock_pid: int | None, source: str
) -> int:
    chosen: list[Scenario] = select(args.scenario, smoke=args.smoke, burst=args.burst)
    results: dict[str, Any] = {}
    serial = 0
    for scenario in chosen:
        repeats: list[dict[str, Any]] = []
        for number in range(1, args.repeat + 1):
            serial += 1
            print(f"bench: {scenario.name} ({scenario.label}) run {number}/{args.repeat}",
                  file=sys.stderr, flush=True)  # fmt: skip
            setup, child = await _with_balancer(args, logs, mock_url, mock_pid, serial)
            try:
                repeats.append(await runner.run_repeat(scenario, setup))
            finally:
                if child is not None:
                    await child.stop()
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
    checks = [] if args.smoke else report.targets(results)
    complete = all(data["complete"] for data in results.values())
    print(report.table(results, args.repeat))
    if args.timeline:
        print(report.timeline(results))
    if checks:
        print(report.target_lines(checks))
    print("completeness: OK" if complete else "completeness: FAILED (see << INCOMPLETE)")
    _write_json(args.json, {
        "command": report.command_line(), "machine": report.machine(), "smoke": args.smoke,
        "repeat": args.repeat, "burst": args.burst, "complete": complete,
        "source": _source(source), "scenarios": results, "targets": checks,
    })  # fmt: skip
    return 0 if complete else 1


async def _soak(
    args: argparse.Namespace, logs: Path, mock_url: str, mock_pid: int | None, source: str
) -> int:
    clients = min(args.soak_clients, 20) if args.smoke else args.soak_clients
    events = min(args.soak_events, 20) if args.smoke else args.soak_events
    setup, child = await _with_balancer(args, logs, mock_url, mock_pid, 1)
    try:
        result = await soak.soak(setup, clients, events, args.soak_delay, args.duration)
    finally:
        if child is not None:
            await child.stop()
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
