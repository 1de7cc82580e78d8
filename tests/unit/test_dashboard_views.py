"""What the dashboard is made of, without a browser: one verdict per request shared by the
header's counts and the table's rows, one request's detail, the requests in flight, the gaps
between an answer's events, and the one sessions table joining costs with cache moves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pytest

from ccbalancer.accounting.clients import digest
from ccbalancer.config import parse_config
from ccbalancer.observe.inflight import InFlight
from ccbalancer.observe.recent import RecentRequests, verdict
from ccbalancer.observe.record import Attempt, RequestRecord
from ccbalancer.proxy.clients import record_sessions
from ccbalancer.proxy.dashboard import sessions_view
from ccbalancer.sharing.framelog import FrameLog


def record(request_id: str, outcome: str = "ok", status: int = 200, **fields) -> RequestRecord:
    return RequestRecord(
        request_id, "claude-opus-4-5", 1000.0, outcome=outcome, status=status, **fields
    )


@pytest.mark.parametrize(
    ("outcome", "status", "expected"),
    [
        ("ok", 200, "ok"), ("recovered", 200, "recovered"), ("cancelled", 200, "cancelled"),
        ("cancelled", 0, "cancelled"), ("client_error", 400, "refused"),
        ("client_error", 429, "refused"),  # a client's own rate or budget limit, at the door
        ("error", 400, "refused"),  # a provider refused the request as invalid: passed on
        ("error", 404, "refused"),  # no route for the model asked for
        ("error", 429, "error"),  # no provider had capacity
        ("error", 502, "error"), ("error", 503, "error"),
        ("mid_stream_error", 200, "error"), ("something new", 200, "error"),
    ],
)  # fmt: skip
def test_each_outcome_has_one_verdict(outcome, status, expected) -> None:
    assert verdict(outcome, status) == expected


def test_the_header_counts_are_the_rows_verdicts() -> None:
    recent = RecentRequests()
    outcomes = [
        ("ok", 200), ("client_error", 400), ("client_error", 413), ("error", 503),
        ("mid_stream_error", 200), ("cancelled", 200), ("recovered", 200), ("error", 400),
        ("error", 429),
    ]  # fmt: skip
    for i, (outcome, status) in enumerate(outcomes):
        recent.add(record(f"r{i}", outcome, status))
    rows = recent.rows()
    totals = recent.totals()
    for name, key in [("error", "errors"), ("refused", "refused"), ("cancelled", "cancelled"),
                      ("recovered", "recovered")]:  # fmt: skip
        assert totals[key] == sum(r["verdict"] == name for r in rows), name
    assert totals == {
        "requests": 9, "errors": 3, "refused": 3, "cancelled": 1, "recovered": 1
    }  # fmt: skip


def test_a_recovered_requests_detail_has_every_attempt_and_who_finished_it() -> None:
    recent = RecentRequests()
    cut = Attempt("a", "mid_stream", reason="stream_error", detail="connection cut", ttfb=0.05)
    refused = Attempt("b", "client_error", status=400, mode="prefill", at="block 0 (text) +5 chars")
    finished = Attempt(
        "c", "continued", mode="resume", at="block 0 (text) +5 chars", why="connection cut",
        overlap=7, gap=0.25, estimated=True, input_tokens=40, output_tokens=9,
    )  # fmt: skip
    recent.add(
        record(
            "req_1", "recovered", provider="a", attempts=[cut, refused, finished],
            ttfb=0.01, ttfc=0.2, duration=1.5, events=12, gaps=11, gap_p50=0.01, gap_max=0.4,
            input_tokens=25, output_tokens=16, cache_read_tokens=5, cost_usd=0.001,
        )
    )  # fmt: skip
    recent.add(record("req_2"))
    detail = recent.detail("req_1")
    assert detail is not None
    assert detail["verdict"] == "recovered" and detail["finished_by"] == "c"
    assert detail["provider"] == "a"  # the client got its head from a
    assert [(a["provider"], a["outcome"]) for a in detail["attempts"]] == [
        ("a", "mid_stream"), ("b", "client_error"), ("c", "continued")
    ]  # fmt: skip
    last = detail["attempts"][-1]
    assert (last["mode"], last["gap_ms"], last["overlap"], last["estimated"]) == (
        "resume", 250.0, 7, True
    )  # fmt: skip
    assert (last["input_tokens"], last["output_tokens"]) == (40, 9)
    assert detail["timing"] == {
        "ttfb_ms": 10.0, "ttfc_ms": 200.0, "duration_ms": 1500.0, "events": 12, "bytes": 0,
        "gaps": 11, "gap_p50_ms": 10.0, "gap_max_ms": 400.0,
    }  # fmt: skip
    assert detail["usage"]["cache_read_tokens"] == 5 and detail["usage"]["cost_usd"] == 0.001
    row = next(r for r in recent.rows() if r["request_id"] == "req_1")
    assert row["finished_by"] == "c" and row["verdict"] == "recovered"
    assert recent.detail("req_unknown") is None


def test_a_hedged_race_marks_the_row_and_the_losers_attempt() -> None:
    recent = RecentRequests()
    attempts = [
        Attempt("a", "cancelled", detail="lost the race to b"),
        Attempt("b", "ok", ttfb=0.1, hedged=True),
    ]
    recent.add(record("req_h", provider="b", attempts=attempts))
    (row,) = recent.rows()
    assert row["hedged"] is True and row["finished_by"] == "b"
    detail = recent.detail("req_h")
    assert detail is not None
    assert [(a["outcome"], a["hedged"]) for a in detail["attempts"]] == [
        ("cancelled", False), ("ok", True)
    ]  # fmt: skip


def test_a_record_leaves_the_ring_and_its_detail_goes_with_it() -> None:
    recent = RecentRequests(size=2)
    for i in range(3):
        recent.add(record(f"r{i}"))
    assert recent.detail("r0") is None and recent.detail("r2") is not None
    assert recent.requests == 3


# -- in flight ---------------------------------------------------------------------------


@dataclass
class _Progress:
    provider: str = ""
    ttfc: float | None = None


@dataclass
class _Answer:
    end: int = 0
    ready: bool = False
    outcome: _Progress = field(default_factory=_Progress)


def test_a_request_is_in_flight_from_its_subscription_until_it_is_recorded() -> None:
    inflight = InFlight()
    first = record("req_1", client="alice", role="leader")
    answer = _Answer()
    inflight.add(first, answer)
    inflight.add(record("req_2", client="bob", stream=False), _Answer())
    (waiting, _) = inflight.rows(now=1002.5)
    assert waiting["state"] == "waiting" and waiting["provider"] == "" and waiting["events"] == 0
    assert waiting["ttfc_ms"] is None and waiting["age_s"] == 2.5
    answer.end, answer.ready = 7, True
    answer.outcome.provider, answer.outcome.ttfc = "a", 0.3125
    (going, other) = inflight.rows(now=1003.0)
    assert (going["client"], going["model"], going["provider"], going["state"]) == (
        "alice", "claude-opus-4-5", "a", "answering"
    )  # fmt: skip
    assert (going["events"], going["ttfc_ms"]) == (7, 312.5)
    assert other["client"] == "bob" and other["stream"] is False
    inflight.discard("req_1")
    inflight.discard("req_1")  # recorded twice is harmless
    assert [r["request_id"] for r in inflight.rows(now=1003.0)] == ["req_2"]
    assert len(inflight) == 1


# -- gaps between events -------------------------------------------------------------------


def test_the_gaps_between_events_leave_out_synthesised_ones() -> None:
    log = FrameLog()
    assert log.gaps() == (0, None, None)
    for received in (100.0, 100.0, 100.25, 0.0, 101.25, 101.5):  # 0.0: a ping of our own
        log.append(b"data: {}\n\n", received)
    count, median, longest = log.gaps()
    assert count == 4
    assert median == pytest.approx(0.25, abs=1e-4) and longest == pytest.approx(1.0, abs=1e-4)


def test_a_single_event_has_no_gap() -> None:
    log = FrameLog()
    log.append(b"data: {}\n\n", 5.0)
    assert log.gaps() == (0, None, None)


# -- one sessions table ------------------------------------------------------------------

ALICE = "sk-alice-sessions-0001"


def _warm(session: str, route: str, provider: str, moves: int = 0, **move) -> dict:
    row = {"session": session, "route": route, "provider": provider, "answers": 3,
           "hit_rate": 0.5, "moves": moves, "last": 0.0, "stints": []}  # fmt: skip
    if move:
        row["last_move"] = move
    return row


def _cost(session: str, provider: str = "x") -> dict:
    return {"session": session, "client": "c", "model": "m", "provider": provider,
            "requests": 2, "usd": 0.5}  # fmt: skip


def test_record_sessions_turn_sticky_keys_into_the_records_session_names() -> None:
    config = parse_config(
        "providers:\n"
        "  - {name: a, type: anthropic, base_url: 'http://127.0.0.1:1', auth_value: k}\n"
        "model_routes:\n  '*': [{provider: a, model: passthrough, priority: 1}]\n"
        f"clients:\n  - {{name: alice, key: {ALICE}}}\n"
        f"  - {{name: bob, key_sha256: {hashlib.sha256(b'sk-bob-x').hexdigest().upper()}}}\n",
        "<test>",
    )
    of = record_sessions(config)
    sticky = "key:" + digest(ALICE).hex()[:16]
    assert of("0d5a3f1e-claude-code-session") == "0d5a3f1e-claude-code-session"
    assert of(sticky) == "alice"
    assert of("key:" + hashlib.sha256(b"sk-bob-x").hexdigest()[:16]) == "bob"
    anonymous = hashlib.sha256(b"sk-someone").hexdigest()
    assert of("key:" + anonymous[:16]) == "key-" + anonymous[:12]  # proxy.clients._digest
    assert of("key:" + hashlib.sha256(b"").hexdigest()[:16]) == ""


def test_one_row_per_session_joins_its_cost_with_where_its_cache_is() -> None:
    warm = [  # the most recently answered first, as CacheWarmth.rows gives them
        _warm("key:1234567890abcdef", "haiku", "b"),
        _warm("s1", "opus", "b", moves=1, **{"from": "a", "to": "b", "hit_rate_before": 0.9,
                                             "hit_rate_after": 0.0}),
        _warm("s1", "haiku", "a", moves=2, **{"from": "b", "to": "a", "hit_rate_before": 0.1,
                                              "hit_rate_after": 0.2}),
    ]  # fmt: skip
    costs = [_cost("s1"), _cost("key-1234567890ab"), _cost("s-cold", provider="c")]

    def of(sticky: str) -> str:
        return "key-" + sticky[4:16] if sticky.startswith("key:") else sticky

    rows = {r["session"]: r for r in sessions_view(costs, warm, of)}
    assert list(rows) == ["s1", "key-1234567890ab", "s-cold"]  # the costs' order
    s1 = rows["s1"]
    assert s1["provider"] == "b" and s1["moves"] == 3 and s1["usd"] == 0.5
    assert s1["last_move"] == {"from": "a", "to": "b", "hit_rate_before": 0.9,
                               "hit_rate_after": 0.0, "route": "opus"}  # fmt: skip
    assert [r["route"] for r in s1["routes"]] == ["opus", "haiku"]
    keyed = rows["key-1234567890ab"]
    assert keyed["provider"] == "b" and keyed["moves"] == 0 and keyed["last_move"] is None
    cold = rows["s-cold"]  # no warmth kept (yet, or any more): its last answer's provider
    assert cold["provider"] == "c" and cold["routes"] == []
