"""The dashboard's data through real sockets: one recent request's detail (behind the key, 404
in the Anthropic envelope once it is gone, never a secret), the requests in flight, and the
verdicts its header counts."""

from __future__ import annotations

import orjson

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events, read_until, until

ALICE = "sk-alice-detail-00000001"
CLIENTS = f"clients:\n  - {{name: alice, key: {ALICE}}}\n"
KEY = {"x-api-key": ALICE}
PIECES = ["Hello", " from", " the", " mock.", " Second", " line."]


async def _detail(b, request_id: str, headers: dict[str, str] | None = None):
    resp = await b.session.get(b.url + f"/dashboard/request/{request_id}", headers=headers or {})
    return resp.status, await resp.read()


async def test_a_requests_detail_needs_the_key_shows_every_attempt_and_no_secret(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a", "b"]) + CLIENTS)
    mock.enqueue("a", Script(status=529))
    resp = await b.post(msg("fails over"), KEY)
    events = await read_events(resp)
    assert resp.headers["x-provider-used"] == "b"
    request_id = resp.headers["x-ccbalancer-request-id"]

    status, body = await _detail(b, request_id)  # no key
    assert status == 401
    assert orjson.loads(body)["error"]["type"] == "authentication_error"
    status, body = await _detail(b, request_id, KEY)
    assert status == 200
    detail = orjson.loads(body)
    assert detail["request_id"] == request_id and detail["client"] == "alice"
    assert (detail["verdict"], detail["provider"], detail["finished_by"]) == ("ok", "b", "b")
    tried = [(a["provider"], a["outcome"], a["status"]) for a in detail["attempts"]]
    assert tried == [("a", "failover", 529), ("b", "ok", None)]
    assert detail["attempts"][1]["ttfb_ms"] is not None
    timing = detail["timing"]
    assert timing["events"] == len(events)
    assert timing["gaps"] == len(events) - 1  # every event came from b, none synthesised
    assert 0 <= timing["gap_p50_ms"] <= timing["gap_max_ms"]
    assert detail["usage"]["input_tokens"] == 25 and detail["usage"]["output_tokens"] > 0
    for secret in (ALICE, "sk-prov-a-secret", "sk-prov-b-secret"):
        assert secret.encode() not in body

    status, body = await _detail(b, "req_ccb_000000000000000000000000", KEY)
    assert status == 404
    assert orjson.loads(body) == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "no such recent request (only the last few hundred are kept)",
        },
    }


