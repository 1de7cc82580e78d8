"""The last few hundred requests, in memory, for the dashboard: rows and small time series.

Bounded (a ring), cheap to add to (one append per finished request), and computed only when the
dashboard asks. Holds no secrets: records carry ids, models, providers, timings and the short,
already-scrubbed error text.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ccbalancer.observe.record import RequestRecord

BUCKET_S = 5.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class RecentRequests:
    def __init__(self, size: int = 300) -> None:
        self._records: deque[RequestRecord] = deque(maxlen=size)
        self.requests = 0
        self.errors = 0

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)
        self.requests += 1
        if record.outcome not in ("ok", "cancelled", "client_error"):
            self.errors += 1

    def rows(self, limit: int = 50) -> list[dict[str, Any]]:
        out = []
        for r in list(self._records)[-limit:][::-1]:
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
                    "role": r.role,
                    "status": r.status,
                    "outcome": r.outcome,
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
