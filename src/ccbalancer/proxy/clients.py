"""The door of ``POST /v1/messages`` for teams (issue 18): whose request it is, whether that
client may use the model, and whether it is within its limits — before anything is shared or
sent upstream.

The auth middleware already found the client by its key (``auth.CLIENT``); without inbound
auth every request is ``anonymous``. A refusal is a ``ClientError`` (403 ``permission_error``,
429 ``rate_limit_error`` with ``retry-after``) that the handler answers like any other. An
admitted request holds its concurrency slot until ``Runtime.finished`` sees its record, which
every request reaches however it ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ccbalancer.accounting import NOBODY, Refused
from ccbalancer.accounting.clients import digest
from ccbalancer.config.schema import Config
from ccbalancer.dialects.session import cache_session
from ccbalancer.observe.record import RequestRecord
from ccbalancer.proxy.auth import CLIENT, presented_key
from ccbalancer.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Ticket:
    client: str  # the name usage is charged to
    own_keys: tuple[str, ...]  # the presented key when it is a client's: never sent upstream


async def gate(
    request: web.Request,
    runtime: Runtime,
    record: RequestRecord,
    model: str,
    body: dict[str, Any],
    forced: str | None,
) -> Ticket:
    """Fills the record's client and session; raises ``ClientError`` for a refusal."""
    client = request.get(CLIENT, NOBODY)
    record.client = client.name
    named = client is not NOBODY
    presented = presented_key(request.headers)
    record.session = cache_session(request.headers, body) or (
        client.name if named else _digest(presented)
    )
    try:
        await runtime.accounts.admit(client, model, forced, record.request_id)
    except Refused as refused:
        runtime.metrics.client_refused(client.name, refused.limit)
        raise
    return Ticket(client.name, own_keys(request))


def own_keys(request: web.Request) -> tuple[str, ...]:
    """The presented key when it is a named client's (``settings.auth.api_key``'s keys are
    known to the caller): a ``passthrough`` provider must never receive it."""
    client = request.get(CLIENT, NOBODY)
    return (presented_key(request.headers),) if client is not NOBODY else ()


def _digest(key: str) -> str:
    """Without a name, a session is told apart by the key's digest, never the key."""
    if not key:
        return ""
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def record_sessions(config: Config) -> Callable[[str], str]:
    """Maps a sticky session key (``dialects.session.session_key``, what stickiness and cache
    warmth are kept under) to the record's ``session`` that ``gate`` fills (what costs are
    kept under): Claude Code's session id is both; a session told apart only by its key is
    its named client's name, or the key's digest as ``_digest`` spells it."""
    names = {"key:" + (c.key_sha256 or digest(c.key).hex())[:16]: c.name for c in config.clients}
    names["key:" + hashlib.sha256(b"").hexdigest()[:16]] = ""  # no key: no record session

    def of(sticky: str) -> str:
        if not sticky.startswith("key:"):
            return sticky
        return names.get(sticky, "key-" + sticky[4:16])

    return of
