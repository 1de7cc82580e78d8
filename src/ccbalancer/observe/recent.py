"""The last few hundred requests, in memory, for the dashboard: rows, one request's detail, the
counts in its header, and small time series.

Bounded (a ring), cheap to add to (one append per finished request), and computed only when the
dashboard asks. Holds no secrets: records carry ids, models, providers, timings and the short,
already-scrubbed error text.

The header's counts and the table's rows share one verdict per request (``verdict``), so they
cannot disagree about what an error is: an *error* is a request the balancer and its providers
did not answer in full (a 5xx: no provider answered, timeouts, a provider refusing the
balancer's own key; a 429: no provider had capacity; an answer that broke off mid-stream with
``event: error``; the balancer failing). A request the client must fix is *refused* (any other
4xx: refused at the door for its body or its client's limits, or refused by a provider as
invalid); a client that left is *cancelled*; an answer cut mid-stream and finished by another
provider is *recovered* (the client got it whole).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ccbalancer.observe.record import Attempt, RequestRecord

BUCKET_S = 5.0
VERDICTS = {
    "ok": "ok",
    "recovered": "recovered",
    "error": "error",
    "mid_stream_error": "error",
    "client_error": "refused",
    "cancelled": "cancelled",
}
COUNTED = ("error", "refused", "cancelled", "recovered")
_TALLY = ("requests", *COUNTED)


def verdict(outcome: str, status: int) -> str:
    """What the dashboard calls a record's outcome; an outcome it does not know is an error.
    No answer with a 4xx other than 429 was the request's fault (a provider's refusal of an
    invalid request is passed on as it came; one of the balancer's own key is a 502)."""
    seen = VERDICTS.get(outcome, "error")
    if seen == "error" and outcome == "error" and 400 <= status < 500 and status != 429:
        return "refused"
    return seen


def finished_by(record: RequestRecord) -> str:
    """The provider whose text ended the answer: for a recovered one, the last continuation
    that went through; otherwise the provider that served it ("" for none)."""
    if record.outcome == "recovered":
        for attempt in reversed(record.attempts):
            if attempt.outcome == "continued":
                return attempt.provider
    return record.provider


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _attempt(a: Attempt) -> dict[str, Any]:
    return {
        "provider": a.provider,
        "outcome": a.outcome,
        "reason": a.reason,
        "detail": a.detail,
        "status": a.status,
        "ttfb_ms": _ms(a.ttfb),
        "hedged": a.hedged,
        "mode": a.mode,  # "" unless the attempt continued a cut answer
        "at": a.at,
        "why": a.why,
        "overlap": a.overlap,
        "gap_ms": _ms(a.gap),
        "estimated": a.estimated,
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
    }


class RecentRequests:
    def __init__(self, size: int = 300) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        # since start, per client name (from the config, or "anonymous": a bounded set):
        # requests, then how many of them had each COUNTED verdict
        self._by_client: dict[str, dict[str, int]] = {}

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)
        mine = self._by_client.get(record.client)
        if mine is None:
            mine = self._by_client[record.client] = dict.fromkeys(_TALLY, 0)
        mine["requests"] += 1
        seen = verdict(record.outcome, record.status)
        if seen in mine:
            mine[seen] += 1

    @property
    def requests(self) -> int:
        return sum(counts["requests"] for counts in self._by_client.values())

    def totals(self, client: str | None = None) -> dict[str, int]:
        """Since start: requests, and how many were errors, refused, cancelled, recovered —
        of every client, or of ``client`` only."""
        if client is None:
            counts = {k: sum(c[k] for c in self._by_client.values()) for k in _TALLY}
        else:
            counts = self._by_client.get(client) or dict.fromkeys(_TALLY, 0)
        return {"requests": counts["requests"], "errors": counts["error"]} | {
            k: counts[k] for k in COUNTED if k != "error"
        }

    def rows(self, limit: int = 50, client: str | None = None) -> list[dict[str, Any]]:
        """The most recent first; of every client, or of ``client`` only."""
        out = []
        kept = [r for r in self._records if client is None or r.client == client]
        for r in kept[-limit:][::-1]:
            tried = ", ".join(
                f"{a.provider}:{a.outcome}" + (f"({a.detail})" if a.detail else "")
                for a in r.attempts
            )
            out.append(
                {
                    "started": r.started,
                    "request_id": r.request_id,
                    "model": r.model,
                    "provider": r.provider,
                    "finished_by": finished_by(r),
                    "role": r.role,
                    "status": r.status,
                    "outcome": r.outcome,
                    "verdict": verdict(r.outcome, r.status),
                    "hedged": any(a.hedged for a in r.attempts),
                    "ttfb_ms": _ms(r.ttfb),
                    "ttfc_ms": _ms(r.ttfc),
                    "duration_ms": _ms(r.duration),
                    "events": r.events,
                    "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens,
                    "tried": tried,
                    "error": r.error,
                    "kind": r.kind,
                    "rule": r.rule,
                    "client": r.client,
                    "session": r.session,
                    "cache_read_tokens": r.cache_read_tokens,
                    "cache_write_tokens": r.cache_write_tokens,
                    "cost_usd": r.cost_usd,
                }
            )
        return out

    def detail(self, request_id: str) -> dict[str, Any] | None:
        """Everything the dashboard shows about one kept request, or None once it is gone."""
        record = next((r for r in reversed(self._records) if r.request_id == request_id), None)
        if record is None:
            return None
        r = record
        return {
            "request_id": r.request_id,
            "started": r.started,
            "model": r.model,
            "stream": r.stream,
            "client": r.client,
            "session": r.session,
            "role": r.role,
            "status": r.status,
            "outcome": r.outcome,
            "verdict": verdict(r.outcome, r.status),
            "provider": r.provider,
            "finished_by": finished_by(r),
            "kind": r.kind,
            "rule": r.rule,
            "stop_reason": r.stop_reason,
            "error": r.error,
            "timing": {
                "ttfb_ms": _ms(r.ttfb),
                "ttfc_ms": _ms(r.ttfc),
                "duration_ms": _ms(r.duration),
                "events": r.events,
                "bytes": r.bytes,
                "gaps": r.gaps,
                "gap_p50_ms": _ms(r.gap_p50),
                "gap_max_ms": _ms(r.gap_max),
            },
            "usage": {
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cache_read_tokens": r.cache_read_tokens,
                "cache_write_tokens": r.cache_write_tokens,
                "cache_write_1h_tokens": r.cache_write_1h_tokens,
                "cost_usd": r.cost_usd,
            },
            "attempts": [_attempt(a) for a in r.attempts],
        }

    def ttft_series(self) -> list[tuple[float, float]]:
        """(wall time, ms) of time to first content, leaders only."""
        return [(r.started, round(r.ttfc * 1000, 1)) for r in self._records if r.ttfc is not None]

    def throughput_series(self) -> list[tuple[float, float]]:
        """Events per second delivered to clients, in 5-second buckets by finish time."""
        buckets: dict[float, int] = {}
        for r in self._records:
            end = r.started + r.duration
            bucket = end - end % BUCKET_S
            buckets[bucket] = buckets.get(bucket, 0) + r.events
        return [(t, round(n / BUCKET_S, 1)) for t, n in sorted(buckets.items())]
