"""Logs: the per-request summary line, DEBUG tracing, redaction, the off-loop pipeline."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from ccbalancer.observe.logs import (
    MAX_FORWARDED,
    Redactor,
    configure_logging,
    debug_enabled,
    get_logger,
    log_event_timing,
    log_health,
    log_reload,
    log_request,
)
from ccbalancer.observe.record import MAX_STORED_CHARS, Attempt, RequestRecord

PROVIDER_KEY = "sk-ant-provider-key-0123456789"
INBOUND_KEY = "inbound-client-key-abcdef"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; give the next test what it had."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers:
        if isinstance(handler, logging.handlers.QueueHandler):
            root.removeHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def failed_record() -> RequestRecord:
    return RequestRecord(
        request_id="req-2",
        model="claude-sonnet-4",
        started=1_700_000_000.0,
        status=503,
        outcome="error",
        attempts=[
            Attempt("relay-a", "failover", "status", "HTTP 529", 529, 0.2),
            Attempt("relay-b", "failover", "timeout", "no first event in 60 s"),
        ],
        ttfb=0.00312,
        duration=60.25049,
        error="All configured providers for model claude-sonnet-4 failed",
    )


def test_redactor_masks_registered_secrets_in_nested_values() -> None:
    redactor = Redactor()
    redactor.add(PROVIDER_KEY, INBOUND_KEY)
    event = {
        "event": f"upstream said: bad key {PROVIDER_KEY}",
        "request": {"headers": [f"Bearer {INBOUND_KEY}", "accept: */*"], "n": 3},
        "ids": (1, 2.5, None, True),
        "error": ValueError(f"refused {PROVIDER_KEY}"),
    }

    out = redactor(None, "info", event)

    assert out["event"] == "upstream said: bad key ***"
    assert out["request"] == {"headers": ["Bearer ***", "accept: */*"], "n": 3}
    assert out["ids"] == [1, 2.5, None, True]
    assert out["error"] == "refused ***"


def test_redactor_masks_credential_named_fields_but_not_token_counts() -> None:
    redactor = Redactor()
    event = {
        "Authorization": "Bearer whatever",
        "headers": {"x-api-key": "k-123", "cookie": "c=1", "content-type": "application/json"},
        "auth_value": "passthrough-or-key",
        "admin_api_key": "abc",
        "access_token": "t",
        "password": "p",
        "input_tokens": 12,
        "output_tokens": 34,
        "max_tokens": 1024,
    }

    out = redactor(None, "info", event)

    assert out["Authorization"] == "***"
    assert out["headers"] == {
        "x-api-key": "***",
        "cookie": "***",
        "content-type": "application/json",
    }
    assert out["auth_value"] == out["admin_api_key"] == out["access_token"] == "***"
    assert out["password"] == "***"
    assert (out["input_tokens"], out["output_tokens"], out["max_tokens"]) == (12, 34, 1024)


def test_redactor_ignores_short_values_and_masks_url_credentials() -> None:
    redactor = Redactor()
    redactor.add("abc", "12345", "")
    assert redactor.scrub("abc 12345 ok") == "abc 12345 ok"
    assert (
        redactor.scrub("via socks5://user:hunter2@10.0.0.1:1080")
        == "via socks5://***@10.0.0.1:1080"
    )
    redactor.add("sk-short", "sk-short-but-longer")
    assert redactor.scrub("sk-short-but-longer / sk-short") == "*** / ***"


def test_log_request_writes_one_json_line_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "nested" / "ccbalancer.jsonl"  # the directory does not exist yet
    handle = configure_logging("INFO", str(path), console=False)
    record = RequestRecord(
        request_id="req-1",
        model="claude-sonnet-4",
        started=1_700_000_000.0,
        stream=True,
        role="leader",
        status=200,
        provider="relay-b",
        attempts=[
            Attempt("relay-a", "failover", "connect", "connection refused"),
            Attempt("relay-b", "ok", status=200, ttfb=0.1),
        ],
        ttfb=0.41234,
        ttfc=0.40004,
        duration=2.34567,
        events=42,
        bytes=8192,
        input_tokens=1200,
        output_tokens=345,
        stop_reason="end_turn",
        client="alice",
        session="3f9c0d1e-0000",
        cache_read_tokens=1000,
        cache_write_tokens=150,
        cache_write_1h_tokens=100,
        cost_usd=0.0123,
    )

    log_request(get_logger("ccbalancer.proxy"), record)
    handle.close()

    [line] = read_lines(path)
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert line["logger"] == "ccbalancer.proxy"
    assert dt.datetime.fromisoformat(line["ts"]).utcoffset() == dt.timedelta(0)
    assert line["tried"] == [
        {"provider": "relay-a", "outcome": "failover", "reason": "connect",
         "detail": "connection refused", "status": None},
        {"provider": "relay-b", "outcome": "ok", "reason": "", "detail": "", "status": 200},
    ]  # fmt: skip
    assert {k: v for k, v in line.items() if k not in {"ts", "tried"}} == {
        "level": "info",
        "event": "request",
        "logger": "ccbalancer.proxy",
        "request_id": "req-1",
        "model": "claude-sonnet-4",
        "stream": True,
        "role": "leader",
        "status": 200,
        "outcome": "ok",
        "provider": "relay-b",
        "ttfb_ms": 412.3,
        "ttfc_ms": 400.0,
        "duration_ms": 2345.7,
        "events": 42,
        "bytes": 8192,
        "input_tokens": 1200,
        "cache_read_tokens": 1000,
        "cache_write_tokens": 150,
        "cache_write_1h_tokens": 100,
        "output_tokens": 345,
        "cost_usd": 0.0123,
        "stop_reason": "end_turn",
        "client": "alice",
        "session": "3f9c0d1e-0000",
    }  # no "error" key: it is only written when set


def test_failed_request_is_logged_at_warning_with_its_error(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    handle = configure_logging("INFO", str(path), console=False)

    log_request(get_logger(), failed_record())
    handle.close()

    [line] = read_lines(path)
    assert line["level"] == "warning"
    assert line["outcome"] == "error"
    assert line["error"].startswith("All configured providers")
    assert [(t["provider"], t["reason"]) for t in line["tried"]] == [
        ("relay-a", "status"),
        ("relay-b", "timeout"),
    ]
    assert (line["ttfb_ms"], line["ttfc_ms"], line["duration_ms"]) == (3.1, None, 60250.5)


def test_registered_secrets_never_reach_the_file_or_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log.jsonl"
    redactor = Redactor()
    redactor.add(PROVIDER_KEY, INBOUND_KEY)
    handle = configure_logging("DEBUG", str(path), console=True, redactor=redactor)
    log = get_logger("ccbalancer.upstream")

    log.info("sending", headers={"x-api-key": PROVIDER_KEY}, url=f"https://x/?key={PROVIDER_KEY}")
    try:
        raise ConnectionError(f"proxy rejected credential {PROVIDER_KEY}")
    except ConnectionError:
        log.exception("upstream failed", client_key=INBOUND_KEY)
    logging.getLogger("aiohttp.access").warning("client %s sent junk", INBOUND_KEY)
    record = failed_record()
    record.error = f"upstream echoed {PROVIDER_KEY}"
    log_request(log, record)
    handle.close()

    text = path.read_text(encoding="utf-8")
    console = capsys.readouterr().err
    assert len(text.splitlines()) == 4
    assert "ConnectionError" in text  # the traceback is kept, only the secret is masked
    assert "proxy rejected credential ***" in console
    for output in (text, console):
        assert PROVIDER_KEY not in output
        assert INBOUND_KEY not in output


def test_event_timing_is_recorded_only_at_debug(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = get_logger("ccbalancer.writer")

    handle = configure_logging("INFO", str(path), console=False)
    assert not debug_enabled(log)
    log_event_timing(log, "req-1", 0, 1, 100.0, 100.00025)
    handle.close()
    assert path.read_text(encoding="utf-8") == ""

    handle = configure_logging("DEBUG", str(path), console=False)
    assert debug_enabled(log)
    log_event_timing(log, "req-1", 2, 7, 100.0, 100.00025)
    handle.close()
    [line] = read_lines(path)
    assert line["level"] == "debug"
    assert line["event"] == "event_timing"
    assert (line["request_id"], line["subscriber"], line["seq"]) == ("req-1", 2, 7)
    assert line["forward_ms"] == pytest.approx(0.25)
    assert line["write_ms"] - line["recv_ms"] == pytest.approx(0.25)


def test_reconfiguring_moves_output_and_drains_the_previous_pipeline(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    log = get_logger()
    old = configure_logging("INFO", str(first), console=False)
    log.info("before reload")

    new = configure_logging("WARNING", str(second), console=False)
    log.info("dropped by the new level")
    log_reload(log, "config.yaml", ok=False, error="settings.port: not a number")
    log_health(log, "relay-a", "cooling_down", "healthy", failures=2, cooldown_s=300)
    new.close()
    old.close()  # closing an already replaced pipeline is harmless

    assert [line["event"] for line in read_lines(first)] == ["before reload"]
    reload_line, health_line = read_lines(second)
    assert (reload_line["event"], reload_line["level"], reload_line["ok"]) == (
        "config_reload",
        "error",
        False,
    )
    assert (health_line["provider"], health_line["state"], health_line["level"]) == (
        "relay-a",
        "cooling_down",
        "warning",
    )
    assert not any(
        isinstance(h, logging.handlers.QueueHandler) for h in logging.getLogger().handlers
    )


def test_redactor_masks_credential_headers_quoted_in_free_text() -> None:
    """aiohttp's error for a malformed request quotes the raw bytes: a token there is masked
    though nobody registered it."""
    redactor = Redactor()
    raw = (
        "b'POST / HTTP/1.1\\nhost: x\\nx-api-key: sk-user-1234\\n"
        "authorization: Bearer tok-abcdef123\\nCookie: session=s3cr3t\\n\\n'"
    )
    out = redactor.scrub(raw)
    for secret in ("sk-user-1234", "tok-abcdef123", "s3cr3t"):
        assert secret not in out
    assert "host: x" in out
    assert redactor.scrub("{'x-api-key': 'abcdefgh'}") == "{'x-api-key': '***'}"
    assert redactor.scrub("sent Bearer eyJhbGciOi.payload") == "sent Bearer ***"
    assert redactor.scrub("check auth_value in the config") == "check auth_value in the config"


def test_redactor_learns_forwarded_tokens_within_a_bound() -> None:
    redactor = Redactor()
    redactor.forward("user-token-000001")
    assert redactor.scrub("upstream said user-token-000001 is bad") == "upstream said *** is bad"
    for i in range(MAX_FORWARDED + 1):
        redactor.forward(f"other-token-{i:08d}")
    assert "user-token-000001" in redactor.scrub("user-token-000001")  # the oldest went first
    assert redactor.scrub(f"other-token-{MAX_FORWARDED:08d}") == "***"
    redactor.forward("short")  # too short to mask without masking ordinary words
    assert redactor.scrub("short") == "short"


def test_a_record_caps_client_chosen_text_before_it_is_stored() -> None:
    record = RequestRecord(request_id="req_1", model="m" * 10_000, started=0.0)
    record.error = "no route for model " + "x" * 10_000
    record.attempts = [Attempt("a", "failover", detail="d" * 10_000)]
    record.bound()
    assert len(record.model) == len(record.error) == MAX_STORED_CHARS
    assert record.model.endswith("...") and len(record.attempts[0].detail) == MAX_STORED_CHARS
