"""Prometheus metrics on a registry of our own, served as ``GET /metrics``.

Every label value comes from a closed set or from provider names in the config, so the
number of series stays bounded whatever clients send: model names, request ids and error
text never become labels. ``forget_provider`` drops a provider's series when a reload removes
it. ``event_forwarded`` runs once per event per subscriber, so it does one observe and no more,
on a histogram of our own (a bisect and an increment; prometheus_client's takes a lock).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any, cast

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString as _untyped_go_float

from ccbalancer.observe.record import Charged, RequestRecord

_go_float = cast(Callable[[float], str], _untyped_go_float)  # the exposition's `le` spelling

REASONS = frozenset(
    {"connect", "timeout", "status", "stream_error", "protocol", "client_gone", "other"}
)
OUTCOMES = frozenset({"ok", "recovered", "error", "mid_stream_error", "client_error", "cancelled"})
ATTEMPT_OUTCOMES = frozenset(
    {"ok", "continued", "failover", "client_error", "mid_stream", "cancelled"}
)
MODES = frozenset({"prefill", "resume"})
ROLES = frozenset({"leader", "follower", "cache", "none"})
PROVIDER_STATES = ("healthy", "cooling_down", "half_open")
AUTH_KEYS = frozenset({"missing", "wrong"})
NO_PROVIDER = "none"  # label for requests no provider served (every candidate failed)
ANONYMOUS = "anonymous"  # the client label without named clients
CLIENT_LIMITS = frozenset({
    "models", "price", "requests_per_minute", "max_concurrency", "tokens_per_day",
    "usd_per_day", "usd_per_month",
})  # fmt: skip

# 50 µs .. 1 s: a healthy forward is well under a millisecond (DESIGN.md section 10), the
# upper buckets show event-loop stalls and slow clients.
FORWARD_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
# Time to first byte / content of an LLM: from a cached replay (ms) to a cold start (a minute).
LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800)


class LoopHistogram:
    """A label-less histogram for the hot path, observed and collected on the event loop's
    thread only (which is where every observation and every ``/metrics`` scrape happens)."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation)
        cumulative: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self._bounds, float("inf")), self._counts, strict=True):
            total += count
            cumulative.append((_go_float(bound), total))
        family.add_metric([], cumulative, sum_value=self._sum)
        yield family


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def _one_part(record: RequestRecord) -> Charged:
    """The whole answer at its provider (a record nobody priced: ``accounting`` not run)."""
    cached = record.cache_read_tokens + record.cache_write_tokens
    return Charged(
        record.provider, max(0, record.input_tokens - cached), record.cache_read_tokens,
        record.cache_write_tokens, record.output_tokens, record.cost_usd,
    )  # fmt: skip


