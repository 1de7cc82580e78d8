"""Metrics: values after a known sequence of requests, bounded labels, provider state."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ccbalancer.observe.metrics import Metrics
from ccbalancer.observe.record import Attempt, RequestRecord


def value(metrics: Metrics, name: str, **labels: str) -> float:
    sample = metrics.registry.get_sample_value(name, labels)
    assert sample is not None, f"no sample {name}{labels}"
    return sample


def known_sequence() -> list[RequestRecord]:
    return [
        # relay-a timed out before commit, relay-b served.
        RequestRecord(
            request_id="req-1",
            model="claude-sonnet-4",
            started=0,
            status=200,
            provider="relay-b",
            attempts=[
                Attempt("relay-a", "failover", "timeout"),
                Attempt("relay-b", "ok", status=200),
            ],
            ttfb=0.3,
            ttfc=0.25,
            duration=4.0,
            input_tokens=100,
            output_tokens=40,
        ),
        # An identical request joined it.
        RequestRecord(
            request_id="req-2",
            model="claude-sonnet-4",
            started=0,
            role="follower",
            status=200,
            provider="relay-b",
            ttfb=0.05,
            duration=3.0,
            input_tokens=100,
            output_tokens=40,
        ),
        # Every candidate failed; one reason is not in the fixed set.
        RequestRecord(
            request_id="req-3",
            model="some-client-chosen-model",
            started=0,
            status=503,
            outcome="error",
            attempts=[
                Attempt("relay-a", "failover", "status", "HTTP 529", 529),
                Attempt("relay-b", "failover", "weird reason from a new code path"),
            ],
            ttfb=0.01,
            duration=0.2,
            error="All configured providers for model some-client-chosen-model failed",
        ),
    ]


def test_known_sequence_produces_expected_counts_and_histograms() -> None:
    metrics = Metrics()
    for record in known_sequence():
        metrics.request_finished(record)

    assert value(metrics, "ccbalancer_requests_total", provider="relay-b", outcome="ok") == 2
    assert value(metrics, "ccbalancer_requests_total", provider="none", outcome="error") == 1
    assert value(metrics, "ccbalancer_attempts_total", provider="relay-a", outcome="failover") == 2
    assert value(metrics, "ccbalancer_attempts_total", provider="relay-b", outcome="ok") == 1
    assert value(metrics, "ccbalancer_failovers_total", provider="relay-a", reason="timeout") == 1
    assert value(metrics, "ccbalancer_failovers_total", provider="relay-a", reason="status") == 1
    assert value(metrics, "ccbalancer_failovers_total", provider="relay-b", reason="other") == 1
    # the follower's tokens were the leader's upstream call: counted once
    assert value(metrics, "ccbalancer_tokens_total", provider="relay-b", direction="input") == 100
    assert value(metrics, "ccbalancer_tokens_total", provider="relay-b", direction="output") == 40
    assert value(metrics, "ccbalancer_shared_total", role="leader") == 2
    assert value(metrics, "ccbalancer_shared_total", role="follower") == 1

    ttfb = "ccbalancer_time_to_first_byte_seconds"
    assert value(metrics, f"{ttfb}_count", provider="relay-b") == 2
    assert value(metrics, f"{ttfb}_sum", provider="relay-b") == pytest.approx(0.35)
    assert value(metrics, f"{ttfb}_bucket", provider="relay-b", le="0.1") == 1
    ttfc = "ccbalancer_time_to_first_content_seconds"
    assert value(metrics, f"{ttfc}_count", provider="relay-b") == 1  # leaders only
    assert value(metrics, "ccbalancer_request_duration_seconds_count") == 3
    assert value(metrics, "ccbalancer_request_duration_seconds_sum") == pytest.approx(7.2)


def test_labels_never_carry_models_request_ids_or_error_text() -> None:
    metrics = Metrics()
    for record in known_sequence():
        metrics.request_finished(record)
    body, content_type = metrics.render()
    text = body.decode()

    assert content_type.startswith("text/plain")
    for leaked in ("claude-sonnet-4", "some-client-chosen-model", "req-1", "HTTP 529", "weird"):
        assert leaked not in text
    reasons = {
        sample.labels["reason"]
        for family in text_string_to_metric_families(text)
        if family.name == "ccbalancer_failovers"
        for sample in family.samples
    }
    assert reasons == {"timeout", "status", "other"}


def test_event_forward_histogram_resolves_sub_millisecond_latency() -> None:
    metrics = Metrics()
    for seconds in (0.00004, 0.0003, 0.0003, 0.004, 2.0):
        metrics.event_forwarded(seconds)

    name = "ccbalancer_event_forward_seconds_bucket"
    assert value(metrics, name, le="5e-05") == 1
    assert value(metrics, name, le="0.00025") == 1
    assert value(metrics, name, le="0.0005") == 3
    assert value(metrics, name, le="0.005") == 4
    assert value(metrics, name, le="1.0") == 4
    assert value(metrics, name, le="+Inf") == 5


def test_active_streams_and_subscribers_follow_open_and_close() -> None:
    metrics = Metrics()
    metrics.stream_opened()
    for _ in range(3):
        metrics.subscriber_added()
    metrics.subscriber_removed()

    assert value(metrics, "ccbalancer_active_streams") == 1
    assert value(metrics, "ccbalancer_active_subscribers") == 2

    metrics.subscriber_removed()
    metrics.subscriber_removed()
    metrics.stream_closed()
    assert value(metrics, "ccbalancer_active_streams") == 0
    assert value(metrics, "ccbalancer_active_subscribers") == 0


def test_provider_state_is_one_hot() -> None:
    metrics = Metrics()
    metrics.provider_state("relay-a", "healthy")
    metrics.provider_state("relay-a", "cooling_down")

    states = {
        s: value(metrics, "ccbalancer_provider_state", provider="relay-a", state=s)
        for s in ("healthy", "cooling_down", "half_open")
    }
    assert states == {"healthy": 0, "cooling_down": 1, "half_open": 0}

    metrics.provider_state("relay-a", "half_open")
    assert value(metrics, "ccbalancer_provider_state", provider="relay-a", state="half_open") == 1
    assert (
        value(metrics, "ccbalancer_provider_state", provider="relay-a", state="cooling_down") == 0
    )
    with pytest.raises(ValueError, match="unknown provider state"):
        metrics.provider_state("relay-a", "open")


def test_forget_provider_removes_its_series_and_keeps_the_others() -> None:
    metrics = Metrics()
    for record in known_sequence():
        metrics.request_finished(record)
    metrics.provider_state("relay-a", "healthy")
    metrics.provider_state("relay-b", "healthy")

    metrics.forget_provider("relay-a")

    text = metrics.render()[0].decode()
    assert 'provider="relay-a"' not in text
    assert 'provider="relay-b"' in text
    assert value(metrics, "ccbalancer_requests_total", provider="relay-b", outcome="ok") == 2
