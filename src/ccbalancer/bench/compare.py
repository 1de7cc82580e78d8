"""ccbalancer beside nginx (``--reference nginx``), beside the floors (``--reference aiohttp``,
``--reference python``: ``floor.py``) and beside its own variants (``--variant``): ratios, the
ratio targets of the relay issue, and their part of the printed report (sans-IO).

A ratio is taken within one repeat (the runs it compares ran minutes apart on the same
machine) and the report shows the median of those per-repeat ratios, not a ratio of medians.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Floor:
    """One floor (``floor.py``): its key in a repeat's results (``vs_<key>``,
    ``<key>_vs_nginx``...) and its label in the printed report (at most 14 characters)."""

    key: str
    label: str


FLOORS = {  # by --reference name
    "aiohttp": Floor("aiohttp", "aiohttp floor"),
    "python": Floor("python", "python floor"),
}

# (name, path inside a run's metrics)
RATIOS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cpu_per_event", ("cpu_ms_per_event",)),  # non-streaming: CPU per request
    ("events_per_s", ("events_per_s",)),  # non-streaming: requests/s
    ("ttfb_p50", ("ttfb_ms", "p50")),
    ("first_event_p50", ("first_event_ms", "p50")),
    ("latency_p99", ("latency_ms", "p99")),
)


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs <= 0 or ours < 0:
        return None
    return round(ours / theirs, 3)


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    """``ours`` / ``theirs`` for CPU per event, events/s, TTFB p50, first delta p50 and
    latency p99 of two runs of the same scenario."""
    return {name: ratio(_get(ours, path), _get(theirs, path)) for name, path in RATIOS}


Check = tuple[str, str, str, Callable[[float], bool]]
TARGETS: tuple[Check, ...] = (
    ("streams100", "CPU/event <= 2x nginx", "cpu_per_event", lambda v: v <= 2),
    ("streams1000", "CPU/event <= 2x nginx", "cpu_per_event", lambda v: v <= 2),
    ("nonstream", "CPU/request <= 6x nginx", "cpu_per_event", lambda v: v <= 6),
    ("streams1000", "events/s >= 0.95x nginx", "events_per_s", lambda v: v >= 0.95),
    ("streams1000", "TTFB p50 <= 2x nginx", "ttfb_p50", lambda v: v <= 2),
)


def targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """The relay issue's ratio targets whose scenario ran through nginx: median ratio, met
    or not (the same shape as ``report.targets``). When a floor ran too, each check also says
    where that floor stands against the same target (``floors``: key -> ratio and met): a
    target the aiohttp floor misses is out of reach for anything built on the prescribed stack;
    one the python floor misses, for anything in CPython on this machine."""
    out: list[dict[str, Any]] = []
    for name, label, key, ok in TARGETS:
        median = _get(scenarios.get(name), ("median",))
        vs = _get(median, ("vs_nginx",))
        if vs is None:
            continue
        value = vs.get(key)
        shown = "n/a" if value is None else f"{value:g} x"
        check: dict[str, Any] = {"scenario": name, "target": label,
                                 "met": None if value is None else ok(float(value))}  # fmt: skip
        notes = []
        for floor in FLOORS.values():
            theirs = _get(median, (f"{floor.key}_vs_nginx", key))
            if theirs is not None:
                met = ok(float(theirs))
                check.setdefault("floors", {})[floor.key] = {"value": theirs, "met": met}
                notes.append(f"{floor.label}: {theirs:g} x, {'met' if met else 'not met'}")
        if notes:
            shown += f"   ({'; '.join(notes)})"
        out.append(check | {"value": shown})
    return out


def _x(value: Any, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.2f}"


_COLUMNS = f"{'CPU/ev':>9}{'events/s':>9}{'ttfb50':>9}{'1st50':>9}{'p99':>9}"


def _cells(vs: dict[str, Any]) -> str:
    return "".join(_x(vs.get(name)) for name, _ in RATIOS)


def lines(scenarios: dict[str, Any]) -> str:
    """The ratio tables: ccbalancer / nginx per scenario with both proxies' added p99,
    ccbalancer / each floor, each floor / nginx, and each variant / the plain balancer. Empty
    when none ran."""
    out: list[str] = []
    medians = {name: data["median"] for name, data in scenarios.items()}
    # (ratio key, numerator, its added key, denominator, its added key)
    pairs = [("vs_nginx", "ccbalancer", "added", "nginx", "nginx_added")]
    for f in FLOORS.values():
        pairs.append((f"vs_{f.key}", "ccbalancer", "added", f.label, f"{f.key}_added"))
    for f in FLOORS.values():
        pairs.append((f"{f.key}_vs_nginx", f.label, f"{f.key}_added", "nginx", "nginx_added"))
    for key, ours_name, ours_added, theirs_name, theirs_added in pairs:
        rows = {name: m for name, m in medians.items() if key in m}
        if not rows:
            continue
        out += [
            f"{ours_name} / {theirs_name}, same run (median over repeats of each repeat's ratio;"
            f" CPU/ev < 1 and events/s > 1 favour {ours_name}; non-streaming: per request):",
            f"  {'scenario':<13}{_COLUMNS} | added p99 ms vs direct:"
            f" {ours_name:>13} {theirs_name:>13}",
        ]
        for name, m in rows.items():
            ours = _get(m, (ours_added, "latency_ms", "p99"))
            theirs = _get(m, (theirs_added, "latency_ms", "p99"))
            out.append(f"  {name:<13}{_cells(m[key])} |{_x(ours, 37)}{_x(theirs, 14)}")
    with_variants = {name: m for name, m in medians.items() if m.get("variants")}
    if with_variants:
        out += [
            "variant / plain balancer, same run (median over repeats of each repeat's ratio):",
            f"  {'scenario':<13}{'variant':<16}{_COLUMNS} | added p99 ms",
        ]
        for name, m in with_variants.items():
            for variant, data in m["variants"].items():
                added = _get(data, ("added", "latency_ms", "p99"))
                out.append(
                    f"  {name:<13}{variant:<16}{_cells(data['vs_balancer'])} |{_x(added, 13)}"
                )
    return "\n".join(out)
