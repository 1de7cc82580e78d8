"""Canned answers for the sharing tests: events and broadcasts built without any upstream."""

from __future__ import annotations

from typing import Any

from ccbalancer.sharing.broadcast import Broadcast, Head
from ccbalancer.sse.event import Event, encode_event

HEAD = Head("a", {"request-id": "req_1"})


def event(kind: str, **fields: Any) -> Event:
    return encode_event(kind, {"type": kind, **fields})


def opening() -> list[Event]:
    """What an attempt holds until it commits: message_start and the first block's start."""
    return [event("message_start", message={"id": "msg_1"}), event("content_block_start", index=0)]


def delta(text: str) -> Event:
    return event("content_block_delta", index=0, delta={"type": "text_delta", "text": text})


def completed(
    key: str = "k", max_bytes: int = 1 << 20, texts: tuple[str, ...] = ("Hi",)
) -> Broadcast:
    """A broadcast that committed, streamed ``texts`` and finished cleanly."""
    b = Broadcast(key, max_bytes, created=0.0)
    b.commit(HEAD, opening())
    for text in texts:
        b.publish([delta(text)])
    b.finish([event("message_stop")])
    return b
