"""Request history (SQLite worker thread) and the ``ccbalancer stats`` report built on it."""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccbalancer.commands import stats
from ccbalancer.observe import history as history_module
from ccbalancer.observe.history import History
from ccbalancer.observe.record import Attempt, RequestRecord

DAY = 86400.0


def record(
    n: int,
    *,
    started: float | None = None,
    provider: str = "relay-a",
    role: str = "leader",
    outcome: str = "ok",
    attempts: list[Attempt] | None = None,
    ttfb: float | None = 0.5,
    ttfc: float | None = None,
    tokens: tuple[int, int] = (10, 5),
) -> RequestRecord:
    return RequestRecord(
        request_id=f"req-{n}",
        model="claude-sonnet-4",
        started=time.time() if started is None else started,
        role=role,
        status=200 if outcome == "ok" else 503,
        outcome=outcome,
        provider=provider,
        attempts=[Attempt(provider, "ok", status=200)] if attempts is None else attempts,
        ttfb=ttfb,
        ttfc=ttfc,
        duration=1.5,
        events=12,
        bytes=3000,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        stop_reason="end_turn" if outcome == "ok" else None,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "state" / "history.sqlite3")  # the directory does not exist yet


@pytest.fixture
def history(db: str) -> Iterator[History]:
    h = History(db)
    h.start()
    yield h
    h.close()


# -- History -------------------------------------------------------------------------------


def test_every_added_record_becomes_one_row(history: History, db: str) -> None:
    for n in range(450):  # more than two full batches
        history.add(record(n))
    history.add(
        record(
            999,
            provider="",
            outcome="error",
            attempts=[Attempt("relay-a", "failover", "timeout", "no first event in 60 s")],
            ttfb=0.0123,
        )
    )
    history.flush()

    rows = History.query(db, since_seconds=3600)
    assert len(rows) == 451
    assert [r["request_id"] for r in rows[:3]] == ["req-0", "req-1", "req-2"]
    last = rows[-1]
    assert (last["request_id"], last["provider"], last["outcome"], last["status"]) == (
        "req-999",
        "",
        "error",
        503,
    )
    assert (last["ttfb_ms"], last["ttfc_ms"], last["duration_ms"]) == (12.3, None, 1500.0)
    assert last["stream"] is True
    assert last["attempts"] == [
        {"provider": "relay-a", "outcome": "failover", "reason": "timeout",
         "detail": "no first event in 60 s", "status": None, "ttfb_ms": None},
    ]  # fmt: skip
    assert history.dropped == 0


def test_the_kind_and_rule_that_routed_a_request_are_kept(db: str) -> None:
    """Issue 17: the history says which kind a request was and which rule routed it, also in
    a file an older version created (its rows read as no kind, no rule)."""
    Path(db).parent.mkdir(parents=True)
    old_columns = ", ".join(
        f"{c} TEXT" for c in history_module.COLUMNS if c not in ("kind", "rule")
    )
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE requests ({old_columns})")
        conn.execute(
            "INSERT INTO requests (ts, request_id, attempts) VALUES (?, 'old', '[]')",
            (time.time(),),
        )
    h = History(db)
    h.start()
    routed = record(1)
    routed.kind, routed.rule = "background", "route_rules[0]"
    h.add(routed)
    h.close()
    rows = {r["request_id"]: r for r in History.query(db, since_seconds=3600)}
    assert (rows["req-1"]["kind"], rows["req-1"]["rule"]) == ("background", "route_rules[0]")
    assert (rows["old"]["kind"], rows["old"]["rule"]) == ("", "")


def test_close_writes_what_is_still_queued(db: str) -> None:
    h = History(db)
    h.start()
    for n in range(5):
        h.add(record(n))
    h.close()
    h.add(record(6))  # after close: counted, not written

    assert len(History.query(db, 3600)) == 5
    assert h.dropped == 1


def test_a_full_queue_drops_instead_of_blocking(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history_module, "QUEUE_SIZE", 3)
    h = History(db)  # not started: nothing drains the queue
    for n in range(5):
        h.add(record(n))
    assert h.dropped == 2
    h.start()
    h.close()
    assert len(History.query(db, 3600)) == 3


def test_retention_deletes_old_rows_at_start(db: str) -> None:
    now = time.time()
    writer = History(db, retention_days=0)  # 0 keeps everything
    writer.start()
    writer.add(record(1, started=now - 20 * DAY))
    writer.add(record(2, started=now - 13 * DAY))
    writer.add(record(3, started=now))
    writer.close()
    assert len(History.query(db, 30 * DAY)) == 3

    pruner = History(db, retention_days=14)
    pruner.start()
    pruner.flush()
    pruner.close()

    assert [r["request_id"] for r in History.query(db, 30 * DAY)] == ["req-2", "req-3"]


def test_query_returns_only_the_requested_window(history: History, db: str) -> None:
    now = time.time()
    for n, age in enumerate((7200, 1800, 60)):
        history.add(record(n, started=now - age))
    history.flush()

    assert [r["request_id"] for r in History.query(db, 3600)] == ["req-1", "req-2"]
    assert [r["request_id"] for r in History.query(db, 120)] == ["req-2"]


