"""Request history in SQLite, written by a worker thread so the event loop never waits on disk.

``add`` only puts the finished ``RequestRecord`` on a bounded queue (a full queue drops the
record and counts it: losing a history row is better than stalling streams). The worker owns
the only writing connection, writes up to ``BATCH_ROWS`` rows per transaction or whatever
arrived within ``BATCH_SECONDS``, and deletes rows older than the retention at start and hourly.
``query`` is the read side, used by ``ccbalancer stats``, ``ccbalancer usage`` and the
dashboard.

A second table, ``usage_daily``, holds each client's totals per UTC day (``add_usage``: one
row per client and day, added to in place). Budgets are rebuilt from it after a restart
(``daily``), so it is kept for ``DAILY_KEEP_DAYS`` whatever ``retention_days`` says: a month
is always complete. Files written before a column existed are brought up to date when the
writer opens them (the new columns of old rows are empty); the readers accept either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ccbalancer.observe.record import DailyUsage, RequestRecord

QUEUE_SIZE = 10_000
BATCH_ROWS = 200
BATCH_SECONDS = 0.5
PRUNE_EVERY = 3600.0
DAILY_KEEP_DAYS = 400

COLUMNS = (
    "ts", "request_id", "model", "provider", "role", "stream", "status", "outcome",
    "ttfb_ms", "ttfc_ms", "duration_ms", "events", "bytes", "input_tokens", "output_tokens",
    "stop_reason", "attempts", "error", "kind", "rule", "client", "session", "cache_read_tokens",
    "cache_write_tokens", "cache_write_1h_tokens", "cost_usd",
)  # fmt: skip
# Columns added after the first release, with their types: ``_open`` adds them to old files.
_ADDED = (
    ("kind", "TEXT NOT NULL DEFAULT ''"),  # issue 17: the request's kinds
    ("rule", "TEXT NOT NULL DEFAULT ''"),  # issue 17: the route rule that chose the route
    ("client", "TEXT NOT NULL DEFAULT ''"),
    ("session", "TEXT NOT NULL DEFAULT ''"),
    ("cache_read_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_write_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cache_write_1h_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("cost_usd", "REAL"),
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts REAL NOT NULL, request_id TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
    role TEXT NOT NULL, stream INTEGER NOT NULL, status INTEGER NOT NULL, outcome TEXT NOT NULL,
    ttfb_ms REAL, ttfc_ms REAL, duration_ms REAL NOT NULL, events INTEGER NOT NULL,
    bytes INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    stop_reason TEXT, attempts TEXT NOT NULL, error TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT '', rule TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS usage_daily (
    client TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL DEFAULT 0,
    fresh_tokens INTEGER NOT NULL DEFAULT 0, cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    usd REAL NOT NULL DEFAULT 0, PRIMARY KEY (client, day)
);
"""
_DAILY = (
    "requests", "fresh_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "usd",
)  # fmt: skip
_UPSERT_DAILY = (
    f"INSERT INTO usage_daily (client, day, {', '.join(_DAILY)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (client, day) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _DAILY)
)
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"

