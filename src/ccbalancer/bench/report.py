"""Medians over repeats, the targets of the benchmark issue, the printed table and the JSON.

Counts that decide completeness (missing, duplicated, ... events) are summed over repeats, so
one bad repeat cannot hide behind a median; timings and rates are medians. Targets are
reported, never enforced: the exit status depends on completeness alone.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import ccbalancer
from ccbalancer.bench.compare import FLOORS
from ccbalancer.bench.measure import TIMELINE_WINDOW as TIMELINE_SLICE

# inside these objects every number is a count to add up over repeats
_SUMMED = {"completeness", "errors", "shared_roles"}


def merge(values: list[Any], summed: bool = False) -> Any:
    """Merge one field of several repeats: dicts per key, booleans with ``all``, counts by sum,
    everything else by median (``None`` values ignored)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = dict.fromkeys(k for v in present for k in v)
        return {k: merge([v.get(k) for v in present], summed or k in _SUMMED) for k in keys}
    if all(isinstance(v, bool) for v in present):
        return all(present)
    if all(isinstance(v, int | float) for v in present):
        if summed:
            return sum(present)
        middle = statistics.median(present)
        return round(middle, 4) if isinstance(middle, float) else middle
    return present[-1]


def source_digest() -> str:
    """A fingerprint of the balancer's source as it is on disk now (the bench excluded): the
    processes under test are started from these files, so results name the code they
    measured even in an uncommitted working tree."""
    root = Path(ccbalancer.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        if "bench" not in path.relative_to(root).parts:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# -- targets (docs/benchmarks.md) ---------------------------------------------------------------


def _get(summary: dict[str, Any], *path: str) -> Any:
    value: Any = summary
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


Check = tuple[str, str, tuple[str, ...], Callable[[float], bool], str]
_CHECKS: tuple[Check, ...] = (
    ("streams100", "added p99 <= 2 ms", ("added", "latency_ms", "p99"), lambda v: v <= 2, "ms"),
    ("streams1000", "added p99 <= 15 ms", ("added", "latency_ms", "p99"), lambda v: v <= 15, "ms"),
    ("streams1000", "added TTFB p50 <= 50 ms", ("added", "ttfb_ms", "p50"), lambda v: v <= 50,
     "ms"),
    ("streams1000", "(info) added first-delta p50 <= 50 ms", ("added", "first_event_ms", "p50"),
     lambda v: v <= 50, "ms"),
    ("streams100", "balancer CPU <= 0.05 ms/event", ("balancer", "cpu_ms_per_event"),
     lambda v: v <= 0.05, "ms/event"),
    ("streams1000", "balancer CPU <= 0.05 ms/event", ("balancer", "cpu_ms_per_event"),
     lambda v: v <= 0.05, "ms/event"),
    ("flatout", "balancer CPU <= 0.05 ms/event", ("balancer", "cpu_ms_per_event"),
     lambda v: v <= 0.05, "ms/event"),
    ("streams1000", "peak RSS <= 100 MB", ("balancer", "peak_rss_mb"), lambda v: v <= 100, "MB"),
    ("nonstream", ">= 3,000 req/s through the balancer", ("balancer", "events_per_s"),
     lambda v: v >= 3000, "req/s"),
    ("shared", "exactly 1 upstream call", ("balancer", "upstream_calls"), lambda v: v == 1,
     "calls"),
    ("shared", "CPU <= 2x one client", ("cpu_ratio_vs_one_client",), lambda v: v <= 2, "x"),
)  # fmt: skip


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue whose scenario ran: measured median and met or not."""
    out: list[dict[str, Any]] = []
    for name, data in scenarios.items():
        c = data["median"]["balancer"]["completeness"]
        lossless = all(
            run["completeness"][k] == 0
            for run in runs(data["median"]).values()
            for k in ("missing", "duplicated", "reordered", "unexpected")
        )
        out.append(
            {"scenario": name, "target": "zero lost/duplicated/reordered, all finished",
             "value": f"{c['finished']}/{c['streams']} finished", "met": data["complete"]
             and lossless}
        )  # fmt: skip
    for name, label, path, ok, unit in _CHECKS:
        if name not in scenarios:
            continue
        value = _get(scenarios[name]["median"], *path)
        met = None if value is None else ok(float(value))
        shown = "n/a" if value is None else f"{value:g} {unit}"
        out.append({"scenario": name, "target": label, "value": shown, "met": met})
    shared = _get(scenarios.get("shared", {}), "median", "balancer", "cpu_s")
    unshared = _get(scenarios.get("streams100", {}), "median", "balancer", "cpu_s")
    if shared is not None and unshared:  # same stream shape: 100 x 200 events at 20 ms
        out.append(
            {"scenario": "shared", "target": "(info) CPU vs 100 unshared streams",
             "value": f"{shared / unshared:.2f} x", "met": None}
        )  # fmt: skip
    return out


def runs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every measured run of a repeat (or of the medians) by its label in the table."""
    keys = ("direct", "balancer", "one_client", "nginx", *(f.key for f in FLOORS.values()))
    out = {key: result[key] for key in keys if key in result}
    for name, variant in result.get("variants", {}).items():
        out[f"v:{name}"] = variant["run"]
    return out


# -- the table ----------------------------------------------------------------------------------


def _ms(value: Any, width: int = 8) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


def _num(value: Any, width: int, digits: int = 0) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width},.{digits}f}"