def test_free_text_is_scrubbed_before_it_is_stored(db: str) -> None:
    secret = "sk-provider-secret-123456"
    h = History(db, scrub=lambda text: text.replace(secret, "***"))
    h.start()
    failed = record(1, outcome="error", attempts=[Attempt("relay-a", "failover", "status", secret)])
    failed.error = f"upstream said {secret}"
    h.add(failed)
    h.close()

    assert secret not in Path(db).read_bytes().decode("latin-1")
    [row] = History.query(db, 3600)
    assert row["error"] == "upstream said ***"
    assert row["attempts"][0]["detail"] == "***"


def test_an_unusable_database_drops_rows_but_never_blocks_callers(tmp_path: Path) -> None:
    h = History(str(tmp_path))  # a directory: sqlite cannot open it
    h.start()
    h.add(record(1))
    h.flush()
    h.close()
    assert h.dropped == 1


# -- stats ---------------------------------------------------------------------------------


def known_rows(db: str) -> list[dict[str, object]]:
    """relay-a: 10 clean leaders with TTFC 100..1000 ms; two requests where relay-b failed over
    to relay-a (TTFB only: 2000, 3000 ms); a follower of relay-a (TTFB 300 ms); relay-b: two
    clean leaders (TTFC 50, 70 ms); one request that failed everywhere."""
    h = History(db)
    h.start()
    for i in range(1, 11):
        h.add(record(i, ttfc=i / 10))
    for i, ttfb in ((11, 2.0), (12, 3.0)):
        tried = [Attempt("relay-b", "failover", "timeout"), Attempt("relay-a", "ok")]
        h.add(record(i, attempts=tried, ttfb=ttfb))
    h.add(record(13, role="follower", attempts=[], ttfb=0.3, tokens=(999, 999)))
    h.add(record(14, provider="relay-b", ttfc=0.05))
    h.add(record(15, provider="relay-b", ttfc=0.07))
    tried = [Attempt("relay-a", "failover", "status", status=529), Attempt("relay-b", "failover")]
    h.add(record(16, provider="", outcome="error", attempts=tried, ttfb=0.01, tokens=(0, 0)))
    h.close()
    return History.query(db, 3600)


def table_row(report: str, name: str) -> list[str]:
    [line] = [line for line in report.splitlines() if line.split()[:1] == [name]]
    return line.split()[1:]


def requests_row(report: str) -> list[str]:
    lines = report.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith("requests  ")]
    return lines[at + 1].split()


def test_stats_separates_requests_from_attempts_per_provider(db: str) -> None:
    report = stats.format_stats(known_rows(db), "1h")

    # requests: 16, 1 failed for the client (6.25 % prints half-to-even as 6.2); TTFT over the
    # 15 successful ones: 8th = 500, 15th = 3000; tokens of the 15 that called upstream.
    assert requests_row(report) == ["16", "1", "6.2", "500", "3000", "140", "70"]
    # attempts failed% served p50 p95 input output
    # relay-a: tried by requests 1-12 and 16 (13 attempts), failed in 16; served 1-12 and the
    # follower (13). TTFT values: 100..1000, 2000, 3000, 300 -> p50 = 7th = 600, p95 = 13th.
    # Tokens: the follower's are not counted (they came from the leader's upstream call).
    assert table_row(report, "relay-a") == ["13", "1", "7.7", "13", "600", "3000", "120", "60"]
    # relay-b: failed over in 11, 12 and 16, served 14 and 15: 3 of 5 attempts failed.
    assert table_row(report, "relay-b") == ["5", "3", "60.0", "2", "50", "70", "20", "10"]
    header = next(line for line in report.splitlines() if line.startswith("provider"))
    assert header.split()[:5] == ["provider", "attempts", "failed", "failed", "%"]
    assert "by role: follower 1, leader 15" in report
    assert report.startswith("ccbalancer stats: last 1h, 16 requests, 18 attempts\n")


def test_stats_says_one_request_in_the_singular(db: str) -> None:
    h = History(db)
    h.start()
    h.add(record(1))
    h.close()
    report = stats.format_stats(History.query(db, 3600), "15m")
    assert report.startswith("ccbalancer stats: last 15m, 1 request, 1 attempt\n")


def test_stats_with_no_rows_says_so() -> None:
    assert stats.format_stats([], "15m") == "no requests in the last 15m"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2d", 172800), ("1.5h", 5400)]
)
def test_parse_since_accepts_number_and_unit(text: str, seconds: float) -> None:
    assert stats.parse_since(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "10x", "-5m", "0s", "1h30m"])
def test_parse_since_rejects_anything_else_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"use a positive number and a unit s, m, h or d"):
        stats.parse_since(text)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stats.add_arguments(parser)
    return parser.parse_args(argv)


