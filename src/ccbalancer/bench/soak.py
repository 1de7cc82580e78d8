"""Soak: hundreds of streams through the balancer, back to back, for ``--duration`` seconds.

Each of ``clients`` slots opens a stream, reads it to the end and opens the next (fresh nonce),
so the number of open streams stays constant while the streams themselves come and go — what
a leak of per-stream state would show up under. The balancer's RSS is sampled every half
second; the verdict compares the median RSS of the warm window with that of the last quarter.
Warm starts once the response cache can have reached its steady state (entries live
``cache.ttl`` = 120 s by default), or at a quarter of the run for shorter soaks.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from array import array
from typing import Any

import aiohttp

from ccbalancer.bench import measure
from ccbalancer.bench.client import fetch, session
from ccbalancer.bench.procs import MB, Watch
from ccbalancer.bench.runner import Target, upstream_calls
from ccbalancer.bench.scenarios import body

CACHE_TTL = 120.0  # the balancer's default cache.ttl: until then the cache only grows
TIMELINE_POINTS = 20


class _Tally:
    def __init__(self) -> None:
        self.completeness = measure.Completeness()
        self.latencies: array[int] = array("q")
        self.frames = 0
        self.open = 0


async def _slot(
    http: aiohttp.ClientSession,
    url: str,
    slot: int,
    tally: _Tally,
    events: int,
    delay: float,
    first_at: float,
    stop_at: float,
) -> None:
    loop = asyncio.get_running_loop()
    run_id = uuid.uuid4().hex[:10]
    number = 0
    deadline = 60.0 + 3 * events * delay
    while loop.time() < stop_at:
        payload = body(f"soak-{run_id}-{slot}-{number}", events, delay, stream=True)
        tally.open += 1
        try:
            record = await fetch(http, url, payload, deadline, first_at if number == 0 else 0.0)
        finally:
            tally.open -= 1
        seen = measure.parse_stream(record, events, tally.completeness)
        tally.latencies.extend(seen.latencies)
        tally.frames += seen.frames
        number += 1


def _verdict(samples: list[tuple[float, int]], duration: float) -> dict[str, Any]:
    warm_from = min(max(duration / 4, CACHE_TTL + 10), duration / 2)
    warm = [rss for t, rss in samples if warm_from <= t < warm_from + duration / 4]
    last = [rss for t, rss in samples if t >= duration * 3 / 4]
    if not warm or not last:
        return {"warm_from_s": warm_from, "warm_rss_mb": None, "end_rss_mb": None}
    warm_mb = statistics.median(warm) / MB
    end_mb = statistics.median(last) / MB
    return {
        "warm_from_s": round(warm_from, 1),
        "warm_rss_mb": round(warm_mb, 1),
        "end_rss_mb": round(end_mb, 1),
        "growth_mb": round(end_mb - warm_mb, 1),
        "growth_pct": round(100 * (end_mb - warm_mb) / warm_mb, 1),
        "cache_steady": warm_from >= CACHE_TTL + 10,
    }


async def soak(
    mock_url: str, target: Target, clients: int, events: int, delay: float, duration: float
) -> dict[str, Any]:
    """Run the soak and return its report (also printed as it goes)."""
    loop = asyncio.get_running_loop()
    tally = _Tally()
    before = await upstream_calls(mock_url)
    start = loop.time()
    stop_at = start + duration
    every = max(1.0, duration / TIMELINE_POINTS)
    timeline: list[dict[str, Any]] = []
    print(f"soak: {clients} streams x {events} events at {delay * 1000:g} ms for {duration:g} s")
    async with (
        Watch(target.pid) as watch,
        session(60.0 + 3 * events * delay) as http,
        asyncio.TaskGroup() as group,
    ):
        ramp = min(events * delay, duration / 4)  # stream ends spread out, not in lock-step
        for slot in range(clients):
            first_at = start + 0.05 + ramp * slot / clients
            group.create_task(
                _slot(http, target.url, slot, tally, events, delay, first_at, stop_at),
                name=f"bench-soak-{slot}",
            )
        next_print = start + every
        while loop.time() < stop_at:
            await asyncio.sleep(min(0.5, max(0.0, next_print - loop.time())))
            if loop.time() >= next_print:
                next_print += every
                rss = watch.rss()
                point = {
                    "t_s": round(loop.time() - start, 1),
                    "rss_mb": None if rss is None else round(rss / MB, 1),
                    "open": tally.open,
                    "streams_done": tally.completeness.streams,
                }
                timeline.append(point)
                print(
                    f"  t={point['t_s']:>7.1f} s  RSS {point['rss_mb']} MB  open {tally.open:>5}"
                    f"  streams done {tally.completeness.streams:>7}",
                    flush=True,
                )
    wall = loop.time() - start
    after = await upstream_calls(mock_url)
    c = tally.completeness
    report: dict[str, Any] = {
        "clients": clients,
        "events": events,
        "delay": delay,
        "duration_s": duration,
        "wall_s": round(wall, 1),
        "latency_ms": measure.percentiles(tally.latencies),
        "events_forwarded": tally.frames,
        "events_per_s": round(tally.frames / wall, 1) if wall else None,
        "upstream_calls": after - before,
        "cpu_s": watch.cpu_s,
        "cpu_ms_per_event": round(watch.cpu_s * 1000 / tally.frames, 4)
        if watch.cpu_s is not None and tally.frames
        else None,
        "peak_rss_mb": watch.peak_rss_mb,
        "rss": _verdict(watch.samples, duration),
        "timeline": timeline,
        "rss_samples": [(round(t, 1), round(rss / MB, 1)) for t, rss in watch.samples],
        "completeness": c.as_dict(),
    }
    return report


def summary(report: dict[str, Any]) -> str:
    c, rss, lat = report["completeness"], report["rss"], report["latency_ms"]
    lines = [
        f"soak: {c['streams']} streams ({c['finished']} finished), missing {c['missing']},"
        f" duplicated {c['duplicated']}, reordered {c['reordered']}, errors {c['errors'] or 0}",
        f"  per-event latency ms: p50 {lat['p50']}  p99 {lat['p99']}  p99.9 {lat['p99.9']}"
        f"  max {lat['max']};  {report['events_per_s']} events/s;"
        f"  balancer CPU {report['cpu_ms_per_event']} ms/event",
        f"  RSS: warm (from {rss['warm_from_s']} s) {rss['warm_rss_mb']} MB -> end"
        f" {rss['end_rss_mb']} MB (growth {rss.get('growth_mb')} MB,"
        f" {rss.get('growth_pct')} %); peak {report['peak_rss_mb']} MB",
    ]
    if rss.get("warm_rss_mb") is not None and not rss.get("cache_steady"):
        lines.append(
            f"  note: shorter than {4 * (CACHE_TTL + 10):g} s, the response cache"
            f" (ttl {CACHE_TTL:g} s) was still filling during the warm window"
        )
    return "\n".join(lines)
