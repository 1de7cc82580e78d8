"""Teams (issue 18) through real sockets: named client keys, what their answers cost, and the
limits that stop them before any upstream call."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
import re
import sqlite3

import pytest

from ccbalancer.mock import Script
from ccbalancer.observe.logs import configure_logging
from ccbalancer.runtime import secrets_of
from tests.conftest import config_text, msg, read_events, until

ALICE = "sk-alice-0123456789abcdef"
BOB = "sk-bob-fedcba9876543210"
TEAM_KEY = "sk-team-shared-key-0001"
# T: a fixed wall time, 10:00:30 UTC, half a minute into a minute and 14 h before midnight
T = dt.datetime(2026, 12, 7, 10, 0, 30, tzinfo=dt.UTC).timestamp()


def team(mock, clients: str, *, settings: str = "", providers=("a",), routes=None) -> str:
    """A config with ``clients:`` (YAML list items, two spaces in) appended at the top level."""
    text = config_text(mock, list(providers), routes, settings=settings)
    return text + "clients:\n" + clients


def client_line(name: str, key: str, **limits: object) -> str:
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in limits.items())
    return f"  - {{name: {name}, key: {key}{extra}}}\n"


def as_(key: str) -> dict[str, str]:
    return {"x-api-key": key}


async def test_each_client_is_known_by_its_key_and_named_in_the_record(mock, balancer_factory):
    clients = client_line("alice", ALICE) + client_line("bob", BOB)
    b = await balancer_factory(team(mock, clients, settings=f"auth: {{api_key: {TEAM_KEY}}}\n"))
    for key in (ALICE, BOB, TEAM_KEY):
        resp = await b.post(msg(), as_(key))
        assert resp.status == 200
        await resp.read()
    refused = await b.post(msg(), as_("sk-nobody-000000000000"))
    assert refused.status == 401  # configuring clients turned auth on
    keyless = await b.session.post(b.url + "/v1/messages", json=msg())
    assert keyless.status == 401
    rows = b.runtime.recent.rows()
    assert [r["client"] for r in rows] == ["anonymous", "bob", "alice"]  # 401s never got in
    # the session falls back to the client's name (the mock's requests name no session), and
    # for the team key to its digest: never the key
    assert [r["session"] for r in rows[1:]] == ["bob", "alice"]
    assert rows[0]["session"] == "key-" + hashlib.sha256(TEAM_KEY.encode()).hexdigest()[:12]
    assert len(mock.requests("a")) == 3


async def test_claude_code_sessions_are_the_record_sessions(mock, balancer_factory):
    b = await balancer_factory(team(mock, client_line("alice", ALICE)))
    headers = {**as_(ALICE), "x-claude-code-session-id": "3f9c0d1e-aaaa-bbbb-cccc-000000000001"}
    await (await b.post(msg("one"), headers)).read()
    metadata = {"user_id": json.dumps({"device_id": "d", "session_id": "from-metadata-0002"})}
    await (await b.post(msg("two", metadata=metadata), as_(ALICE))).read()
    rows = b.runtime.recent.rows()
    assert [r["session"] for r in rows[:2]] == [
        "from-metadata-0002",
        "3f9c0d1e-aaaa-bbbb-cccc-000000000001",
    ]
    sessions = {s["session"]: s for s in b.runtime.sessions.rows()}
    assert sessions["from-metadata-0002"]["client"] == "alice"
    assert sessions["from-metadata-0002"]["requests"] == 1


async def test_a_client_over_its_usd_per_day_is_refused_while_the_other_is_served(
    mock, balancer_factory
):
    clients = client_line("alice", ALICE, usd_per_day=0.0001) + client_line("bob", BOB)
    b = await balancer_factory(team(mock, clients))
    b.runtime.accounts.clock = lambda: T
    first = await b.post(msg("spend it"), as_(ALICE))  # within budget when it starts
    assert first.status == 200
    await first.read()
    assert b.runtime.accounts.ledger.day("alice", _w(T)).usd >= 0.0001
    refused = await b.post(msg("once more"), as_(ALICE))
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["type"] == "rate_limit_error"
    message = error["message"]
    assert "'alice'" in message and "usd_per_day" in message
    assert "2026-12-08 00:00 UTC" in message and "in 13h 59m" in message
    midnight = dt.datetime(2026, 12, 8, tzinfo=dt.UTC).timestamp()
    assert refused.headers["retry-after"] == str(math.ceil(midnight - T))  # uncapped: 50370 s
    assert refused.headers["x-should-retry"] == "false"
    served = await b.post(msg("bob's turn"), as_(BOB))
    assert served.status == 200
    await served.read()
    assert len(mock.requests("a")) == 2  # alice's refusal never reached the provider
    metrics = await (await b.session.get(b.url + "/metrics", headers=as_(BOB))).text()
    assert 'ccbalancer_client_refusals_total{client="alice",limit="usd_per_day"} 1.0' in metrics


async def test_the_budget_resets_with_the_utc_day(mock, balancer_factory):
    b = await balancer_factory(team(mock, client_line("alice", ALICE, tokens_per_day=10)))
    b.runtime.accounts.clock = lambda: T
    await (await b.post(msg(), as_(ALICE))).read()
    again = await b.post(msg(), as_(ALICE))
    assert again.status == 429 and "tokens_per_day" in (await again.json())["error"]["message"]
    b.runtime.accounts.clock = lambda: T + 14 * 3600  # 00:00:30 the next day
    assert (await b.post(msg(), as_(ALICE))).status == 200


async def test_a_client_may_use_only_its_models(mock, balancer_factory):
    clients = client_line("alice", ALICE, models=["claude-haiku-*", "Claude-Sonnet-4-5"])
    b = await balancer_factory(team(mock, clients))
    ok = await b.post(msg(model="claude-sonnet-4-5"), as_(ALICE))
    assert ok.status == 200
    await ok.read()
    refused = await b.post(msg(model="claude-opus-4-5"), as_(ALICE))
    assert refused.status == 403
    error = (await refused.json())["error"]
    assert error["type"] == "permission_error"
    assert "'claude-opus-4-5'" in error["message"] and "claude-haiku-*" in error["message"]
    assert len(mock.requests("a")) == 1


async def test_requests_per_minute_refuses_the_next_one_until_the_minute_ends(
    mock, balancer_factory
):
    b = await balancer_factory(team(mock, client_line("alice", ALICE, requests_per_minute=2)))
    b.runtime.accounts.clock = lambda: T
    for i in range(2):
        await (await b.post(msg(f"r{i}"), as_(ALICE))).read()
    refused = await b.post(msg("r2"), as_(ALICE))
    assert refused.status == 429
    assert refused.headers["retry-after"] == "30"  # <= 60: Claude Code waits and retries
    assert "x-should-retry" not in refused.headers
    assert "requests_per_minute 2" in (await refused.json())["error"]["message"]
    b.runtime.accounts.clock = lambda: T + 30
    assert (await b.post(msg("r3"), as_(ALICE))).status == 200


async def test_max_concurrency_counts_requests_in_flight_and_frees_them_at_the_end(
    mock, balancer_factory
):
    b = await balancer_factory(team(mock, client_line("alice", ALICE, max_concurrency=1)))
    mock.enqueue("a", Script(delay=0.05, events=20))
    first = await b.post(msg("slow"), as_(ALICE))  # headers in: the stream is running
    assert first.status == 200
    busy = await b.post(msg("meanwhile"), as_(ALICE))
    assert busy.status == 429 and busy.headers["retry-after"] == "1"
    assert "max_concurrency" in (await busy.json())["error"]["message"]
    events = await read_events(first)
    assert events[-1][0] == "message_stop"  # never cut
    await until(lambda: b.runtime.accounts.ledger.in_flight("alice") == 0)
    after = await b.post(msg("after"), as_(ALICE))
    assert after.status == 200
    await after.read()
    # a client that leaves mid-stream frees its slot too
    mock.enqueue("a", Script(delay=0.05, events=200))
    leaving = await b.post(msg("leave"), as_(ALICE))
    await leaving.content.readany()
    leaving.close()
    await until(lambda: b.runtime.accounts.ledger.in_flight("alice") == 0)
    assert (await b.post(msg("back"), as_(ALICE))).status == 200


async def test_streams_in_progress_finish_and_the_budget_stops_the_next_request(
    mock, balancer_factory
):
    """Budgets count final usage: two streams admitted together both finish, though together
    they pass the budget; the request after them is refused."""
    b = await balancer_factory(team(mock, client_line("alice", ALICE, tokens_per_day=40)))
    for _ in range(2):
        mock.enqueue("a", Script(delay=0.02, events=10))
    first, second = await asyncio.gather(
        b.post(msg("one"), as_(ALICE)), b.post(msg("two"), as_(ALICE))
    )
    assert (first.status, second.status) == (200, 200)
    for resp in (first, second):
        assert (await read_events(resp))[-1][0] == "message_stop"
    refused = await b.post(msg("three"), as_(ALICE))
    assert refused.status == 429


async def test_counters_are_rebuilt_after_a_restart(tmp_path, mock, balancer_factory):
    db = tmp_path / "history.sqlite3"
    settings = f"history: {{enabled: true, path: '{db}', retention_days: 0.00001}}\n"
    text = team(mock, client_line("alice", ALICE, usd_per_day=0.0001)).replace(
        "  history: {enabled: false}\n", "  " + settings
    )
    first = await balancer_factory(text, history=True)
    await (await first.post(msg("spend"), as_(ALICE))).read()
    await first.stop()  # the history is written and closed
    second = await balancer_factory(text, history=True)
    refused = await second.post(msg("again"), as_(ALICE))
    assert refused.status == 429 and "usd_per_day" in (await refused.json())["error"]["message"]
    with sqlite3.connect(db) as conn:
        (requests, usd) = conn.execute(
            "select requests, usd from usage_daily where client = 'alice'"
        ).fetchone()
    assert requests == 1 and usd >= 0.0001  # kept although retention_days is a second


async def test_a_model_without_a_price_is_refused_to_a_client_with_a_money_limit(
    mock, balancer_factory
):
    clients = client_line("alice", ALICE, usd_per_month=50) + client_line("bob", BOB)
    routes = {"glm-*": [("a", "glm-4.6")], "*": [("a", "passthrough")]}
    b = await balancer_factory(team(mock, clients, routes=routes))
    refused = await b.post(msg(model="glm-4"), as_(ALICE))
    assert refused.status == 403
    error = (await refused.json())["error"]
    assert error["type"] == "permission_error" and "'glm-4.6'" in error["message"]
    served = await b.post(msg(model="glm-4"), as_(BOB))  # no money limit: served, at $0
    assert served.status == 200
    await served.read()
    priced = await b.post(msg(model="claude-haiku-4-5"), as_(ALICE))
    assert priced.status == 200
    await priced.read()
    assert len(mock.requests("a")) == 2


def _answer(start_usage: dict[str, object], output_tokens: int) -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_cost", "type": "message", "role": "assistant", "model": "m",
            "content": [], "stop_reason": None, "usage": start_usage,
        },
    }  # fmt: skip
    frames = [
        ("message_start", start),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "priced"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": output_tokens}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return [f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in frames]


CACHED = {
    "input_tokens": 1000,
    "cache_read_input_tokens": 20000,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
}


@pytest.mark.parametrize(
    ("model", "usage", "output", "expected"),
    [
        # Sonnet 4.5: $3 input, $3.75 / $6 cache writes 5m / 1h, $0.30 reads, $15 output
        ("claude-sonnet-4-5", {"input_tokens": 1000}, 500, 1000 * 3e-6 + 500 * 15e-6),
        (
            "claude-sonnet-4-5",
            CACHED,
            500,
            1000 * 3e-6 + 1000 * 3.75e-6 + 2000 * 6e-6 + 20000 * 0.3e-6 + 500 * 15e-6,
        ),
        # writes without the 5m / 1h split are 5-minute writes
        (
            "claude-opus-4-5",
            {"input_tokens": 10, "cache_creation_input_tokens": 4000},
            100,
            10 * 5e-6 + 4000 * 6.25e-6 + 100 * 25e-6,
        ),
        # Haiku 5.5 over 100k prompt tokens: every token at the long-prompt rates
        (
            "claude-haiku-5-5",
            {"input_tokens": 2000, "cache_read_input_tokens": 120000},
            1000,
            2000 * 0.5e-6 + 120000 * 0.05e-6 + 1000 * 2.5e-6,
        ),
    ],
)
async def test_costs_equal_hand_computed_values(
    tmp_path, balancer_factory, recorded_upstream, model, usage, output, expected
):
    url = await recorded_upstream("priced", _answer(usage, output))
    db = tmp_path / "h.sqlite3"
    text = f"""
