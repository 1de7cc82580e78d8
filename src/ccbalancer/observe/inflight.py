"""The requests being answered right now, for the dashboard's list of active streams.

A request record is written only when its request ends; until then the dashboard learns who is
waiting (client, model, since when) from the record the handler already filled at admission,
and how the answer is going (its provider, time to first content, events so far) from the
answer it subscribed to (a ``sharing.Broadcast``, seen through the small ``Answer`` protocol:
observe/ imports no producer). One dict entry per request, added when it subscribes and
dropped when it is recorded: nothing per event.
"""

from __future__ import annotations

from typing import Any, Protocol

from ccbalancer.observe.record import RequestRecord


class Progress(Protocol):
    @property
    def provider(self) -> str: ...  # "" until an attempt commits

    @property
    def ttfc(self) -> float | None: ...  # seconds from the upstream send to first content


class Answer(Protocol):
    @property
    def end(self) -> int: ...  # events in the answer so far

    @property
    def ready(self) -> bool: ...  # committed (or ended): the client is being answered

    @property
    def outcome(self) -> Progress: ...


class InFlight:
    def __init__(self) -> None:
        self._requests: dict[str, tuple[RequestRecord, Answer]] = {}

    def __len__(self) -> int:
        return len(self._requests)

    def count(self, client: str) -> int:
        return sum(1 for record, _ in self._requests.values() if record.client == client)

    def add(self, record: RequestRecord, answer: Answer) -> None:
        self._requests[record.request_id] = (record, answer)

    def discard(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def rows(self, now: float, limit: int = 50, client: str | None = None) -> list[dict[str, Any]]:
        """The oldest first, of every client or of ``client`` only; ``now`` is wall-clock
        time (a record's ``started``)."""
        out = []
        kept = [(r, a) for r, a in self._requests.values() if client in (None, r.client)]
        for record, answer in kept[:limit]:
            progress = answer.outcome
            ttfc = progress.ttfc
            out.append(
                {
                    "request_id": record.request_id,
                    "client": record.client,
                    "model": record.model,
                    "stream": record.stream,
                    "role": record.role,
                    "provider": progress.provider,
                    "state": "answering" if answer.ready else "waiting",
                    "age_s": round(max(0.0, now - record.started), 1),
                    "events": answer.end,
                    "ttfc_ms": None if ttfc is None else round(ttfc * 1000, 1),
                }
            )
        return out
