"""Which client headers may travel to an upstream, and which upstream headers come back.

Hop-by-hop headers (RFC 9110 section 7.6.1) never cross the proxy; credentials are replaced by the
provider's own; ``accept-encoding`` is fixed to identity so SSE is never compressed in transit
(a compressed event stream would defeat per-event delivery). Nothing that describes the
client's own message framing goes upstream either: the body sent is a new one, decoded and
re-encoded (a forwarded ``content-encoding: gzip`` on plain JSON made upstreams answer 5xx and
put every provider into cooldown), and ``expect: 100-continue`` would stall an upstream that
does not answer it until the first-event timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})  # fmt: skip

# The client's framing and representation of its body: never valid for the body we send.
FRAMING = frozenset({
    "content-length", "content-encoding", "content-type", "content-md5", "content-digest",
    "repr-digest", "digest", "content-range", "expect",
})  # fmt: skip

_NOT_FORWARDED = HOP_BY_HOP | FRAMING | {
    "host", "accept-encoding", "x-api-key", "authorization", "cookie",
    "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded",
}  # fmt: skip

# Upstream response headers the client gets back (request id and rate-limit state, DESIGN.md 4).
_RETURNED_PREFIXES = ("anthropic-ratelimit-", "x-ratelimit-")
_RETURNED = frozenset(
    {"request-id", "x-request-id", "anthropic-organization-id", "retry-after", "retry-after-ms"}
)


def forwardable(client_headers: Mapping[str, str]) -> dict[str, str]:
    """Client headers that go upstream (lower-case names), plus identity encoding."""
    connection_listed = {
        token.strip().lower()
        for token in client_headers.get("connection", "").split(",")
        if token.strip()
    }
    out = {
        name: value
        for name, value in client_headers.items()
        if name not in _NOT_FORWARDED and name not in connection_listed
    }
    out["accept-encoding"] = "identity"
    return out


def returned(upstream_headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Upstream response headers that are passed back to the client."""
    out: dict[str, str] = {}
    for name, value in upstream_headers:
        lower = name.lower()
        if lower in _RETURNED or lower.startswith(_RETURNED_PREFIXES):
            out[lower] = value
    return out