def test_stats_command_reads_the_history_path_from_the_config(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    known_rows(db)
    config = tmp_path / "config.yaml"
    config.write_text(
        "providers:\n"
        "  - {name: relay-a, type: anthropic, base_url: 'http://127.0.0.1:1', auth_value: k}\n"
        "model_routes:\n"
        "  '*': [{provider: relay-a, model: passthrough, priority: 1}]\n"
        f"settings:\n  history: {{path: '{db}'}}\n",
        encoding="utf-8",
    )

    assert stats.run(parse(["-c", str(config), "--since", "2h"])) == 0
    out = capsys.readouterr().out
    assert "last 2h, 16 requests" in out
    assert table_row(out, "relay-b")[:3] == ["5", "3", "60.0"]


def test_stats_finds_a_relative_history_path_next_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``history.path: state/h.sqlite3`` means next to the config file, whatever the working
    directory of ``serve`` or ``stats``."""
    known_rows(str(tmp_path / "conf" / "state" / "h.sqlite3"))
    config = tmp_path / "conf" / "config.yaml"
    config.write_text(
        "providers:\n"
        "  - {name: relay-a, type: anthropic, base_url: 'http://127.0.0.1:1', auth_value: k}\n"
        "settings:\n  history: {path: state/h.sqlite3}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    assert stats.run(parse(["-c", str(config)])) == 0
    assert "last 1h, 16 requests" in capsys.readouterr().out


def test_stats_command_without_history_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml here
    monkeypatch.delenv("CCBALANCER_CONFIG", raising=False)

    assert stats.run(parse([])) == 0
    assert capsys.readouterr().out.strip() == "no history yet at logs/history.sqlite3"

    assert stats.run(parse(["--db", "elsewhere.sqlite3"])) == 0
    assert capsys.readouterr().out.strip() == "no history yet at elsewhere.sqlite3"


def test_stats_command_rejects_a_bad_since(capsys: pytest.CaptureFixture[str]) -> None:
    assert stats.run(parse(["--since", "yesterday", "--db", "x.sqlite3"])) == 2
    assert "invalid duration 'yesterday'" in capsys.readouterr().err


# -- teams: the new columns, old files, daily totals ----------------------------------------

_FIRST_SCHEMA = """
CREATE TABLE requests (
    ts REAL NOT NULL, request_id TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL,
    role TEXT NOT NULL, stream INTEGER NOT NULL, status INTEGER NOT NULL, outcome TEXT NOT NULL,
    ttfb_ms REAL, ttfc_ms REAL, duration_ms REAL NOT NULL, events INTEGER NOT NULL,
    bytes INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    stop_reason TEXT, attempts TEXT NOT NULL, error TEXT NOT NULL
);
INSERT INTO requests VALUES (strftime('%s','now'), 'req-old', 'claude-sonnet-4', 'relay-a',
    'leader', 1, 200, 'ok', 10, 20, 30, 6, 100, 40, 8, 'end_turn', '[]', '');
"""


def test_a_file_from_before_teams_stays_readable_and_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    import sqlite3

    from ccbalancer.commands import usage

    db = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(db) as conn:
        conn.executescript(_FIRST_SCHEMA)
    [old] = History.query(db, DAY)  # read-only readers take it as it is
    assert "client" not in old
    assert "by client, 1 request" in usage.format_usage([old], "1d", "client")
    assert History.daily(db, "2000-01-01") == []
    h = History(db)
    h.start()
    new = record(1)
    new.client, new.session, new.cost_usd, new.cache_read_tokens = "alice", "s-1", 0.25, 4
    h.add(new)
    h.close()
    rows = {r["request_id"]: r for r in History.query(db, DAY)}
    assert rows["req-old"]["client"] == "" and rows["req-old"]["cost_usd"] is None
    assert rows["req-1"]["client"] == "alice" and rows["req-1"]["cost_usd"] == 0.25
    assert rows["req-1"]["cache_read_tokens"] == 4 and rows["req-1"]["session"] == "s-1"


def test_daily_totals_add_up_per_client_and_day_and_outlive_the_retention(db: str) -> None:
    from ccbalancer.observe.record import DailyUsage

    h = History(db, retention_days=0.0001)
    h.start()
    h.add_usage(DailyUsage("alice", "2026-12-06", requests=1))
    h.add_usage(DailyUsage("alice", "2026-12-07", requests=1))
    h.add_usage(DailyUsage("alice", "2026-12-07", fresh_tokens=10, output_tokens=5, usd=0.5))
    h.add_usage(DailyUsage("bob", "2026-12-07", requests=2, usd=0.25))
    h.flush()
    h.add_usage(DailyUsage("alice", "2026-12-07", cache_read_tokens=7, usd=0.25))
    h.close()
    h = History(db, retention_days=0.0001)  # prunes the requests at start, not the totals
    h.start()
    h.close()
    rows = {(r["client"], r["day"]): r for r in History.daily(db, "2026-12-07")}
    assert set(rows) == {("alice", "2026-12-07"), ("bob", "2026-12-07")}
    alice = rows[("alice", "2026-12-07")]
    assert (alice["requests"], alice["fresh_tokens"], alice["cache_read_tokens"]) == (1, 10, 7)
    assert (alice["output_tokens"], alice["usd"]) == (5, 0.75)
