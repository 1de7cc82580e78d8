"""One repeat of one scenario: the load sent directly to the mock, then the same load (fresh
nonces, same parameters) through the balancer, through nginx (``--reference nginx``), through
the floors (``--reference aiohttp``, ``--reference python``) and through each ``--variant``.

Around each measured run the mock's request counter tells how many upstream calls the run cost
(the sharing scenario must cost exactly one), and a ``Watch`` records the CPU and RSS of the
proxy under test (its whole process tree: nginx's master and worker) and the mock's CPU. A
short unmeasured warm-up precedes each run so the first measured request does not pay for
imports and connection set-up that a long-running proxy has long paid.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import psutil

from ccbalancer.bench import compare, measure, report
from ccbalancer.bench.client import HEADERS, get_json, run_streams, run_whole
from ccbalancer.bench.procs import MB, Watch
from ccbalancer.bench.scenarios import PROVIDER, Bodies, Scenario, body
from ccbalancer.bench.variants import Variant

WARMUP_STREAMS = 5


@dataclass(frozen=True, slots=True)
class Target:
    """Where a run sends its requests (a Messages endpoint), the PID of the process tree it
    measures (None: none, the direct run) and the request headers."""

    url: str
    pid: int | None
    headers: Mapping[str, str] = field(default_factory=lambda: HEADERS)

    @classmethod
    def at(cls, root: str, pid: int | None, headers: Mapping[str, str] = HEADERS) -> Target:
        """The Messages endpoint of a proxy listening at ``root`` (http://127.0.0.1:P)."""
        return cls(f"{root}/v1/messages", pid, headers)


@dataclass(frozen=True, slots=True)
class Setup:
    """The mock (its root URL and PID when known), nginx when ``--reference nginx``, the
    floors (``--reference aiohttp`` / ``python``) by result key, the variants, and how to get
    a fresh balancer (plain: ``None``, or with a variant's config) for the duration of one
    run."""

    mock_url: str
    mock_pid: int | None
    balancer: Callable[[Variant | None], AbstractAsyncContextManager[Target]]
    nginx: Target | None = None
    floors: Mapping[str, Target] = field(default_factory=dict)  # by compare.FLOORS key
    variants: Sequence[Variant] = ()

    @property
    def direct(self) -> Target:
        return Target(f"{self.mock_url}/{PROVIDER}/v1/messages", None)


async def upstream_calls(mock_url: str) -> int:
    stats = await get_json(f"{mock_url}/_mock/stats")
    if not isinstance(stats, dict) or not isinstance(stats.get("requests_total"), int):
        raise RuntimeError(f"unexpected /_mock/stats answer: {stats!r}")
    return int(stats["requests_total"])


def payloads(scenario: Scenario, run_id: str, clients: int | None = None) -> Sequence[bytes]:
    if scenario.kind == "shared":  # identical bodies on purpose: one nonce for the whole run
        return [body(run_id, scenario.events, scenario.delay, stream=True)] * (
            clients or scenario.clients
        )
    if scenario.kind == "whole":
        events, context = scenario.events, scenario.context
        return Bodies(
            scenario.requests,
            lambda i: body(f"{run_id}-{i}", events, 0.0, stream=False, context=context),
        )
    count = clients or scenario.clients
    return [
        body(f"{run_id}-{i}", scenario.events, scenario.delay, stream=True) for i in range(count)
    ]


async def warm_up(target: Target) -> None:
    run_id = uuid.uuid4().hex[:12]
    bodies = [body(f"warm-{run_id}-{i}", 3, 0.0, stream=True) for i in range(WARMUP_STREAMS)]
    await run_streams(target.url, bodies, 0.0, 30.0, target.headers)


async def measured_run(
    scenario: Scenario, setup: Setup, target: Target, clients: int | None = None
) -> dict[str, Any]:
    """One measured run of ``scenario`` against ``target``, watching its process tree."""
    await warm_up(target)
    run_id = uuid.uuid4().hex[:12]
    bodies = payloads(scenario, run_id, clients)
    before = await upstream_calls(setup.mock_url)
    gc.collect()
    url, headers = target.url, target.headers
    async with Watch(target.pid) as watch, Watch(setup.mock_pid) as mock_watch:
        client0 = time.process_time()
        busy0 = _busy()
        if scenario.kind == "whole":
            records = await run_whole(url, bodies, scenario.clients, scenario.deadline, headers)
        else:
            records = await run_streams(url, bodies, scenario.ramp, scenario.deadline, headers)
        busy = _busy() - busy0
        client_cpu = time.process_time() - client0
    after = await upstream_calls(setup.mock_url)
    if scenario.kind == "whole":
        metrics = measure.whole_run(records, scenario.events)
    else:
        metrics = measure.stream_run(records, scenario.events)
    events = metrics["events"]
    cpu = watch.cpu_s
    metrics.update(
        upstream_calls=after - before,
        cpu_s=cpu,
        # CPU ms per forwarded event == CPU seconds per 1,000 events
        cpu_ms_per_event=round(cpu * 1000 / events, 4) if cpu is not None and events else None,
        peak_rss_mb=watch.peak_rss_mb,
        rss_mb_over_time=[[round(t, 2), round(rss / MB, 1)] for t, rss in watch.samples],
        mock_cpu_s=mock_watch.cpu_s,
        client_cpu_s=round(client_cpu, 3),
        # CPU the rest of this shared machine used meanwhile: the noise behind odd numbers
        others_cpu_s=round(busy - client_cpu - (cpu or 0.0) - (mock_watch.cpu_s or 0.0), 2),
    )
    return metrics


def _busy() -> float:
    """CPU seconds all processes of the machine have been busy (every core summed)."""
    t = psutil.cpu_times()
    fields = ("user", "nice", "system", "irq", "softirq", "steal")  # guest is inside user
    return float(sum(getattr(t, name, 0.0) for name in fields))


async def run_repeat(scenario: Scenario, setup: Setup) -> dict[str, Any]:
    """Direct, then through a fresh balancer, then through nginx and the floors
    (``--reference``), then through a fresh balancer per variant. The sharing scenario adds a
    one-client run through the plain balancer as the CPU baseline its target is stated
    against. Ratios are taken within the repeat, so the report's medians are medians of
    same-minute ratios."""
    direct = await measured_run(scenario, setup, setup.direct)
    result: dict[str, Any] = {"direct": direct}
    async with setup.balancer(None) as target:
        balancer = await measured_run(scenario, setup, target)
        result.update(balancer=balancer, added=measure.added(direct, balancer))
        if scenario.kind == "shared":
            one = await measured_run(scenario, setup, target, clients=1)
            result["one_client"] = one
            shared_cpu, one_cpu = balancer["cpu_s"], one["cpu_s"]
            result["cpu_ratio_vs_one_client"] = (
                round(shared_cpu / one_cpu, 2) if shared_cpu is not None and one_cpu else None
            )
    if setup.nginx is not None:
        nginx = await measured_run(scenario, setup, setup.nginx)
        result.update(
            nginx=nginx,
            nginx_added=measure.added(direct, nginx),
            vs_nginx=compare.ratios(balancer, nginx),
        )
    for key, floor_target in setup.floors.items():
        floor = await measured_run(scenario, setup, floor_target)
        result[key] = floor
        result[f"{key}_added"] = measure.added(direct, floor)
        result[f"vs_{key}"] = compare.ratios(balancer, floor)
        if "nginx" in result:
            result[f"{key}_vs_nginx"] = compare.ratios(floor, result["nginx"])
    if setup.variants:
        result["variants"] = {}
    for variant in setup.variants:
        async with setup.balancer(variant) as target:
            run = await measured_run(scenario, setup, target)
        result["variants"][variant.name] = {
            "run": run,
            "added": measure.added(direct, run),
            "vs_balancer": compare.ratios(run, balancer),
        }
    return result


def complete(result: dict[str, Any]) -> bool:
    """Every run of the repeat delivered every event once, in order, and finished; a sharing
    repeat also cost exactly one upstream call through the plain balancer."""
    ok = all(run["completeness"]["ok"] for run in report.runs(result).values())
    if "one_client" in result:
        ok = ok and result["balancer"]["upstream_calls"] == 1
    return ok
