"""What the balancer tells: one summary line per request, metrics, DEBUG timing, history, and
never a secret anywhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys

from ccbalancer.mock import Script
from ccbalancer.observe.history import History
from ccbalancer.observe.logs import configure_logging
from ccbalancer.runtime import secrets_of
from tests.conftest import config_text, msg, read_events

FAST = """timeouts:
  first_event_timeout: 0.5
  streaming: {connect_timeout: 2, read_timeout: 0.5, pool_timeout: 2}
"""


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def _logged(
    tmp_path,
    mock,
    balancer_factory,
    scripts,
    providers=("a", "b"),
    level="INFO",
    body=None,
    settings=FAST,
):
    log = tmp_path / "log.jsonl"
    handle = configure_logging(level, str(log), console=False)
    try:
        b = await balancer_factory(config_text(mock, list(providers), settings=settings))
        handle.redactor.add(*secrets_of(b.runtime.config))
        for name, script in scripts:
            mock.enqueue(name, script)
        resp = await b.post(body or msg())
        events = await read_events(resp)
    finally:
        handle.close()
    return [r for r in _lines(log) if r["event"] == "request"], events, b, _lines(log)


async def test_summary_line_of_a_success(tmp_path, mock, balancer_factory):
    records, _, _, _ = await _logged(tmp_path, mock, balancer_factory, [])
    assert len(records) == 1
    r = records[0]
    assert r["level"] == "info"
    assert r["request_id"].startswith("req_ccb_")
    assert r["model"] == "claude-sonnet-4-5" and r["provider"] == "a" and r["status"] == 200
    assert r["outcome"] == "ok" and r["stop_reason"] == "end_turn"
    assert r["tried"] == [
        {"provider": "a", "outcome": "ok", "reason": "", "detail": "", "status": None}
    ]
    assert r["ttfb_ms"] > 0 and r["ttfc_ms"] > 0 and r["duration_ms"] >= r["ttfb_ms"]
    assert r["events"] >= 6 and r["bytes"] > 0
    assert r["input_tokens"] == 25 and r["output_tokens"] > 0


async def test_summary_line_of_a_failover_names_the_reason(tmp_path, mock, balancer_factory):
    records, _, _, _ = await _logged(tmp_path, mock, balancer_factory, [("a", Script(status=529))])
    r = records[0]
    assert r["provider"] == "b" and r["outcome"] == "ok"
    assert r["tried"][0]["provider"] == "a" and r["tried"][0]["outcome"] == "failover"
    assert r["tried"][0]["reason"] == "status" and r["tried"][0]["status"] == 529
    assert r["tried"][1]["provider"] == "b" and r["tried"][1]["outcome"] == "ok"


async def test_summary_line_of_a_mid_stream_failure(tmp_path, mock, balancer_factory):
    records, events, _, _ = await _logged(
        tmp_path,
        mock,
        balancer_factory,
        [("a", Script(events=5, cut_after=4))],
        settings=FAST + "recovery: {enabled: false}\n",  # the cut stays a failure here
    )
    r = records[0]
    assert events[-1][0] == "error"
    assert r["level"] == "warning"
    assert r["outcome"] == "mid_stream_error" and r["status"] == 200
    assert r["tried"][0]["outcome"] == "mid_stream" and r["tried"][0]["reason"] == "connect"
    assert "mid-stream" in r["error"]


async def test_health_transitions_are_logged(tmp_path, mock, balancer_factory):
    log = tmp_path / "log.jsonl"
    handle = configure_logging("INFO", str(log), console=False)
    try:
        settings = FAST + "unhealthy_threshold: 1\n"
        b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings))
        mock.enqueue("a", Script(status=500))
        await (await b.post(msg())).read()
    finally:
        handle.close()
    states = [r for r in _lines(log) if r["event"] == "provider_state"]
    assert states and states[0]["provider"] == "a" and states[0]["state"] == "cooling_down"


async def test_debug_adds_ordered_per_event_timing_records(tmp_path, mock, balancer_factory):
    records, events, _, lines = await _logged(tmp_path, mock, balancer_factory, [], level="DEBUG")
    timing = [r for r in lines if r["event"] == "event_timing"]
    assert len(timing) == len(events)
    assert [t["seq"] for t in timing] == list(range(1, len(events) + 1))
    assert all(t["write_ms"] >= t["recv_ms"] and t["forward_ms"] >= 0 for t in timing)
    assert {t["request_id"] for t in timing} == {records[0]["request_id"]}


async def test_metrics_after_a_known_sequence(mock, balancer_factory):
    no_recovery = FAST + "recovery: {enabled: false}\n"  # the cut below must stay a failure
    b = await balancer_factory(config_text(mock, ["a", "b"], settings=no_recovery))
    mock.enqueue("a", Script(status=500))
    for i in range(3):  # distinct sessions: stickiness would otherwise keep them on b
        await (await b.post(msg(f"m{i}"), {"x-claude-code-session-id": f"s{i}"})).read()
    mock.enqueue("a", Script(events=5, cut_after=4))
    await (await b.post(msg("cut"), {"x-claude-code-session-id": "s-cut"})).read()
    text = await (await b.session.get(b.url + "/metrics")).text()
    get = b.runtime.metrics.registry.get_sample_value
    assert get("ccbalancer_requests_total", {"provider": "b", "outcome": "ok"}) == 1
    assert get("ccbalancer_requests_total", {"provider": "a", "outcome": "ok"}) == 2
    assert get("ccbalancer_requests_total", {"provider": "a", "outcome": "mid_stream_error"}) == 1
    assert get("ccbalancer_failovers_total", {"provider": "a", "reason": "status"}) == 1
    assert get("ccbalancer_tokens_total", {"provider": "a", "direction": "input"}) == 75
    assert get("ccbalancer_time_to_first_content_seconds_count", {"provider": "a"}) == 3
    assert get("ccbalancer_event_forward_seconds_count") > 20
    assert get("ccbalancer_active_streams") == 0 and get("ccbalancer_active_subscribers") == 0
    assert "ccbalancer_provider_state" in text


async def test_history_rows_and_stats_output(tmp_path, mock, balancer_factory):
    db = tmp_path / "h.sqlite3"
    settings = FAST + f"history: {{path: '{db}', enabled: true}}\n"
    text = config_text(mock, ["a", "b"], settings=settings).replace(
        "  history: {enabled: false}\n", ""
    )
    b = await balancer_factory(text)
    history = History(str(db), 14)
    history.start()
    b.runtime.history = history
    mock.enqueue("a", Script(status=503))
    for i in range(4):
        await (await b.post(msg(f"h{i}"))).read()
    await asyncio.to_thread(history.flush)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select provider, status, outcome from requests order by ts").fetchall()
    await asyncio.to_thread(history.close)
    assert len(rows) == 4 and all(r[1] == 200 for r in rows)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ccbalancer", "stats", "--db", str(db), "--since", "1h",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    report = out.decode()
    assert "a" in report and "b" in report and "p95" in report.lower()


async def test_secrets_never_appear_in_logs_metrics_history_or_responses(
    tmp_path, mock, balancer_factory
):
    """Keys and tokens through every path: success, failover, auth failure, and an upstream
    error that echoes the key back."""
    log = tmp_path / "log.jsonl"
    db = tmp_path / "h.sqlite3"
    client_key = "sk-client-SECRET-abcdef123456"
    handle = configure_logging("DEBUG", str(log), console=True)
    bodies: list[str] = []
    try:
        settings = (
            FAST
            + "auth: {enabled: true, api_key: "
            + client_key
            + "}\nadmin_api_key: sk-admin-SECRET-998877\n"
        )
        b = await balancer_factory(config_text(mock, ["a", "b"], settings=settings))
        handle.redactor.add(*secrets_of(b.runtime.config))
        history = History(str(db), 14, scrub=handle.redactor.scrub)
        history.start()
        b.runtime.history = history
        headers = {"x-api-key": client_key}
        mock.enqueue("a", Script(status=500, error_message="bad key sk-prov-a-secret for user"))
        mock.enqueue("a", Script(status=401, error_message="invalid key sk-prov-a-secret"))
        mock.enqueue("b", Script(status=401, error_message="invalid key sk-prov-b-secret"))
        for i in range(3):
            resp = await b.session.post(b.url + "/v1/messages", json=msg(f"s{i}"), headers=headers)
            bodies.append(await resp.text())
        resp = await b.session.post(
            b.url + "/v1/messages", json=msg("x"), headers={"x-api-key": "sk-wrong-SECRET-000"}
        )
        bodies.append(await resp.text())
        bodies.append(await (await b.session.get(b.url + "/providers", headers=headers)).text())
        bodies.append(await (await b.session.get(b.url + "/metrics", headers=headers)).text())
        await asyncio.to_thread(history.close)
    finally:
        handle.close()
    secrets = [client_key, "sk-prov-a-secret", "sk-prov-b-secret", "sk-admin-SECRET-998877"]
    haystacks = {
        "log": log.read_text(),
        "history": db.read_bytes().decode("latin-1"),
        "responses": "\n".join(bodies),
    }
    for where, text in haystacks.items():
        for secret in secrets:
            assert secret not in text, f"{secret} leaked into {where}"
    assert '"event": "request"' in haystacks["log"] or '"event":"request"' in haystacks["log"]


async def test_refused_keys_are_logged_at_a_bounded_rate_counted_and_shown(
    tmp_path, mock, balancer_factory
):
    """Claude Code retries a 401 for minutes: each refusal is counted in the metrics and the
    dashboard data, at most five lines per minute reach the log (the next one says how many
    were left out), and the log holds the key's short SHA-256, never the key."""
    log = tmp_path / "log.jsonl"
    wrong = "sk-wrong-key-0123456789"
    handle = configure_logging("INFO", str(log), console=False)
    try:
        settings = "auth: {enabled: true, api_key: sk-right-key-987654}\n"
        b = await balancer_factory(config_text(mock, ["a"], settings=settings), manual_clock=True)
        for _ in range(8):  # within one minute of the balancer's clock
            resp = await b.post(msg(), headers={"x-api-key": wrong})
            assert resp.status == 401
            await resp.read()
        b.clock.now += 61  # the next minute: logging resumes and reports what it left out
        resp = await b.session.post(b.url + "/v1/messages", json=msg())  # no key at all
        assert resp.status == 401
        await resp.read()
        right = {"x-api-key": "sk-right-key-987654"}
        data = await (await b.session.get(b.url + "/dashboard/data", headers=right)).json()
        metrics = await (await b.session.get(b.url + "/metrics", headers=right)).text()
    finally:
        handle.close()
    lines = [r for r in _lines(log) if r["event"] == "auth_rejected"]
    fingerprint = hashlib.sha256(wrong.encode()).hexdigest()[:8]
    assert [r["key_sha256"] for r in lines] == [fingerprint] * 5 + ["(no key)"]
    assert [r.get("suppressed") for r in lines] == [None] * 5 + [3]
    assert all(r["path"] == "/v1/messages" and r["level"] == "warning" for r in lines)
    assert wrong not in log.read_text()
    assert data["auth_failures"] == {"recent": 9, "window_s": 300.0, "total": 9}
    assert 'ccbalancer_auth_failures_total{key="wrong"} 8.0' in metrics
    assert 'ccbalancer_auth_failures_total{key="missing"} 1.0' in metrics