providers:
  - {{name: priced, type: anthropic, base_url: "{url}", auth_value: sk-prov-priced-0001}}
model_routes:
  "*": [{{provider: priced}}]
settings:
  log_file_path: ''
  deduplication: {{enabled: false}}
  history: {{enabled: true, path: '{db}'}}
clients:
{client_line("alice", ALICE)}"""
    b = await balancer_factory(text, history=True)
    b.runtime.accounts.clock = lambda: T
    resp = await b.post(msg(model=model), as_(ALICE))
    assert resp.status == 200
    await resp.read()
    row = b.runtime.recent.rows()[0]
    assert row["cost_usd"] == pytest.approx(expected, rel=1e-9)
    await until(lambda: b.runtime.accounts.ledger.day("alice", _w(T)).usd > 0)
    assert b.runtime.accounts.ledger.day("alice", _w(T)).usd == pytest.approx(expected, rel=1e-9)
    metrics = await (await b.session.get(b.url + "/metrics", headers=as_(ALICE))).text()
    sample = 'ccbalancer_client_cost_usd_total{client="alice",provider="priced"} '
    assert float(metrics.split(sample, 1)[1].split()[0]) == pytest.approx(expected, rel=1e-9)
    await b.stop()
    with sqlite3.connect(db) as conn:
        (stored,) = conn.execute("select cost_usd from requests").fetchone()
        (daily,) = conn.execute("select usd from usage_daily where client = 'alice'").fetchone()
    assert stored == pytest.approx(expected, rel=1e-9)
    assert daily == pytest.approx(expected, rel=1e-9)


async def test_a_providers_own_prices_come_before_the_built_in_ones(
    balancer_factory, recorded_upstream
):
    url = await recorded_upstream("relay", _answer({"input_tokens": 1_000_000}, 1_000_000))
    text = f"""
