"""One instance's counts per client, in memory: today, this month, this minute, in flight.

The budgets of a single instance are decided here; with Redis (``shared.py``) this ledger
still counts, and decides whenever Redis cannot be reached. Only the current window of each
kind is kept: a count of yesterday is replaced by today's on first use. After a restart the
day and month are rebuilt from the daily totals the history keeps (``seed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ccbalancer.accounting.budgets import Refusal, Totals, Windows, over_budget, over_rate
from ccbalancer.accounting.clients import Client


class Ledger:
    def __init__(self) -> None:
        self._days: dict[str, tuple[str, Totals]] = {}
        self._months: dict[str, tuple[str, Totals]] = {}
        self._minutes: dict[str, tuple[int, int]] = {}  # client -> (minute, requests admitted)
        self._flight: dict[str, int] = {}
        self._slots: dict[str, str] = {}  # request id -> client, for held concurrency slots

    def day(self, name: str, w: Windows) -> Totals:
        entry = self._days.get(name)
        if entry is None or entry[0] != w.day:
            entry = self._days[name] = (w.day, Totals())
        return entry[1]

    def month(self, name: str, w: Windows) -> Totals:
        entry = self._months.get(name)
        if entry is None or entry[0] != w.month:
            entry = self._months[name] = (w.month, Totals())
        return entry[1]

    def this_minute(self, name: str, w: Windows) -> int:
        minute, count = self._minutes.get(name, (-1, 0))
        return count if minute == w.minute else 0

    def in_flight(self, name: str) -> int:
        return self._flight.get(name, 0)

    def refusal(self, client: Client, w: Windows) -> Refusal | None:
        limits = client.limits
        if limits is None:
            return None
        name = client.name
        return over_budget(name, limits, self.day(name, w), self.month(name, w), w) or over_rate(
            name, limits, self.this_minute(name, w), self.in_flight(name), w
        )

    def admit(self, client: Client, request_id: str, w: Windows) -> None:
        """Count an admitted request against the per-minute and concurrency limits."""
        limits = client.limits
        if limits is None:
            return
        name = client.name
        if limits.requests_per_minute is not None:
            self._minutes[name] = (w.minute, self.this_minute(name, w) + 1)
        if limits.max_concurrency is not None:
            self._flight[name] = self._flight.get(name, 0) + 1
            self._slots[request_id] = name

    def release(self, request_id: str) -> None:
        """The request ended: its concurrency slot (if it held one) is free. Idempotent."""
        name = self._slots.pop(request_id, None)
        if name is not None:
            self._flight[name] -= 1

    def count_request(self, name: str, w: Windows) -> None:
        self.day(name, w).requests += 1
        self.month(name, w).requests += 1

    def add(self, name: str, used: Totals, w: Windows) -> None:
        self.day(name, w).add(used)
        self.month(name, w).add(used)

    def seed(self, rows: Iterable[Mapping[str, Any]], w: Windows) -> None:
        """Daily totals kept across restarts (``History.daily``): this month's days."""
        for row in rows:
            day = str(row["day"])
            if not day.startswith(w.month):
                continue
            used = Totals(
                int(row["requests"]),
                int(row["fresh_tokens"]),
                int(row["cache_read_tokens"]),
                int(row["cache_write_tokens"]),
                int(row["output_tokens"]),
                float(row["usd"]),
            )
            name = str(row["client"])
            self.month(name, w).add(used)
            if day == w.day:
                self.day(name, w).add(used)
