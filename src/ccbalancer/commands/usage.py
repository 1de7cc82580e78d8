"""``ccbalancer usage``: tokens and cost per client, model, provider or Claude Code session,
from the request history (``stats`` stays about providers).

- *requests*: every request the history holds for the key, refused ones included.
- tokens and cost: from requests that made an upstream call of their own (roles ``leader`` and
  ``none``), so an answer shared with a duplicate or replayed from the cache counts once.
  *input* is fresh input; *cache read* and *cache write* are the prompt's other two parts;
  *cache hit* is cache read over the whole prompt.
- *cost*: at the prices in force when each request ended; answers of a model without a price
  are counted under *unpriced* and add nothing.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from ccbalancer.commands.stats import _table, history_rows, plural

GROUPS = ("client", "model", "provider", "session")
_UPSTREAM_ROLES = frozenset({"leader", "none"})


@dataclass
class Line:
    requests: int = 0
    fresh_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    unpriced: int = 0

    @property
    def cache_hit_rate(self) -> float | None:
        prompt = self.fresh_tokens + self.cache_read_tokens + self.cache_write_tokens
        return self.cache_read_tokens / prompt if prompt else None

    def add(self, row: dict[str, Any]) -> None:
        self.requests += 1
        if row["role"] not in _UPSTREAM_ROLES or not row["provider"]:
            return
        read, write = row.get("cache_read_tokens") or 0, row.get("cache_write_tokens") or 0
        self.fresh_tokens += max(0, row["input_tokens"] - read - write)
        self.cache_read_tokens += read
        self.cache_write_tokens += write
        self.output_tokens += row["output_tokens"]
        cost = row.get("cost_usd")
        if cost is None:
            self.unpriced += 1
        else:
            self.usd += cost

    def cells(self, name: str) -> list[str]:
        rate = self.cache_hit_rate
        return [
            name,
            str(self.requests),
            f"{self.fresh_tokens:,}",
            f"{self.cache_read_tokens:,}",
            f"{self.cache_write_tokens:,}",
            f"{self.output_tokens:,}",
            "-" if rate is None else f"{100 * rate:.1f} %",
            f"{self.usd:,.4f}",
        ]


def summarise(rows: list[dict[str, Any]], by: str) -> tuple[dict[str, Line], Line]:
    lines: dict[str, Line] = {}
    total = Line()
    for row in rows:
        key = str(row.get(by) or "")
        lines.setdefault(key, Line()).add(row)
        total.add(row)
    return lines, total


_HEADER = ["requests", "input", "cache read", "cache write", "output", "cache hit", "cost USD"]


def format_usage(rows: list[dict[str, Any]], since_label: str, by: str) -> str:
    if not rows:
        return f"no requests in the last {since_label}"
    lines, total = summarise(rows, by)
    ordered = sorted(lines.items(), key=lambda item: (-item[1].usd, item[0]))
    out = [
        f"ccbalancer usage: last {since_label}, by {by}, {plural(len(rows), 'request')}, "
        f"${total.usd:,.4f}",
        "",
    ]
    body = [line.cells(name or "-") for name, line in ordered] + [total.cells("total")]
    out += _table([by, *_HEADER], body)
    if total.unpriced:
        out += [
            "",
            f"{plural(total.unpriced, 'answer')} of a model without a known price cost $0 "
            "here (add it under prices: in the config).",
        ]
    return "\n".join(out)


def as_json(rows: list[dict[str, Any]], since_label: str, by: str) -> bytes:
    lines, total = summarise(rows, by)

    def entry(line: Line) -> dict[str, Any]:
        return {**asdict(line), "cache_hit_rate": line.cache_hit_rate}

    return orjson.dumps(
        {
            "since": since_label,
            "by": by,
            "rows": [{by: name, **entry(line)} for name, line in sorted(lines.items())],
            "total": entry(total),
        },
        option=orjson.OPT_INDENT_2,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="1d", help="time window, e.g. 90s, 15m, 1h, 2d")
    parser.add_argument("--by", choices=GROUPS, default="client", help="one line per ...")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("-c", "--config", help="config file (to find settings.history.path)")
    parser.add_argument("--db", help="history database path (overrides the config)")


def run(args: argparse.Namespace) -> int:
    rows = history_rows(args, "usage")
    if isinstance(rows, int):
        return rows
    if args.json:
        sys.stdout.write(as_json(rows, args.since, args.by).decode() + "\n")
    else:
        print(format_usage(rows, args.since, args.by))
    return 0