def _row(label: str, run: dict[str, Any], is_added: bool) -> str:
    lat, ttfb, first = run["latency_ms"], run["ttfb_ms"], run["first_event_ms"]
    cells = [
        f"  {label:<{LABEL}}",
        *(_ms(lat[k]) for k in ("p50", "p99", "p99.9", "max")),
        " |",
        _ms(ttfb["p50"]),
        _ms(ttfb["p99"]),
        _ms(first["p50"]),
        _ms(first["p99"]),
        " |",
        _num(run["events_per_s"], 10),
    ]
    if not is_added:
        c = run["completeness"]
        counts = f"{c['missing']}/{c['duplicated']}/{c['reordered']}"
        cells += [
            " |",
            f"{counts:>9}",
            f"{c['finished']:>7}/{c['streams']:<6}",
            "|",
            _num(run.get("cpu_ms_per_event"), 8, 4),
            _num(run.get("peak_rss_mb"), 7, 1),
            _num(run.get("upstream_calls"), 7),
        ]
    return "".join(cells)


LABEL = 14  # "v:" + a variant name is cut to fit

HEADER = (
    f"  {'run':<{LABEL}}{'p50':>8}{'p99':>8}{'p99.9':>8}{'max':>8} |{'ttfb50':>8}{'ttfb99':>8}"
    f"{'1st50':>8}{'1st99':>8} |"
    f"{'events/s':>10} |{'mis/dup/ro':>10}{'finished':>13} |{'cpu ms/ev':>9}{'RSS MB':>7}"
    f"{'upstrm':>7}"
)


def _cpu_line(label: str, run: dict[str, Any], direct: dict[str, Any]) -> str:
    return (
        f"  CPU-s during the {label} run: {label} {run['cpu_s']}, mock {run['mock_cpu_s']},"
        f" bench {run['client_cpu_s']}, other processes {run['others_cpu_s']}"
        f" (direct run: others {direct['others_cpu_s']})"
    )


