"""ccbalancer's exception tree and the facts that decide retry, failover and health.

::

    BalancerError                    anything we raise on purpose
    ├── ConfigError                  file, dotted key, reason
    ├── ClientError                  the inbound request is wrong -> 4xx, never reaches upstream
    ├── NoCandidates                 the route has no provider that can take the request -> 503
    └── UpstreamError                one attempt at one provider went wrong
        ├── UpstreamConnectError     connect / TLS / DNS / reset before a response
        ├── UpstreamTimeout          connect, first-event or idle timeout (``phase``)
        ├── UpstreamStatusError      non-2xx answer (``status``, ``retry_after``, body message)
        ├── UpstreamStreamError      ``event: error`` frame or an error object inside a 200
        ├── UpstreamProtocolError    malformed / oversized / non-SSE bytes, truncated stream
        └── ClientGone               our own client left: never a provider failure

Only ``upstream/client.py`` turns aiohttp/OS exceptions into these, and only ``proxy/respond.py``
turns them into client responses. Nothing in between matches exception class names.
"""

from __future__ import annotations

from typing import ClassVar

# Anthropic error type for each status we produce (DESIGN.md section 4).
ERROR_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for_status(status: int) -> str:
    if status in ERROR_TYPE_BY_STATUS:
        return ERROR_TYPE_BY_STATUS[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


class BalancerError(Exception):
    """Base of every exception ccbalancer raises on purpose."""


class ConfigError(BalancerError):
    """A config file that cannot be used: names the file, the dotted key and the reason."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path = path
        self.key = key
        self.reason = reason
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(f"{where}{reason}")


class ClientError(BalancerError):
    """The inbound request is unacceptable; answered directly with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.error_type = error_type or error_type_for_status(status)
        self.headers = headers or {}  # e.g. retry-after on a 429
        super().__init__(message)


class NoCandidates(BalancerError):
    """No provider of the route can take a request right now."""

    def __init__(self, model: str, reasons: list[str], retry_after: float | None) -> None:
        self.model = model
        self.reasons = reasons
        self.retry_after = retry_after
        super().__init__(f"no provider available for model {model}")


class UpstreamError(BalancerError):
    """One attempt at one provider failed.

    ``failover``: another candidate may be tried (when nothing was sent to the client yet).
    ``counts_against_health``: this is the provider's fault and strikes its breaker.
    """

    failover: ClassVar[bool] = True
    counts_against_health: ClassVar[bool] = True
    reason: ClassVar[str] = "error"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.error_type = error_type
        self.headers = headers or {}
        super().__init__(f"{provider}: {message}")

    @property
    def short(self) -> str:
        """A few words for the 503 summary and the log: never a key or a body dump."""
        return self.message if len(self.message) <= 120 else self.message[:117] + "..."


class UpstreamConnectError(UpstreamError):
    reason = "connect"


class UpstreamTimeout(UpstreamError):
    reason = "timeout"

    def __init__(self, provider: str, phase: str, seconds: float) -> None:
        self.phase = phase
        super().__init__(provider, f"{phase} timeout after {seconds:g}s")


class UpstreamStatusError(UpstreamError):
    """A non-2xx answer. Whether it fails over is decided by config, so it is per instance."""

    reason = "status"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        status: int,
        retry_after: float | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        unhealthy: bool = True,
    ) -> None:
        super().__init__(
            provider,
            message,
            status=status,
            retry_after=retry_after,
            error_type=error_type,
            headers=headers,
        )
        self.body = body
        self.unhealthy = unhealthy

    @property
    def short(self) -> str:
        return f"HTTP {self.status}: {super().short}"


class UpstreamStreamError(UpstreamError):
    """An ``event: error`` frame (or an error object) inside a 200 stream.

    ``published``: the error frame was already appended to the client stream.
    """

    reason = "stream_error"
    published = False


class UpstreamProtocolError(UpstreamError):
    """Bytes we cannot use: not SSE, malformed JSON, oversized event, stream ended early."""

    reason = "protocol"


class ClientGone(UpstreamError):
    """Every client of an attempt left. Cancellation is never a provider failure."""

    failover = False
    counts_against_health = False
    reason = "client_gone"