providers:
  - name: relay
    type: anthropic
    base_url: "{url}"
    auth_value: sk-prov-relay-0001
    prices: {{"claude-sonnet-*": {{input: 1.5, output: 7.5}}}}
model_routes:
  "*": [{{provider: relay}}]
settings: {{log_file_path: '', deduplication: {{enabled: false}}, history: {{enabled: false}}}}
prices:
  "claude-sonnet-*": {{input: 100, output: 100}}
clients:
{client_line("alice", ALICE)}"""
    b = await balancer_factory(text)
    await (await b.post(msg(model="claude-sonnet-4-5"), as_(ALICE))).read()
    assert b.runtime.recent.rows()[0]["cost_usd"] == pytest.approx(9.0)


async def test_no_client_key_appears_in_a_log_metric_history_row_dashboard_or_upstream(
    tmp_path, mock, balancer_factory
):
    log = tmp_path / "log.jsonl"
    db = tmp_path / "h.sqlite3"
    digest = hashlib.sha256(BOB.encode()).hexdigest()
    clients = client_line("alice", ALICE, usd_per_day=0.0001, models=["claude-*"])
    clients += f"  - {{name: bob, key_sha256: {digest}}}\n"
    text = team(mock, clients, settings=f"auth: {{api_key: {TEAM_KEY}}}\n").replace(
        "  history: {enabled: false}\n", f"  history: {{enabled: true, path: '{db}'}}\n"
    )
    handle = configure_logging("DEBUG", str(log), console=False)
    texts: list[str] = []
    try:
        b = await balancer_factory(text, history=True)
        handle.redactor.add(*secrets_of(b.runtime.config))
        for key, model in ((ALICE, "claude-sonnet-4-5"), (ALICE, "gpt-4o"), (ALICE, "c-1"),
                           (BOB, "claude-sonnet-4-5"), (TEAM_KEY, "claude-haiku-4-5")):  # fmt: skip
            texts.append(await (await b.post(msg(model=model), as_(key))).text())
        texts.append(await (await b.post(msg(), as_(ALICE))).text())  # over budget: 429
        bearer = {"authorization": f"Bearer {BOB}"}
        for path in ("/metrics", "/dashboard/data", "/providers"):
            texts.append(await (await b.session.get(b.url + path, headers=bearer)).text())
        await b.stop()
    finally:
        handle.close()
    upstream = json.dumps([dict(r.headers) for r in mock.requests("a")])
    haystacks = {
        "log": log.read_text(),
        "history": db.read_bytes().decode("latin-1"),
        "responses (metrics, dashboard data, errors)": "\n".join(texts),
        "upstream requests": upstream,
    }
    for where, haystack in haystacks.items():
        for key in (ALICE, BOB, TEAM_KEY):
            assert key not in haystack, f"a client key leaked into {where}"
    assert '"client": "alice"' in haystacks["log"] or '"client":"alice"' in haystacks["log"]
    assert "alice" in haystacks["responses (metrics, dashboard data, errors)"]


async def test_a_reload_applies_new_clients_and_limits_and_keeps_the_counts(
    tmp_path, mock, balancer_factory
):
    path = tmp_path / "config.yaml"
    path.write_text(team(mock, client_line("alice", ALICE)))
    b = await balancer_factory(path.read_text(), config_path=str(path))
    b.runtime.accounts.clock = lambda: T
    for i in range(2):
        await (await b.post(msg(f"before {i}"), as_(ALICE))).read()
    assert (await b.post(msg(), as_(BOB))).status == 401
    path.write_text(team(mock, client_line("alice", ALICE, tokens_per_day=10) + client_line(
        "bob", BOB
    )))  # fmt: skip
    b.runtime.reload("test")
    refused = await b.post(msg("after"), as_(ALICE))  # the morning's use counts at once
    assert refused.status == 429
    served = await b.post(msg(), as_(BOB))
    assert served.status == 200
    await served.read()
    assert b.runtime.accounts.ledger.day("alice", _w(T)).requests == 2


def _w(now: float):
    from ccbalancer.accounting.budgets import windows

    return windows(now)


def _sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text, whatever its labels' order (0 when absent)."""
    for line in metrics.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', head))
            if found == labels:
                return float(value)
    return 0.0


