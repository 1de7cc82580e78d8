"""Upstream errors -> what the client is told (DESIGN.md section 5), and the one redaction point.

Everything a client receives that came from an upstream passes through here: the status,
type and message of a failure, an upstream client-error body returned as is, the headers
returned with a committed answer and the ``event: error`` frame that ends a committed stream.
``Redaction`` scrubs each of them, so an upstream that echoes a key (its own, another
provider's, or the client's token for a passthrough provider) never gets it to a client.

Statuses: one provider tried -> its own status and message (a 429 keeps its retry-after,
capped at 60 s since Claude Code gives up at once on 90 s); several tried -> 503 "All
configured providers for model <m> failed: ..."; a refused balancer credential (401/403) ->
502 naming the provider, so Claude Code does not tell the user to fix *their* key. Messages
are built from our own short texts; never a stack trace.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

from ccbalancer.errors import UpstreamError, UpstreamStatusError, error_type_for_status
from ccbalancer.sharing.broadcast import Failure
from ccbalancer.sse.event import Event, encode_event

MAX_CLIENT_RETRY_AFTER = 60.0
_MIN_SECRET = 6  # shorter "credentials" would redact ordinary words


class Redaction:
    """The configured secrets (``scrub``) plus the credential this request forwards."""

    __slots__ = ("credential", "scrub")

    def __init__(self, scrub: Callable[[str], str], credential: str = "") -> None:
        self.scrub = scrub
        self.credential = credential if len(credential) >= _MIN_SECRET else ""

    def text(self, text: str) -> str:
        text = self.scrub(text)
        if self.credential and self.credential in text:
            text = text.replace(self.credential, "***")
        return text

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        return {name: self.text(value) for name, value in headers.items()}

    def body(self, body: bytes) -> bytes:
        text = body.decode("utf-8", "replace")
        clean = self.text(text)
        return body if clean == text else clean.encode()

    def error(self, error: UpstreamError) -> UpstreamError:
        """Scrub an error in place as soon as it is caught: everything built from it is clean."""
        error.message = self.text(error.message)
        error.headers = self.headers(error.headers)
        if isinstance(error, UpstreamStatusError) and error.body:
            error.body = self.body(error.body)
        return error


def parse_retry_after(value: str | None, value_ms: str | None = None) -> float | None:
    """Seconds from ``retry-after-ms``, ``retry-after`` (seconds or HTTP date), else None."""
    if value_ms:
        try:
            return max(0.0, float(value_ms) / 1000)
        except ValueError:
            pass
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def retry_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"retry-after": str(max(1, min(int(seconds + 0.999), int(MAX_CLIENT_RETRY_AFTER))))}


def _passed_on(error: UpstreamError, headers: dict[str, str], fallback_status: int) -> Failure:
    """The upstream's own status, error type and message, before anything was sent."""
    status = error.status or fallback_status
    return Failure(
        status,
        error.error_type or error_type_for_status(status),
        error.message,
        committed=False,
        provider=error.provider,
        headers=headers,
    )


def client_error(error: UpstreamError) -> Failure:
    """An upstream client error (400/413/422...) goes back as it is: status, type, message."""
    return _passed_on(error, {**error.headers, "x-provider-used": error.provider}, 400)


def all_failed(
    model: str, errors: list[UpstreamError], skipped: list[str], retry_after: float
) -> Failure:
    if len(errors) == 1 and not skipped:
        return _single(errors[0])
    reasons = [f"{e.provider}: {e.short}" for e in errors] + skipped
    message = f"All configured providers for model {model} failed"
    if reasons:
        message += ": " + "; ".join(reasons)
    return Failure(
        503, "overloaded_error", message, committed=False, headers=retry_header(retry_after)
    )


def _single(error: UpstreamError) -> Failure:
    headers = {"x-provider-used": error.provider}
    if isinstance(error, UpstreamStatusError):
        if error.status in (401, 403):
            message = (
                f"provider {error.provider} refused the balancer's credential for it "
                f"(HTTP {error.status}); check auth_value in the balancer's config"
            )
            return Failure(
                502, "api_error", message, committed=False, provider=error.provider, headers=headers
            )
        passed = dict(error.headers)
        passed.pop("retry-after", None)
        passed.pop("retry-after-ms", None)
        passed.update(headers)
        passed.update(retry_header(error.retry_after))
        return _passed_on(error, passed, 502)
    message = f"provider {error.provider} failed: {error.short}"
    return Failure(
        503, "overloaded_error", message, committed=False, provider=error.provider, headers=headers
    )


def no_route(model: str) -> Failure:
    return Failure(
        404, "not_found_error", f"no route for model {model!r} in the balancer's config", False
    )


def unknown_provider(name: str) -> Failure:
    """A forced provider that is not configured: the client's mistake, not a retryable one."""
    return Failure(400, "invalid_request_error", f"unknown provider {name!r}", False)


def content_refused(model: str, refusals: list[tuple[str, list[str]]]) -> Failure:
    """No candidate can take what the request holds (issue 15, item 4): a 400 naming the
    blocks and the providers tried. Not a provider failure, and no retry would help."""
    labels = sorted({label for _, cannot in refusals for label in cannot})
    tried = "; ".join(f"{name} cannot take {', '.join(cannot)}" for name, cannot in refusals)
    message = (
        f"no provider for model {model} can take this request's {', '.join(labels)} "
        f"(tried: {tried}); route the model to a provider that accepts them "
        "(see capabilities in the balancer's provider config)"
    )
    return Failure(400, "invalid_request_error", message, committed=False)


def mid_stream(error: UpstreamError) -> tuple[Event, Failure]:
    """The ``event: error`` frame that ends a committed stream, and the failure recorded.

    ``overloaded_error`` for overload-like failures, else ``api_error``: Claude Code answers
    both with an immediate non-streaming retry. An upstream's own error event keeps its
    (scrubbed) message; our own failures say which provider failed and how."""
    overloaded = error.error_type == "overloaded_error"
    kind = "overloaded_error" if overloaded else "api_error"
    message = f"upstream {error.provider} failed mid-stream: {error.short}"
    # an upstream's own error event: "<type>: <its message>"
    told = error.message.split(": ", 1)[-1] if error.reason == "stream_error" else message
    frame = encode_event("error", {"type": "error", "error": {"type": kind, "message": told}})
    failure = Failure(
        529 if overloaded else 500, kind, message, committed=True, provider=error.provider
    )
    return frame, failure