_log = logging.getLogger("ccbalancer.history")


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class History:
    """Batched, off-loop writer of one row per finished request."""

    def __init__(
        self,
        path: str,
        retention_days: float = 14,
        *,
        scrub: Callable[[str], str] | None = None,
    ) -> None:
        """``retention_days`` <= 0 keeps rows forever; ``scrub`` (a ``Redactor.scrub``) cleans
        the free-text columns (error, attempt details) before they are stored."""
        self.path = path
        self.retention_days = retention_days
        self.dropped = 0
        self._scrub = scrub or (lambda text: text)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ccbalancer-history", daemon=True)
        self._thread.start()

    def add(self, record: RequestRecord) -> None:
        """Queue a finished record (not to be changed afterwards); never blocks."""
        if self._closed:
            self.dropped += 1
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def add_usage(self, usage: DailyUsage) -> None:
        """Queue what a client added to a day; never blocks (a full queue drops it)."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(usage)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued before this call is written (or ``timeout`` passes)."""
        if self._thread is None or not self._thread.is_alive():
            return
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return
        marker.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the worker and close the database."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        thread.join(timeout)

    # -- worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._open()
        except (OSError, sqlite3.Error) as exc:
            _log.error("history disabled: cannot open %s: %s", self.path, exc)
            self._discard()
            return
        try:
            self._loop(conn)
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a crash may lose the last batch, never corrupt the file.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
            with conn:
                for column, kind in _ADDED:
                    if column not in have:
                        conn.execute(f"ALTER TABLE requests ADD COLUMN {column} {kind}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _loop(self, conn: sqlite3.Connection) -> None:
        batch: list[RequestRecord | DailyUsage] = []
        deadline = 0.0
        next_prune = 0.0
        while True:
            now = time.monotonic()
            if now >= next_prune:
                self._prune(conn)
                next_prune = now + PRUNE_EVERY
            wait = next_prune - now
            if batch:
                wait = min(wait, max(0.0, deadline - now))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if isinstance(item, RequestRecord | DailyUsage):
                if not batch:
                    deadline = time.monotonic() + BATCH_SECONDS
                batch.append(item)
            if batch and (
                item is None
                or item is _STOP
                or isinstance(item, _Flush)
                or len(batch) >= BATCH_ROWS
                or time.monotonic() >= deadline
            ):
                self._write(conn, batch)
                batch = []
            if isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                return

    def _write(self, conn: sqlite3.Connection, batch: list[RequestRecord | DailyUsage]) -> None:
        try:
            rows = [self._row(r) for r in batch if isinstance(r, RequestRecord)]
            daily = _summed(r for r in batch if isinstance(r, DailyUsage))
            with conn:  # one transaction per batch: commits, or rolls back on error
                conn.executemany(_INSERT, rows)
                conn.executemany(_UPSERT_DAILY, daily)
        except (sqlite3.Error, TypeError, ValueError) as exc:
            self.dropped += len(batch)
            _log.error("history: could not write %d rows to %s: %s", len(batch), self.path, exc)

    def _prune(self, conn: sqlite3.Connection) -> None:
        if self.retention_days <= 0:
            return
        cutoff = time.time() - self.retention_days * 86400
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - DAILY_KEEP_DAYS * 86400))
        try:
            with conn:
                conn.execute("DELETE FROM requests WHERE ts < ?", (cutoff,))
                conn.execute("DELETE FROM usage_daily WHERE day < ?", (day,))
        except sqlite3.Error as exc:
            _log.error("history: could not delete old rows from %s: %s", self.path, exc)

    def _discard(self) -> None:
        # The database is unusable: keep answering flush/close so callers never hang.
        while True:
            item = self._queue.get()
            if isinstance(item, RequestRecord | DailyUsage):
                self.dropped += 1
            elif isinstance(item, _Flush):
                item.done.set()
            elif item is _STOP:
                return

    def _row(self, r: RequestRecord) -> tuple[Any, ...]:
        attempts = [
            {
                "provider": a.provider,
                "outcome": a.outcome,
                "reason": a.reason,
                "detail": self._scrub(a.detail),
                "status": a.status,
                "ttfb_ms": _ms(a.ttfb),
            }
            for a in r.attempts
        ]
        return (
            r.started, r.request_id, r.model, r.provider, r.role, int(r.stream), r.status,
            r.outcome, _ms(r.ttfb), _ms(r.ttfc), _ms(r.duration), r.events, r.bytes,
            r.input_tokens, r.output_tokens, r.stop_reason, json.dumps(attempts),
            self._scrub(r.error), r.kind, r.rule, r.client, r.session, r.cache_read_tokens,
            r.cache_write_tokens, r.cache_write_1h_tokens, r.cost_usd,
        )  # fmt: skip

    # -- read side -----------------------------------------------------------------------

    @staticmethod
    def query(path: str, since_seconds: float) -> list[dict[str, Any]]:
        """Rows of the last ``since_seconds``, oldest first; ``attempts`` decoded to a list."""
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        cutoff = time.time() - since_seconds
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            cursor = conn.execute("SELECT * FROM requests WHERE ts >= ? ORDER BY ts", (cutoff,))
            rows = [dict(row) for row in cursor]
        for row in rows:
            row["stream"] = bool(row["stream"])
            row["attempts"] = json.loads(row["attempts"])
        return rows

    @staticmethod
    def daily(path: str, since_day: str) -> list[dict[str, Any]]:
        """Daily totals per client from ``since_day`` (``YYYY-MM-DD``) on; empty when the
        file or its table does not exist yet."""
        if not Path(path).is_file():
            return []
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            table = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_daily'"
            if conn.execute(table).fetchone() is None:
                return []  # written by a version without it
            cursor = conn.execute("SELECT * FROM usage_daily WHERE day >= ?", (since_day,))
            return [dict(row) for row in cursor]


def _summed(items: Iterator[DailyUsage]) -> list[tuple[Any, ...]]:
    """One upsert per client and day for a whole batch."""
    sums: dict[tuple[str, str], list[Any]] = {}
    for u in items:
        row = sums.setdefault((u.client, u.day), [0, 0, 0, 0, 0, 0.0])
        for i, value in enumerate(
            (u.requests, u.fresh_tokens, u.cache_read_tokens, u.cache_write_tokens,
             u.output_tokens, u.usd)
        ):  # fmt: skip
            row[i] += value
    return [(client, day, *row) for (client, day), row in sums.items()]
