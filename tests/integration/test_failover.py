"""Failover while uncommitted, client errors passed through, mid-stream failures as event: error."""

from __future__ import annotations

import socket

import pytest

from ccbalancer.mock import Script
from tests.conftest import config_text, msg, read_events

FAST_TIMEOUTS = """timeouts:
  first_event_timeout: 0.5
  streaming: {connect_timeout: 2, read_timeout: 0.5, pool_timeout: 2}
"""


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


UNCOMMITTED_FAILURES = {
    "http_500": Script(status=500),
    "http_529_overloaded": Script(status=529, retry_after=3),
    "http_429_rate_limited": Script(status=429, retry_after=2),
    "reset_before_headers": Script(reset_before_headers=True),
    "headers_then_silence": Script(first_event_delay=5),
    "stall_before_content": Script(stall_after=2),  # message_start + ping, then nothing
    "error_event_before_content": Script(error_after=1),
    "ends_before_content": Script(cut_after=1),
    "cut_mid_event_before_content": Script(cut_after=1, cut_mid_event=True),
    "json_error_in_200": Script(body_json_error=True),
    "html_502_page": Script(status=502, html=True),
    "invalid_json_before_content": Script(invalid_json_at=1),
}


@pytest.mark.parametrize("kind", sorted(UNCOMMITTED_FAILURES))
async def test_uncommitted_failure_fails_over_invisibly(kind, mock, balancer_factory):
    mock.enqueue("bad", UNCOMMITTED_FAILURES[kind])
    b = await balancer_factory(config_text(mock, ["bad", "good"], settings=FAST_TIMEOUTS))
    resp = await b.post(msg())
    events = await read_events(resp)
    assert resp.status == 200
    assert resp.headers["x-provider-used"] == "good"
    names = [n for n, _ in events]
    assert "error" not in names
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert len(mock.requests("bad")) == 1 and len(mock.requests("good")) == 1
    assert b.runtime.health.get("bad").failure_count == 1
    assert b.runtime.health.get("good").failure_count == 0


async def test_connection_refused_fails_over(mock, balancer_factory):
    text = config_text(mock, ["dead", "good"]).replace(
        mock.anthropic_url("dead"), f"http://127.0.0.1:{_closed_port()}/dead"
    )
    b = await balancer_factory(text)
    resp = await b.post(msg(stream=False))
    assert resp.status == 200
    assert resp.headers["x-provider-used"] == "good"
    assert (await resp.json())["content"][0]["type"] == "text"


async def test_body_pattern_makes_an_unlisted_status_fail_over(mock, balancer_factory):
    mock.enqueue("bad", Script(status=400, error_message="no available token for this channel"))
    settings = "unhealthy_response_body_patterns: ['no available token']\n"
    b = await balancer_factory(config_text(mock, ["bad", "good"], settings=settings))
    resp = await b.post(msg())
    await resp.read()
    assert resp.headers["x-provider-used"] == "good"


async def test_client_error_400_is_returned_as_is_without_failover(mock, balancer_factory):
    mock.enqueue(
        "a",
        Script(
            status=400,
            error_type="invalid_request_error",
            error_message="Unsupported beta header: x",
        ),
    )
    b = await balancer_factory(config_text(mock, ["a", "b"]))
    resp = await b.post(msg())
    assert resp.status == 400
    body = await resp.json()
    assert body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Unsupported beta header: x"},
    }
    assert mock.requests("b") == []
    assert b.runtime.health.get("a").failure_count == 0  # a client error is no health strike


@pytest.mark.parametrize(
    ("script", "expected_type"),
    [
        (Script(events=6, cut_after=5), "api_error"),
        (Script(events=6, cut_after=5, cut_mid_event=True), "api_error"),
        (Script(events=6, error_after=5, error_type="overloaded_error"), "overloaded_error"),
        (Script(events=6, stall_after=5), "api_error"),
        (Script(events=6, drop="message_delta"), "api_error"),
        (Script(events=6, invalid_json_at=6), "api_error"),
    ],
    ids=["cut", "cut_mid_event", "error_event", "stall", "no_message_delta", "invalid_json"],
)
async def test_mid_stream_failure_ends_with_a_proper_error_event(
    script, expected_type, mock, balancer_factory
):
    mock.enqueue("a", script)
    b = await balancer_factory(
        config_text(mock, ["a", "b"], settings=FAST_TIMEOUTS + "recovery: {enabled: false}\n")
    )
    resp = await b.post(msg())
    events = await read_events(resp)
    assert resp.status == 200
    names = [n for n, _ in events]
    assert "content_block_start" in names
    assert names[-1] == "error", names
    assert events[-1][1]["error"]["type"] == expected_type
    # never an invented ending: no message_delta / message_stop after a failure
    assert "message_stop" not in names
    assert mock.requests("b") == []  # after commit there is no silent switch to another provider
    assert b.runtime.health.get("a").failure_count == 1


