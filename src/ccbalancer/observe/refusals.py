"""Rejected inbound keys: counted, logged without the key, and kept as a recent count.

Claude Code retries a 401 quietly for minutes, so a wrong key looks like a hang unless the
balancer says so. Every rejection is counted; at most ``limit`` of them per ``interval`` are
logged (a client retrying in a loop must not flood the log), and the next line that is logged
says how many were left out. A line names the path, the client address and — instead of the key
— the first 8 hex digits of the SHA-256 of the whole key as presented, which an operator can
compare with ``key_sha256`` computed on the client's side. ``recent`` is the count over the last
``window`` seconds, for the dashboard.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable

from structlog.stdlib import BoundLogger

LOG_LIMIT = 5  # lines per interval
LOG_INTERVAL = 60.0  # seconds
RECENT_WINDOW = 300.0  # seconds


def key_sha256(presented: str) -> str:
    """First 8 hex digits of the SHA-256 of the key as it arrived (bytes that were not UTF-8
    are hashed as they came, so the digest matches what the client holds)."""
    return hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()[:8]


class Refusals:
    def __init__(
        self,
        log: BoundLogger,
        clock: Callable[[], float],
        limit: int = LOG_LIMIT,
        interval: float = LOG_INTERVAL,
        window: float = RECENT_WINDOW,
    ) -> None:
        self._log = log
        self._clock = clock
        self._limit = limit
        self._interval = interval
        self.window = window
        self.total = 0
        self._period = float("-inf")  # start of the current logging interval
        self._logged = 0  # lines logged in it
        self._suppressed = 0  # rejections not logged since the last line
        self._seconds: deque[list[float]] = deque()  # [whole second, count], oldest first

    def rejected(self, presented: str, path: str, client: str | None, admin: bool) -> None:
        now = self._clock()
        self.total += 1
        second = float(int(now))
        if self._seconds and self._seconds[-1][0] == second:
            self._seconds[-1][1] += 1
        else:
            self._seconds.append([second, 1])
        self._forget(now)
        if now - self._period >= self._interval:
            self._period, self._logged = now, 0
        if self._logged >= self._limit:
            self._suppressed += 1
            return
        self._logged += 1
        suppressed, self._suppressed = self._suppressed, 0
        self._log.warning(
            "auth_rejected",
            path=path,
            client=client or "",
            admin=admin,
            key_sha256=key_sha256(presented) if presented else "(no key)",
            **({"suppressed": suppressed} if suppressed else {}),
        )

    def recent(self) -> int:
        """Rejections in the last ``window`` seconds."""
        self._forget(self._clock())
        return int(sum(count for _, count in self._seconds))

    def _forget(self, now: float) -> None:
        while self._seconds and self._seconds[0][0] <= now - self.window:
            self._seconds.popleft()