def table(scenarios: dict[str, Any], repeat: int) -> str:
    lines = [
        "ms. latency: per event (client read minus mock stamp; non-streaming: whole request);"
        " ttfb: first body byte; 1st: first text delta.",
        f"{'medians of ' + str(repeat) + ' repeats' if repeat > 1 else 'one run'};"
        " completeness counts (missing/duplicated/reordered, finished) summed over repeats.",
        HEADER,
    ]
    for name, data in scenarios.items():
        median = data["median"]
        flag = "" if data["complete"] else "   << INCOMPLETE"
        lines.append(f"{name}: {data['title']}{flag}")
        lines.append(_row("direct", median["direct"], False))
        lines.append(_row("balancer", median["balancer"], False))
        lines.append(_row("added", median["added"], True))
        lines.append(_cpu_line("balancer", median["balancer"], median["direct"]))
        if "one_client" in median:
            lines.append(_row("1 client", median["one_client"], False))
            roles = median["balancer"]["shared_roles"]
            lines.append(
                f"  shared roles {roles}; balancer CPU {median['balancer']['cpu_s']} s for all"
                f" clients vs {median['one_client']['cpu_s']} s for one"
                f" (x{median.get('cpu_ratio_vs_one_client')})"
            )
        if "nginx" in median:
            lines.append(_row("nginx", median["nginx"], False))
            lines.append(_row("nginx added", median["nginx_added"], True))
            lines.append(_cpu_line("nginx", median["nginx"], median["direct"]))
        for floor in FLOORS.values():
            if floor.key in median:
                lines.append(_row(floor.label, median[floor.key], False))
                lines.append(_row("  added", median[f"{floor.key}_added"], True))
                lines.append(_cpu_line(floor.label, median[floor.key], median["direct"]))
        for variant, value in median.get("variants", {}).items():
            lines.append(_row(f"v:{variant}"[:LABEL], value["run"], False))
            lines.append(_row("  added", value["added"], True))
    return "\n".join(lines)


def timeline(scenarios: dict[str, Any]) -> str:
    """Per repeat of every streaming scenario: latency by half-second slice of the run, direct
    and through the balancer side by side, with the balancer's RSS at the end of the slice."""
    lines = ["timeline: per-event latency (ms) by when the event was read; RSS in MB"]
    for name, data in scenarios.items():
        for number, result in enumerate(data["repeats"], 1):
            direct, balancer = result["direct"], result["balancer"]
            if "timeline" not in balancer:
                continue  # non-streaming: one latency per request
            lines.append(f"{name} run {number}")
            lines.append(
                f"  {'t (s)':>6} | {'direct n':>9} {'p50':>7} {'p99':>7} |"
                f" {'balancer n':>10} {'p50':>7} {'p99':>7} {'max':>7} | {'RSS':>6}"
            )
            by_time = {row["t_s"]: row for row in direct["timeline"]}
            rss = balancer.get("rss_mb_over_time") or []
            for row in balancer["timeline"]:
                other = by_time.get(row["t_s"], {})
                seen = [mb for t, mb in rss if t <= row["t_s"] + TIMELINE_SLICE]
                lines.append(
                    f"  {row['t_s']:>6.1f} | {other.get('events', 0):>9,} {_ms(other.get('p50'))}"
                    f"{_ms(other.get('p99'))} | {row['events']:>10,} {_ms(row['p50'])}"
                    f"{_ms(row['p99'])}{_ms(row['max'])} | {_num(seen[-1] if seen else None, 6, 1)}"
                )
    return "\n".join(lines)


def target_lines(checks: list[dict[str, Any]]) -> str:
    lines = ["targets (reported, not enforced):"]
    for check in checks:
        mark = {True: "met", False: "NOT MET", None: "n/a"}[check["met"]]
        if check["target"].startswith("(info)"):
            mark = "info"
        lines.append(f"  {mark:<8} {check['scenario']:<12} {check['target']:<46} {check['value']}")
    return "\n".join(lines)


def command_line(argv: list[str] | None = None) -> str:
    """The command as run, with ``--variant-header`` values masked: a variant may send a
    client key, and the JSON is meant to be kept and shared."""
    args = list(sys.argv[1:] if argv is None else argv)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag == "--variant-header" and eq:
            args[i] = f"{flag}={_masked(value)}"
        elif i and args[i - 1] == "--variant-header":
            args[i] = _masked(arg)
    return " ".join(["ccbalancer", *args])


def _masked(spec: str) -> str:
    head, sep, _ = spec.partition(":")
    return f"{head}{sep}***" if sep else spec
