"""Rate-limit headers -> facts: how much each limit has left and when it resets (issue 17).

Providers report their limits on every response, errors included:

* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,
  remaining,reset}`` (reset: an RFC 3339 time, when the bucket is full again), and for
  subscription traffic ``anthropic-ratelimit-unified-status`` (``allowed``,
  ``allowed_warning``, ``rejected``), ``-unified-reset`` (epoch seconds) and per window
  (``5h``, ``7d``, ...) ``-unified-<window>-utilization`` (0..1).
* OpenAI and the servers that copy it: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
  (reset: a Go duration such as ``6m0s``, ``1s``, ``20ms``), with window suffixes on some
  (``-requests-day``, ``-tokens-minute``) and plain seconds on others.

``parse`` turns one response's headers into a ``Reading`` whose deadlines are on the caller's
monotonic clock (the absolute resets are converted with the wall time given). A reading says
nothing once its reset has passed; one without a reset time is trusted for ``UNTIMED``
seconds. Sans-IO.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

UNTIMED = 60.0  # seconds a reading without a reset time is trusted (limits are per minute)
_ANTHROPIC = "anthropic-ratelimit-"
_UNIFIED = "anthropic-ratelimit-unified-"
_OPENAI = "x-ratelimit-"
_FIELDS = ("limit", "remaining", "reset")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def seconds_until(value: str, wall_now: float) -> float | None:
    """Seconds from ``wall_now`` to a reset given as a Go duration (``6m0s``), plain seconds,
    an RFC 3339 time or epoch seconds/milliseconds; None when unreadable. Never negative."""
    text = value.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if number > 1e12:  # epoch milliseconds
            return max(0.0, number / 1000 - wall_now)
        if number > 1e9:  # epoch seconds
            return max(0.0, number - wall_now)
        return max(0.0, number)
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without a zone could be any zone's
    return max(0.0, moment.timestamp() - wall_now)


@dataclass(slots=True)
class Limit:
    """One limit's state as last reported (``name``: ``requests``, ``input-tokens``, ...)."""

    remaining: int | None = None
    limit: int | None = None
    reset_at: float | None = None  # monotonic

    @property
    def fraction(self) -> float | None:
        if self.remaining is None or not self.limit:
            return None
        return max(0.0, min(1.0, self.remaining / self.limit))


@dataclass(slots=True)
class Reading:
    """Everything one provider said about its limits in its latest response."""

    seen: float  # monotonic
    limits: dict[str, Limit] = field(default_factory=dict)
    unified_status: str = ""
    unified_reset_at: float | None = None
    utilization: float | None = None  # the highest unified window utilization, 0..1
    blocked_until: float = 0.0  # a 429 or a rejected status: no room before this

    def expiry(self, reset_at: float | None) -> float:
        return reset_at if reset_at is not None else self.seen + UNTIMED


def parse(headers: Iterable[tuple[str, str]], now: float, wall_now: float) -> Reading | None:
    """The rate-limit facts in one response's headers; None when it carries none."""
    reading = Reading(now)
    found = False
    for raw_name, value in headers:
        name = raw_name.lower()
        if name.startswith(_UNIFIED):
            found = True
            _unified(reading, name[len(_UNIFIED) :], value, now, wall_now)
        elif name.startswith(_ANTHROPIC):
            found |= _anthropic(reading, name[len(_ANTHROPIC) :], value, now, wall_now)
        elif name.startswith(_OPENAI):
            found |= _openai(reading, name[len(_OPENAI) :], value, now, wall_now)
    if reading.unified_status == "rejected":
        reading.blocked_until = reading.expiry(reading.unified_reset_at)
    return reading if found else None


def _set(reading: Reading, limit_name: str, kind: str, value: str, at: float, wall: float) -> bool:
    if kind == "reset":
        seconds = seconds_until(value, wall)
        if seconds is None:
            return False
        reading.limits.setdefault(limit_name, Limit()).reset_at = at + seconds
        return True
    try:
        number = max(0, int(float(value)))
    except (ValueError, OverflowError):
        return False
    entry = reading.limits.setdefault(limit_name, Limit())
    if kind == "remaining":
        entry.remaining = number
    else:
        entry.limit = number
    return True


def _anthropic(reading: Reading, rest: str, value: str, now: float, wall: float) -> bool:
    """``requests-remaining`` and the like (the limit name may hold dashes)."""
    limit_name, _, kind = rest.rpartition("-")
    if kind not in _FIELDS or not limit_name:
        return False
    return _set(reading, limit_name, kind, value, now, wall)


def _openai(reading: Reading, rest: str, value: str, now: float, wall: float) -> bool:
    """``remaining-requests``, ``reset-tokens-minute``: the field comes first."""
    kind, _, limit_name = rest.partition("-")
    if kind not in _FIELDS or not limit_name.startswith(("requests", "tokens")):
        return False
    return _set(reading, limit_name, kind, value, now, wall)


def _unified(reading: Reading, rest: str, value: str, now: float, wall: float) -> None:
    """The overall status and reset, and the busiest window's utilization (the per-window
    resets and statuses add nothing: a rejected window makes the overall status rejected)."""
    if rest == "status":
        reading.unified_status = value.strip().lower()
    elif rest == "reset":
        seconds = seconds_until(value, wall)
        if seconds is not None:
            reading.unified_reset_at = now + seconds
    elif rest.endswith("-utilization"):
        try:
            used = float(value)
        except ValueError:
            return
        if math.isfinite(used):
            reading.utilization = max(reading.utilization or 0.0, min(1.0, max(0.0, used)))


def input_side(limit_name: str) -> bool:
    """Limits that a request's prompt draws on (``tokens`` is the combined one)."""
    return limit_name.startswith(("tokens", "input-tokens"))


def reset_wait(headers: Iterable[tuple[str, str]], wall_now: float | None = None) -> float | None:
    """For a 429 without ``retry-after``: seconds until the exhausted limit resets (the
    longest of those at 0, else the longest reset given); None when the headers hold none."""
    # parsed against a monotonic "now" of 0, every reset_at is the seconds left
    reading = parse(headers, 0.0, time.time() if wall_now is None else wall_now)
    if reading is None:
        return None
    if reading.unified_status == "rejected" and reading.unified_reset_at is not None:
        return reading.unified_reset_at
    resets = [lim.reset_at for lim in reading.limits.values() if lim.reset_at is not None]
    empty = [
        lim.reset_at
        for lim in reading.limits.values()
        if lim.reset_at is not None and lim.remaining == 0
    ]
    chosen = empty or resets
    return max(chosen) if chosen else None


def retry_after(headers: list[tuple[str, str]], wall_now: float) -> float | None:
    """``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date); None if absent."""
    found = {name.lower(): value for name, value in headers}
    milliseconds = found.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = found.get("retry-after")
    if value is None:
        return None
    seconds = seconds_until(value, wall_now)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - wall_now)