async def test_idle_limit_is_the_gap_between_reads_not_the_stream_length(mock, balancer_factory):
    """read_timeout bounds each silence, however long the stream: gaps of 0.3 s over ~2 s with
    a 0.5 s limit complete; a silence after that ends the stream as an idle timeout."""
    mock.enqueue("a", Script(events=6, delay=0.3))
    mock.enqueue("a", Script(events=6, delay=0.3, stall_after=6))
    b = await balancer_factory(config_text(mock, ["a"], settings=FAST_TIMEOUTS))
    names = [n for n, _ in await read_events(await b.post(msg()))]
    assert names[-1] == "message_stop" and "error" not in names
    events = await read_events(await b.post(msg("again")))
    assert [n for n, _ in events][-1] == "error"
    assert "idle timeout after 0.5s" in b.runtime.recent.rows(1)[0]["error"]


async def test_mid_stream_failure_for_a_non_streaming_client_is_an_error_status(
    mock, balancer_factory
):
    mock.enqueue("a", Script(events=6, cut_after=5))
    b = await balancer_factory(config_text(mock, ["a"], settings=FAST_TIMEOUTS))
    resp = await b.post(msg(stream=False))
    assert resp.status == 500
    assert (await resp.json())["error"]["type"] == "api_error"


async def test_single_provider_429_keeps_status_and_retry_after(mock, balancer_factory):
    mock.enqueue("a", Script(status=429, retry_after=7, error_message="rate limited"))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    assert resp.status == 429
    assert resp.headers["retry-after"] == "7"
    body = await resp.json()
    assert body["error"]["type"] == "rate_limit_error"


async def test_retry_after_passed_to_client_is_capped_at_60_seconds(mock, balancer_factory):
    mock.enqueue("a", Script(status=429, retry_after=120))
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    assert resp.status == 429
    assert resp.headers["retry-after"] == "60"  # Claude Code gives up at once on 90 s and more


async def test_provider_refusing_the_balancer_key_is_a_502_naming_it(mock, balancer_factory):
    mock.enqueue(
        "a",
        Script(status=401, error_type="authentication_error", error_message="invalid x-api-key"),
    )
    b = await balancer_factory(config_text(mock, ["a"]))
    resp = await b.post(msg())
    assert resp.status == 502
    body = await resp.json()
    assert body["error"]["type"] == "api_error"
    assert "a" in body["error"]["message"] and "401" in body["error"]["message"]
    assert "sk-prov-a-secret" not in body["error"]["message"]


async def test_passthrough_provider_401_passes_through_unchanged(mock, balancer_factory):
    mock.enqueue(
        "a",
        Script(status=401, error_type="authentication_error", error_message="invalid x-api-key"),
    )
    text = config_text(mock, ["a", "b"]).replace(
        'auth_value: "sk-prov-a-secret"', 'auth_value: "passthrough"'
    )
    b = await balancer_factory(text)
    resp = await b.post(msg())
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    assert mock.requests("a")[-1].headers["x-api-key"] == "sk-client-1"
    assert mock.requests("b") == []


async def test_every_provider_failing_is_a_503_naming_each_reason(mock, balancer_factory):
    mock.enqueue("a", Script(status=500, error_message="boom"))
    mock.enqueue("b", Script(status=529))
    b = await balancer_factory(config_text(mock, ["a", "b"]))
    resp = await b.post(msg(model="claude-opus-4-5"))
    assert resp.status == 503
    message = (await resp.json())["error"]["message"]
    assert message.startswith("All configured providers for model claude-opus-4-5 failed")
    assert "a: HTTP 500" in message and "b: HTTP 529" in message
    assert 1 <= int(resp.headers["retry-after"]) <= 60


async def test_no_selectable_provider_is_a_503_with_retry_after_of_the_cooldown(
    mock, balancer_factory
):
    settings = "unhealthy_threshold: 1\nfailure_cooldown: 42\n"
    b = await balancer_factory(config_text(mock, ["a"], settings=settings), manual_clock=True)
    mock.enqueue("a", Script(status=500))
    first = await b.post(msg("one"))
    assert first.status == 500
    resp = await b.post(msg("two"))
    assert resp.status == 503
    assert resp.headers["retry-after"] == "42"
    assert "All configured providers for model" in (await resp.json())["error"]["message"]
    assert len(mock.requests("a")) == 1  # the cooling provider was not called again
    b.clock.now += 43  # after the cooldown one probe goes through and succeeds
    ok = await b.post(msg("three"))
    assert ok.status == 200
    await ok.read()


async def test_unknown_model_route_is_404(mock, balancer_factory):
    b = await balancer_factory(config_text(mock, ["a"], routes={"*sonnet*": ["a"]}))
    resp = await b.post(msg(model="gpt-5"))
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"
