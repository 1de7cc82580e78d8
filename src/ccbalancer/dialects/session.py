"""Which conversation a request belongs to, for provider-side prompt caches (issue 15, item 7)
and for keeping a session where its cache is warm (issue 17: ``session_key``).

Claude Code names its session twice: the ``x-claude-code-session-id`` header, and the
``session_id`` inside ``metadata.user_id`` — a JSON string in 2.1.3xx
(``{"device_id": …, "account_uuid": …, "session_id": …}``),
``user_<hash>_account_<id>_session_<uuid>`` in older versions (CLAUDE_CODE.md section 4).
Other clients send neither; they get no key. Sans-IO.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

SESSION_HEADER = "x-claude-code-session-id"
_LEGACY = re.compile(r"_session_([0-9A-Za-z-]+)$")
_MAX = 200  # a session id is a UUID; anything longer is not one


def cache_session(client_headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """The client's session id ("" when it names none)."""
    header = client_headers.get(SESSION_HEADER, "").strip()
    if header:
        return header[:_MAX]
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if not isinstance(user_id, str) or not user_id:
        return ""
    if user_id.startswith("{"):
        try:
            value = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return ""
        session = value.get("session_id") if isinstance(value, dict) else None
        return session[:_MAX] if isinstance(session, str) else ""
    match = _LEGACY.search(user_id)
    return match.group(1)[:_MAX] if match else ""


def session_key(client_headers: Mapping[str, str], body: Mapping[str, Any], credential: str) -> str:
    """The key a session's stickiness and cache statistics are kept under: the client's own
    session id (``cache_session``), else one per client key (``key:`` and 16 hex digits of
    its SHA-256, so the key itself is never kept)."""
    return cache_session(client_headers, body) or (
        "key:" + hashlib.sha256(credential.encode()).hexdigest()[:16]
    )
