"""``ccbalancer stats``: requests and per-provider attempts from the request history.

Two tables over the ``--since`` window, because a request that fails over is one request but
several attempts:

- *requests*: what clients sent; *failed*: requests whose client got an error.
- *attempts* per provider: one request tried at that provider; *failed*: attempts the provider
  failed (the balancer moved on, or the stream broke mid-way), so a provider shows its failures
  even when another one served the client; *served*: requests it answered, shared ones included.
- *TTFT*: time to first content when recorded (leaders), else time to first byte; cached
  replays are left out (they would flatter the provider). Percentiles are nearest-rank.
- *tokens*: from requests that made an upstream call (leader / none), so shared responses are
  not counted twice.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ccbalancer.commands.loading import DEFAULT_CONFIG
from ccbalancer.config.load import load_config
from ccbalancer.errors import ConfigError
from ccbalancer.observe.history import History

DEFAULT_DB = "logs/history.sqlite3"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SINCE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", re.IGNORECASE)
_FAILED_ATTEMPT = frozenset({"failover", "mid_stream"})
_FAILED_OUTCOME = frozenset({"error", "mid_stream_error"})
_UPSTREAM_ROLES = frozenset({"leader", "none"})  # roles that made their own upstream call


def parse_since(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"2d"`` -> seconds."""
    match = _SINCE.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"invalid duration {text!r}: use a positive number and a unit s, m, h or d "
            "(for example 90s, 15m, 1h, 2d)"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: a value that actually occurred, no interpolation."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


@dataclass
class _Line:
    count: int = 0  # requests (total line) or attempts (provider lines)
    failed: int = 0
    served: int = 0
    ttft: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0

    def cells(self, name: str | None) -> list[str]:
        rate = f"{100 * self.failed / self.count:.1f}" if self.count else "-"
        p50, p95 = percentile(self.ttft, 50), percentile(self.ttft, 95)
        counts = [str(self.count), str(self.failed), rate]
        if name is not None:
            counts.append(str(self.served))
        return [
            *([name] if name is not None else []),
            *counts,
            "-" if p50 is None else f"{p50:.0f}",
            "-" if p95 is None else f"{p95:.0f}",
            str(self.input_tokens),
            str(self.output_tokens),
        ]


def _ttft(row: dict[str, Any]) -> float | None:
    value = row.get("ttfc_ms")
    return value if value is not None else row.get("ttfb_ms")


def _summarise(rows: list[dict[str, Any]]) -> tuple[dict[str, _Line], _Line]:
    lines: dict[str, _Line] = {}
    total = _Line()
    for row in rows:
        served = row["provider"]
        for attempt in row["attempts"]:
            line = lines.setdefault(attempt["provider"], _Line())
            line.count += 1
            line.failed += attempt["outcome"] in _FAILED_ATTEMPT
        if served:
            lines.setdefault(served, _Line()).served += 1
        total.count += 1
        total.failed += row["outcome"] in _FAILED_OUTCOME
        ttft = _ttft(row)
        if ttft is not None and row["role"] != "cache" and row["outcome"] == "ok":
            total.ttft.append(ttft)
            if served:
                lines[served].ttft.append(ttft)
        if row["role"] in _UPSTREAM_ROLES:
            total.input_tokens += row["input_tokens"]
            total.output_tokens += row["output_tokens"]
            if served:
                lines[served].input_tokens += row["input_tokens"]
                lines[served].output_tokens += row["output_tokens"]
    return lines, total


def _table(header: list[str], body: list[list[str]], labelled: bool = True) -> list[str]:
    """Right-aligned numbers; the first column left-aligned when it holds names."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0]) if labelled else cells[0].rjust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return [fmt(header), *(fmt(r) for r in body)]


_TIMES = ["p50 TTFT ms", "p95 TTFT ms", "input tokens", "output tokens"]
_LEGEND = (
    "requests: what clients sent; failed: the client got an error.",
    "attempts: a request tried at one provider (one that fails over makes several);",
    "failed: the provider failed it and the balancer moved on or the stream broke;",
    "served: requests the provider answered, shared ones included.",
)


def format_stats(rows: list[dict[str, Any]], since_label: str) -> str:
    if not rows:
        return f"no requests in the last {since_label}"
    lines, total = _summarise(rows)
    attempts = sum(line.count for line in lines.values())
    out = [
        f"ccbalancer stats: last {since_label}, "
        f"{plural(len(rows), 'request')}, {plural(attempts, 'attempt')}",
        "",
    ]
    out += _table(["requests", "failed", "failed %", *_TIMES], [total.cells(None)], False)
    out.append("")
    header = ["provider", "attempts", "failed", "failed %", "served", *_TIMES]
    out += _table(header, [lines[name].cells(name) for name in sorted(lines)])
    out += ["", *_LEGEND, ""]
    roles = Counter(row["role"] for row in rows)
    out.append("by role: " + ", ".join(f"{role} {n}" for role, n in sorted(roles.items())))
    outcomes = Counter(row["outcome"] for row in rows)
    out.append("by outcome: " + ", ".join(f"{k} {n}" for k, n in sorted(outcomes.items())))
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="1h", help="time window, e.g. 90s, 15m, 1h, 2d")
    parser.add_argument("-c", "--config", help="config file (to find settings.history.path)")
    parser.add_argument("--db", help="history database path (overrides the config)")


def _db_path(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    explicit = args.config or os.environ.get("CCBALANCER_CONFIG")
    if not explicit and not Path(DEFAULT_CONFIG).exists():
        return DEFAULT_DB
    return load_config(explicit or DEFAULT_CONFIG).settings.history.path


def history_rows(args: argparse.Namespace, command: str) -> list[dict[str, Any]] | int:
    """The history's rows of ``--since`` (``--db``, else the config's ``history.path``), or the
    exit code once ``command`` has said why there are none: 2 for a bad argument or config,
    1 for a file it cannot read, 0 for no history yet."""
    try:
        since = parse_since(args.since)
        path = _db_path(args)
    except (ValueError, ConfigError) as exc:
        print(f"ccbalancer {command}: {exc}", file=sys.stderr)
        return 2
    if not Path(path).is_file():
        print(f"no history yet at {path}")
        return 0
    try:
        return History.query(path, since)
    except sqlite3.Error as exc:
        print(f"ccbalancer {command}: cannot read {path}: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    rows = history_rows(args, "stats")
    if isinstance(rows, int):
        return rows
    print(format_stats(rows, args.since))
    return 0
