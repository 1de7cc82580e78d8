"""The coalescing key: which requests may share one upstream answer (DESIGN.md section 7).

Everything that can change the answer is in the key: the client's identity, the whole body
except ``stream`` (and ``max_tokens`` unless configured), the query string, and the headers
that select API behaviour (``anthropic-version``, ``anthropic-beta``). Different users never share.
Sans-IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

_BEHAVIOUR_HEADERS = ("anthropic-version", "anthropic-beta")


def coalescing_key(
    identity: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    include_max_tokens: bool = False,
    query: str = "",
) -> str:
    canonical = {k: v for k, v in body.items() if k != "stream"}
    if not include_max_tokens:
        canonical.pop("max_tokens", None)
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(identity.encode()).digest())
    digest.update(b"?" + query.encode() + b"\n")  # forwarded upstream, so it may matter
    for name in _BEHAVIOUR_HEADERS:
        digest.update(name.encode() + b"=" + headers.get(name, "").encode() + b"\n")
    digest.update(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()