async def test_a_recovered_requests_detail_shows_the_cut_the_continuation_and_who_finished(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a", "b"]))
    fields = {"pieces": orjson.dumps(PIECES).decode(), "providers": {"a": {"cut_after": 5}}}
    prompt = f"go <<mock {orjson.dumps(fields).decode()}>>"
    resp = await b.post(msg(prompt, model="claude-opus-4-5"))
    events = await read_events(resp)
    assert events[-1][0] == "message_stop"
    status, body = await _detail(b, resp.headers["x-ccbalancer-request-id"])
    assert status == 200
    detail = orjson.loads(body)
    assert (detail["outcome"], detail["verdict"]) == ("recovered", "recovered")
    assert detail["provider"] == "a" and detail["finished_by"] == "b"
    cut, continued = detail["attempts"]
    assert (cut["provider"], cut["outcome"], cut["mode"]) == ("a", "mid_stream", "")
    assert cut["reason"]
    assert (continued["provider"], continued["outcome"], continued["mode"]) == (
        "b", "continued", "prefill"
    )  # fmt: skip
    assert continued["at"].startswith("block 0 (text)") and continued["why"]
    assert continued["gap_ms"] is not None and continued["output_tokens"] > 0
    assert detail["timing"]["gaps"] >= 1


async def test_a_hedged_race_shows_the_hedge_and_the_loser_cancelled(mock, balancer_factory):
    mock.configure("a", Script(first_event_delay=5))
    b = await balancer_factory(config_text(mock, ["a", "b"], settings="hedge_after: 0.3\n"))
    resp = await b.post(msg())
    await resp.read()
    assert resp.headers["x-provider-used"] == "b"
    status, body = await _detail(b, resp.headers["x-ccbalancer-request-id"])
    assert status == 200
    detail = orjson.loads(body)
    tried = [(a["provider"], a["outcome"], a["hedged"], a["detail"]) for a in detail["attempts"]]
    assert tried == [("a", "cancelled", False, "lost the race to b"), ("b", "ok", True, "")]
    (row,) = (await (await b.session.get(b.url + "/dashboard/data")).json())["recent"]
    assert row["hedged"] is True and row["verdict"] == "ok"


async def test_a_stream_is_in_flight_until_its_client_leaves_and_then_reads_cancelled(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"]) + CLIENTS)
    mock.enqueue("a", Script(stall_after=5))  # message_start, ping, block start, two deltas
    resp = await b.post(msg("stalls", model="claude-haiku-4-5"), KEY)
    request_id = resp.headers["x-ccbalancer-request-id"]
    await read_until(resp, 5)
    data = await (await b.session.get(b.url + "/dashboard/data", headers=KEY)).json()
    (row,) = data["in_flight"]
    assert data["in_flight_count"] == 1 and data["active_streams"] == 1
    assert (row["request_id"], row["client"], row["model"], row["provider"]) == (
        request_id, "alice", "claude-haiku-4-5", "a"
    )  # fmt: skip
    assert (row["state"], row["events"], row["role"]) == ("answering", 5, "none")
    assert row["ttfc_ms"] is not None and row["age_s"] >= 0
    resp.close()  # the client leaves
    await until(lambda: len(b.runtime.inflight) == 0)
    data = await (await b.session.get(b.url + "/dashboard/data", headers=KEY)).json()
    assert data["in_flight"] == [] and data["in_flight_count"] == 0
    (done,) = data["recent"]
    assert (done["request_id"], done["outcome"], done["verdict"]) == (
        request_id, "cancelled", "cancelled"
    )  # fmt: skip
    assert data["totals"] == {
        "requests": 1, "errors": 0, "refused": 0, "cancelled": 1, "recovered": 0
    }  # fmt: skip


async def test_refusals_at_the_door_and_by_a_provider_are_counted_apart_from_errors(
    mock, balancer_factory
):
    b = await balancer_factory(config_text(mock, ["a"], settings="unhealthy_threshold: 10\n"))
    bad = await b.session.post(
        b.url + "/v1/messages", data=b"{not json", headers={"x-api-key": "sk-client-1"}
    )
    assert bad.status == 400
    mock.enqueue("a", Script(status=400, error_type="invalid_request_error"))
    refused = await b.post(msg("the provider refuses it"))
    assert refused.status == 400
    mock.enqueue("a", Script(status=500))
    failed = await b.post(msg("no answer"))
    assert failed.status >= 500
    mock.enqueue("a", Script(error_after=4))
    broken = await b.post(msg("breaks off"))
    assert (await read_events(broken))[-1][0] == "error"
    await (await b.post(msg("fine"))).read()
    data = await (await b.session.get(b.url + "/dashboard/data")).json()
    verdicts = [r["verdict"] for r in data["recent"]]
    assert verdicts == ["ok", "error", "error", "refused", "refused"]
    assert data["totals"] == {
        "requests": 5, "errors": 2, "refused": 2, "cancelled": 0, "recovered": 0
    }  # fmt: skip


BOB = "sk-bob-detail-0000000002"
ADMIN = "sk-admin-dashboard-0001"
TEAM = (
    f"clients:\n  - {{name: alice, key: {ALICE}}}\n  - {{name: bob, key: {BOB}}}\n"
)  # fmt: skip


async def test_a_client_key_sees_its_own_requests_and_the_admin_key_every_clients(
    mock, balancer_factory
):
    """In a team, the dashboard's data is the admin's: a client's key gets its own requests
    (in flight and recent), totals, sessions and usage, and another client's request detail is
    "gone"; the providers' figures stay whole. Nothing of bob's reaches alice."""
    settings = f"admin_api_key: {ADMIN}\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings) + TEAM)

    async def view(key: str) -> dict:
        resp = await b.session.get(b.url + "/dashboard/data", headers={"x-api-key": key})
        assert resp.status == 200
        return orjson.loads(await resp.read())

    as_alice = {"x-api-key": ALICE, "x-claude-code-session-id": "sess-alice-0000001"}
    as_bob = {"x-api-key": BOB, "x-claude-code-session-id": "sess-bob-00000001"}
    mine = await b.post(msg("alice asks"), as_alice)
    await mine.read()
    theirs = await b.post(msg("bob asks"), as_bob)
    await theirs.read()
    mock.enqueue("a", Script(stall_after=5))
    running = await b.post(msg("bob waits", model="claude-haiku-4-5"), as_bob)
    await read_until(running, 5)
    await (await b.session.get(b.url + "/dashboard/data", headers={"x-api-key": "wrong"})).read()

    alice = await view(ALICE)
    assert alice["scope"] == "alice"
    assert [r["client"] for r in alice["recent"]] == ["alice"]
    assert alice["totals"]["requests"] == 1
    assert alice["in_flight"] == [] and alice["in_flight_count"] == 0
    assert [s["session"] for s in alice["sessions"]] == ["sess-alice-0000001"]
    assert [u["client"] for u in alice["usage"]] == ["alice"]
    assert alice["auth_failures"] is None and alice["active_streams"] is None
    assert [p["name"] for p in alice["providers"]] == ["a"]  # the providers stay whole
    text = orjson.dumps(alice).decode()
    assert "bob" not in text and "sess-bob" not in text

    status, _ = await _detail(b, mine.headers["x-ccbalancer-request-id"], {"x-api-key": ALICE})
    assert status == 200
    status, body = await _detail(b, theirs.headers["x-ccbalancer-request-id"], {"x-api-key": ALICE})
    assert status == 404 and b"bob" not in body

    admin = await view(ADMIN)
    assert admin["scope"] is None
    assert sorted(r["client"] for r in admin["recent"]) == ["alice", "bob"]
    assert admin["totals"]["requests"] == 2
    assert [r["client"] for r in admin["in_flight"]] == ["bob"] and admin["in_flight_count"] == 1
    assert sorted(u["client"] for u in admin["usage"]) == ["alice", "bob"]
    assert admin["auth_failures"]["recent"] == 1 and admin["active_streams"] == 1
    status, _ = await _detail(b, theirs.headers["x-ccbalancer-request-id"], {"x-api-key": ADMIN})
    assert status == 200
    for path in ("/metrics", "/providers"):  # what an operator looks at opens to the admin key
        assert (await b.session.get(b.url + path, headers={"x-api-key": ADMIN})).status == 200
    refused = await b.post(msg("not a client"), {"x-api-key": ADMIN})  # but it is no client
    assert refused.status == 401
    running.close()
