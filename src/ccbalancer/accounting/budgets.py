"""Limits and their windows: whether a client may start one more request, and what it is told.

Sans-IO: the counts come from a ledger (``ledger.py`` in memory, ``shared.py`` in Redis), the
time from the caller. Windows are calendar ones in UTC: the minute, the day (00:00 UTC), the
month (the 1st, 00:00 UTC). Token and money budgets compare what was used — the final usage
of answers already finished — so they stop a client at the first request after it went over;
``requests_per_minute`` and ``max_concurrency`` count what was admitted.

A refusal is a 429 ``rate_limit_error`` that says which limit and when it resets. For a budget
the ``retry-after`` is the time to the reset, however long, with ``x-should-retry: false``:
Claude Code then stops at once and shows the message, instead of retrying for minutes
(CLAUDE_CODE.md section 6). For the per-minute and concurrency limits it is at most 60 s, so
Claude Code waits and retries on its own.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from ccbalancer.config.clients import ClientConfig

BUDGETS = ("tokens_per_day", "usd_per_day", "usd_per_month")
CONCURRENCY_RETRY = 1  # seconds: a slot frees when any of the client's requests ends


@dataclass(slots=True)
class Totals:
    """One client's use in one window."""

    requests: int = 0
    fresh: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.fresh + self.cache_read + self.cache_write + self.output

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.fresh += other.fresh
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.output += other.output
        self.usd += other.usd


@dataclass(slots=True)  # not frozen: made per request, and a frozen __init__ costs 3x
class Windows:
    """The windows ``now`` falls in, and when each ends (epoch seconds). Read-only."""

    now: float
    minute: int  # minutes since the epoch
    day: str  # 2026-12-07
    month: str  # 2026-12
    day_ends: float
    month_ends: float

    @property
    def minute_ends(self) -> float:
        return (self.minute + 1) * 60.0


def windows(now: float) -> Windows:
    return Calendar().at(now)


class Calendar:
    """``Windows`` for a time, the day's part worked out once a day (this runs per request).
    A UTC day is exactly 86,400 epoch seconds: no daylight saving, leap seconds smeared."""

    def __init__(self) -> None:
        self._day_number = -1
        self._parts: tuple[str, str, float, float] = ("", "", 0.0, 0.0)

    def at(self, now: float) -> Windows:
        number = int(now // 86400)
        if number != self._day_number:
            midnight = dt.datetime.fromtimestamp(number * 86400, dt.UTC)
            next_month = (midnight.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
            self._parts = (
                midnight.strftime("%Y-%m-%d"),
                midnight.strftime("%Y-%m"),
                (number + 1) * 86400.0,
                next_month.timestamp(),
            )
            self._day_number = number
        return Windows(now, int(now // 60), *self._parts)


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # the config key
    message: str
    retry_after: int  # seconds
    final: bool  # x-should-retry: false (a budget: retrying before the reset cannot succeed)

    @property
    def headers(self) -> dict[str, str]:
        headers = {"retry-after": str(self.retry_after)}
        if self.final:
            headers["x-should-retry"] = "false"
        return headers


def over_budget(
    name: str, limits: ClientConfig, day: Totals, month: Totals, w: Windows
) -> Refusal | None:
    """The first token or money budget ``name`` has used up, as a refusal."""
    checks = (
        ("tokens_per_day", limits.tokens_per_day, day.tokens, w.day_ends),
        ("usd_per_day", limits.usd_per_day, day.usd, w.day_ends),
        ("usd_per_month", limits.usd_per_month, month.usd, w.month_ends),
    )
    for key, limit, used, ends in checks:
        if limit is not None and used >= limit:
            return budget_refusal(name, key, limit, used, ends, w.now)
    return None


def budget_refusal(
    name: str, key: str, limit: float, used: float, ends: float, now: float
) -> Refusal:
    if key == "tokens_per_day":
        spent = f"{int(used):,} tokens of its {key} {int(limit):,}"
    else:
        spent = f"{dollars(used)} of its {key} {dollars(limit)}"
    reset = dt.datetime.fromtimestamp(ends, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    wait = max(1, math.ceil(ends - now))
    message = (
        f"ccbalancer: client {name!r} has used {spent}. The budget resets at {reset} "
        f"(in {_span(wait)}); until then its requests are refused."
    )
    return Refusal(key, message, wait, True)


def over_rate(
    name: str, limits: ClientConfig, this_minute: int, in_flight: int, w: Windows
) -> Refusal | None:
    """``requests_per_minute`` and ``max_concurrency``, counted before this request."""
    rpm = limits.requests_per_minute
    if rpm is not None and this_minute >= rpm:
        return rate_refusal(name, "requests_per_minute", rpm, w)
    concurrency = limits.max_concurrency
    if concurrency is not None and in_flight >= concurrency:
        return rate_refusal(name, "max_concurrency", concurrency, w)
    return None


def rate_refusal(name: str, key: str, limit: int, w: Windows) -> Refusal:
    if key == "requests_per_minute":
        wait = min(60, max(1, math.ceil(w.minute_ends - w.now)))
        message = (
            f"ccbalancer: client {name!r} has sent its {key} {limit} this minute; "
            f"the next minute starts in {wait}s."
        )
        return Refusal(key, message, wait, False)
    message = (
        f"ccbalancer: client {name!r} already has {limit} requests in flight, its {key}; "
        "retry when one of them has ended."
    )
    return Refusal(key, message, CONCURRENCY_RETRY, False)


def dollars(value: float) -> str:
    """Cents for sums a person reads as money, more digits for the tiny ones of one request."""
    if value >= 10:
        return f"${value:,.2f}"
    if value >= 0.01 or value == 0:
        return f"${value:,.4f}"
    return f"${value:.8f}".rstrip("0")


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = max(1, math.ceil(rest / 60)) if not days and not hours else rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"
