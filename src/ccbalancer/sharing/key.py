"""The coalescing key: which requests may share one upstream answer (DESIGN.md section 7).

Everything that can change the answer is in the key: the client's identity (its key, and the
credential a passthrough provider would receive, so two users behind one balancer key with
different upstream tokens never share), the whole body except ``stream`` (and ``max_tokens``
unless configured), the query string, and the headers that select API behaviour
(``anthropic-version``, ``anthropic-beta``). Credentials enter only as hashes.

The body is hashed as ``orjson.dumps(body, OPT_SORT_KEYS)`` would serialize it, but in pieces
(a few hundred KB each, descending into large messages), so computing the key never holds a
second copy of a large body. A body orjson cannot serialize (nested deeper than its limit, or
a lone surrogate) is refused here, with the same depth limit the upstream request meets. Sans-IO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ccbalancer.errors import ClientError

_BEHAVIOUR_HEADERS = ("anthropic-version", "anthropic-beta")
_SORT = orjson.OPT_SORT_KEYS
_PIECE = 256 * 1024  # target bytes serialized at once
_DESCEND = 5  # containers this shallow are walked (body, messages, message, content, block)
_WIDE = 64  # a dict with more keys than this is serialized whole (a walk would cost more)
_TEXT = 64 * 1024  # characters of a long string escaped at once

Sink = Callable[[bytes | memoryview], object]


def coalescing_key(
    identity: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    include_max_tokens: bool = False,
    query: str = "",
    forwarded: str = "",
) -> str:
    """``forwarded``: the credential a passthrough provider would get ("" when none would)."""
    canonical = {k: v for k, v in body.items() if k != "stream"}
    if not include_max_tokens:
        canonical.pop("max_tokens", None)
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(identity.encode()).digest())
    if forwarded:
        digest.update(b"+" + hashlib.sha256(forwarded.encode()).digest())
    digest.update(b"?" + query.encode() + b"\n")  # forwarded upstream, so it may matter
    for name in _BEHAVIOUR_HEADERS:
        digest.update(name.encode() + b"=" + headers.get(name, "").encode() + b"\n")
    try:
        _feed(digest.update, canonical, 1)
    except orjson.JSONEncodeError as exc:
        raise ClientError(400, f"request body cannot be forwarded: {exc}") from None
    return digest.hexdigest()


def require_serializable(body: Mapping[str, Any]) -> None:
    """The check ``coalescing_key`` makes, for a request that needs no key (``count_tokens``)."""
    try:
        _feed(_discard, body, 1)
    except orjson.JSONEncodeError as exc:
        raise ClientError(400, f"request body cannot be forwarded: {exc}") from None


def _discard(data: bytes | memoryview) -> None:
    pass


def _feed(out: Sink, value: Any, depth: int) -> int:
    """Write ``value`` as orjson serializes it at nesting ``depth``; return the byte count."""
    if depth < _DESCEND and isinstance(value, dict) and 0 < len(value) <= _WIDE:
        out(b"{")
        size = 2
        for i, name in enumerate(sorted(value)):
            head = (b",%b:" if i else b"%b:") % orjson.dumps(name)
            out(head)
            size += len(head) + _feed(out, value[name], depth + 1)
        out(b"}")
        return size
    if depth < _DESCEND and isinstance(value, list) and value:
        return _feed_list(out, value, depth)
    if isinstance(value, str) and len(value) > _TEXT:
        return _feed_text(out, value)
    return _dump(out, value, depth)


def _feed_text(out: Sink, text: str) -> int:
    """A long string, escaped piece by piece: escaping is per character, so the pieces join to
    what one ``dumps`` would write (which, for non-ASCII text, touches twice its output)."""
    out(b'"')
    size = 2
    for start in range(0, len(text), _TEXT):
        data = orjson.dumps(text[start : start + _TEXT])
        out(memoryview(data)[1:-1])
        size += len(data) - 2
    out(b'"')
    return size


def _feed_list(out: Sink, items: list[Any], depth: int) -> int:
    out(b"[")
    size, start, step = 2, 0, 1
    while start < len(items):
        if start:
            out(b",")
            size += 1
        if step == 1:  # one element at a time: a large message is itself walked
            written = _feed(out, items[start], depth + 1)
        else:
            written = _dump(out, items[start : start + step], depth, inner=True)
        size += written
        start += step
        step = max(1, min(65536, _PIECE * step // max(1, written)))
    out(b"]")
    return size


def _dump(out: Sink, value: Any, depth: int, inner: bool = False) -> int:
    """orjson's bytes for ``value`` as if nested ``depth`` levels deep (wrapped in lists, so
    its recursion limit applies as in the whole body); ``inner``: a slice of a list, written
    without its brackets."""
    wrapped = value
    for _ in range(depth - 1):
        wrapped = [wrapped]
    data = orjson.dumps(wrapped, option=_SORT)
    cut = depth - 1 + inner
    view = memoryview(data)[cut : len(data) - cut]
    out(view)
    return len(view)