async def test_a_recovered_answer_counts_in_the_metrics_at_each_provider_that_made_it(
    mock, balancer_factory
):
    """Cut mid-stream at a and finished by b: the client's token and cost series (and the
    provider token totals) carry a's part under a and the continuation under b, and add up to
    what the record and the ledger charged."""
    pieces = ["Hello", " from", " the", " mock.", " Second", " line."]
    fields = {"pieces": json.dumps(pieces), "providers": {"a": {"cut_after": 5}}}
    prompt = f"go <<mock {json.dumps(fields)}>>"
    b = await balancer_factory(team(mock, client_line("alice", ALICE), providers=("a", "b")))
    resp = await b.post(msg(prompt, model="claude-opus-4-5"), as_(ALICE))
    events = await read_events(resp)
    assert events[-1][0] == "message_stop"
    (row,) = b.runtime.recent.rows()
    assert (row["outcome"], row["provider"]) == ("recovered", "a")
    metrics = await (await b.session.get(b.url + "/metrics", headers=as_(ALICE))).text()

    def tokens(provider: str, kind: str) -> float:
        return _sample(metrics, "ccbalancer_client_tokens_total",
                       client="alice", provider=provider, kind=kind)  # fmt: skip

    def usd(provider: str) -> float:
        return _sample(metrics, "ccbalancer_client_cost_usd_total", client="alice",
                       provider=provider)  # fmt: skip

    assert tokens("a", "fresh") == row["input_tokens"]  # the first provider: the prompt...
    assert tokens("b", "output") > 0  # ...the continuation: what it wrote
    assert tokens("b", "fresh") > 0  # (and the conversation it read again)
    assert tokens("a", "output") + tokens("b", "output") == row["output_tokens"]
    assert usd("a") > 0 and usd("b") > 0
    assert usd("a") + usd("b") == pytest.approx(row["cost_usd"], rel=1e-9)
    out_b = _sample(metrics, "ccbalancer_tokens_total", provider="b", direction="output")
    assert out_b == tokens("b", "output")