class Metrics:
    """All ccbalancer metrics; one instance per running app (owned by the Runtime)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[object, ...], Any] = {}
        r = self.registry
        self._requests = Counter(
            "ccbalancer_requests_total",
            "Finished client requests by serving provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self._attempts = Counter(
            "ccbalancer_attempts_total",
            "Upstream attempts by provider and outcome.",
            ["provider", "outcome"],
            registry=r,
        )
        self._failovers = Counter(
            "ccbalancer_failovers_total",
            "Attempts abandoned before commit for the next candidate, by reason.",
            ["provider", "reason"],
            registry=r,
        )
        self._recoveries = Counter(
            "ccbalancer_recoveries_total",
            "Continuations of cut answers (mid-stream recovery), by the provider asked, the "
            "mode and how it went (continued, failover, mid_stream, client_error).",
            ["provider", "mode", "outcome"],
            registry=r,
        )
        self._recovery_gap = Histogram(
            "ccbalancer_recovery_gap_seconds",
            "From a mid-stream cut to the first content of the continuation that finished it.",
            buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120),
            registry=r,
        )
        self._hedges = Counter(
            "ccbalancer_hedges_total",
            "Hedged first tokens (settings.hedge_after): the hedge won, lost (cancelled when "
            "the first candidate committed first) or failed.",
            ["outcome"],
            registry=r,
        )
        self._tokens = Counter(
            "ccbalancer_tokens_total",
            "Tokens reported by providers.",
            ["provider", "direction"],
            registry=r,
        )
        # Per client: client names come from the config (plus ``anonymous``), so the label
        # set stays bounded; a reload that removes a client drops its series.
        self._client_tokens = Counter(
            "ccbalancer_client_tokens_total",
            "Tokens of answers by client, serving provider and kind "
            "(fresh input, cache_read, cache_write, output).",
            ["client", "provider", "kind"],
            registry=r,
        )
        self._client_cost = Counter(
            "ccbalancer_client_cost_usd_total",
            "US dollars of answers by client and serving provider (models with a known price).",
            ["client", "provider"],
            registry=r,
        )
        self._client_refusals = Counter(
            "ccbalancer_client_refusals_total",
            "Requests refused before any upstream call, by client and the limit (or models / "
            "price rule) that refused them.",
            ["client", "limit"],
            registry=r,
        )
        self._shared = Counter(
            "ccbalancer_shared_total",
            "Requests by sharing role (follower and cache are served without an upstream call).",
            ["role"],
            registry=r,
        )
        self._ttfb = Histogram(
            "ccbalancer_time_to_first_byte_seconds",
            "Admission to the first byte written to the client.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._ttfc = Histogram(
            "ccbalancer_time_to_first_content_seconds",
            "Upstream send to the first content block.",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._duration = Histogram(
            "ccbalancer_request_duration_seconds",
            "Admission to the end of the response.",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._forward = LoopHistogram(
            "ccbalancer_event_forward_seconds",
            "Upstream receive to client write, per event and subscriber.",
            FORWARD_BUCKETS,
        )
        r.register(self._forward)
        self._streams = Gauge("ccbalancer_active_streams", "Open upstream streams.", registry=r)
        self._subscribers = Gauge(
            "ccbalancer_active_subscribers", "Clients attached to a stream.", registry=r
        )
        self._auth_failures = Counter(
            "ccbalancer_auth_failures_total",
            "Requests refused with 401 for a missing or wrong inbound key.",
            ["key"],
            registry=r,
        )
        self._state = Gauge(
            "ccbalancer_provider_state",
            "1 for the provider's current health state, 0 for the others.",
            ["provider", "state"],
            registry=r,
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: prometheus_client validates labels and
        takes a lock on every ``labels()``, several times per request otherwise."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request_finished(self, record: RequestRecord) -> None:
        provider = record.provider or NO_PROVIDER
        child = self._child
        child(self._requests, provider, _bounded(record.outcome, OUTCOMES)).inc()
        child(self._shared, _bounded(record.role, ROLES)).inc()
        self._duration.observe(record.duration)
        if record.ttfb is not None:
            child(self._ttfb, provider).observe(record.ttfb)
        if record.ttfc is not None:
            child(self._ttfc, provider).observe(record.ttfc)
        if record.provider and record.role in ("leader", "none"):
            # Followers and cache replays cost no upstream tokens: counting them would double.
            # Zero increments still create the series, so a provider shows up at 0, not absent.
            # A recovered answer counts at each provider what it made (``record.charged``).
            client = record.client or ANONYMOUS
            for part in record.charged or [_one_part(record)]:
                prompt = part.fresh_tokens + part.cache_read_tokens + part.cache_write_tokens
                child(self._tokens, part.provider, "input").inc(prompt)
                child(self._tokens, part.provider, "output").inc(part.output_tokens)
                self._client_usage(client, part)
        for attempt in record.attempts:
            if attempt.hedged:
                verdict = {"ok": "won", "cancelled": "lost"}.get(attempt.outcome, "failed")
                child(self._hedges, verdict).inc()
            outcome = _bounded(attempt.outcome, ATTEMPT_OUTCOMES)
            child(self._attempts, attempt.provider, outcome).inc()
            if attempt.mode:
                mode = _bounded(attempt.mode, MODES)
                child(self._recoveries, attempt.provider, mode, outcome).inc()
                if attempt.outcome == "continued" and attempt.gap is not None:
                    self._recovery_gap.observe(attempt.gap)
            elif attempt.outcome == "failover":
                reason = _bounded(attempt.reason, REASONS)
                child(self._failovers, attempt.provider, reason).inc()

    def _client_usage(self, client: str, part: Charged) -> None:
        child, tokens, provider = self._child, self._client_tokens, part.provider
        child(tokens, client, provider, "fresh").inc(part.fresh_tokens)
        child(tokens, client, provider, "cache_read").inc(part.cache_read_tokens)
        child(tokens, client, provider, "cache_write").inc(part.cache_write_tokens)
        child(tokens, client, provider, "output").inc(part.output_tokens)
        child(self._client_cost, client, provider).inc(part.usd or 0.0)

    def client_refused(self, client: str, limit: str) -> None:
        self._child(self._client_refusals, client, _bounded(limit, CLIENT_LIMITS)).inc()

    def forget_client(self, client: str) -> None:
        metrics = (self._client_tokens, self._client_cost, self._client_refusals)
        ids = {id(metric) for metric in metrics}
        self._children = {
            k: v for k, v in self._children.items() if not (k[0] in ids and k[1] == client)
        }
        for metric in metrics:
            metric.remove_by_labels({"client": client})

    def auth_failed(self, key: str) -> None:
        """A request refused for its key: ``missing`` or ``wrong``."""
        self._auth_failures.labels(_bounded(key, AUTH_KEYS)).inc()

    def shared_counts(self) -> dict[str, int]:
        """Requests served so far by sharing role (for /providers)."""
        counts: dict[str, int] = {}
        for role in sorted(ROLES):
            value = self.registry.get_sample_value("ccbalancer_shared_total", {"role": role})
            counts[role] = int(value or 0)
        return counts

    @property
    def event_forwarded(self) -> Callable[[float], None]:
        """Observe one event's upstream-receive -> client-write seconds: the histogram's own
        ``observe``, handed to each subscriber (no wrapper call per event)."""
        return self._forward.observe

    def stream_opened(self) -> None:
        self._streams.inc()

    def stream_closed(self) -> None:
        self._streams.dec()

    def subscriber_added(self) -> None:
        self._subscribers.inc()

    def subscriber_removed(self) -> None:
        self._subscribers.dec()

    def provider_state(self, provider: str, state: str) -> None:
        if state not in PROVIDER_STATES:
            raise ValueError(f"unknown provider state {state!r}; expected one of {PROVIDER_STATES}")
        for name in PROVIDER_STATES:
            self._state.labels(provider, name).set(1 if name == state else 0)

    def forget_provider(self, provider: str) -> None:
        self._children = {k: v for k, v in self._children.items() if provider not in k[1:]}
        for metric in (
            self._requests,
            self._attempts,
            self._failovers,
            self._recoveries,
            self._tokens,
            self._ttfb,
            self._ttfc,
            self._state,
            self._client_tokens,
            self._client_cost,
        ):
            metric.remove_by_labels({"provider": provider})

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
