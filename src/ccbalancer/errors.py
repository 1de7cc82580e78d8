"""ccbalancer's exception tree and the facts that decide retry, failover and health.

::

    BalancerError                    anything we raise on purpose
    ├── ConfigError                  file; per problem: dotted key, reason, line
    ├── ClientError                  the inbound request is wrong -> 4xx, never reaches upstream
    └── UpstreamError                one attempt at one provider went wrong
        ├── UpstreamConnectError     connect / TLS / DNS / reset before a response
        ├── UpstreamTimeout          connect, first-event or idle timeout (``phase``)
        ├── UpstreamStatusError      non-2xx answer (``status``, ``retry_after``, body message)
        ├── UpstreamStreamError      ``event: error`` frame or an error object inside a 200
        └── UpstreamProtocolError    malformed / oversized / non-SSE bytes, truncated stream

Only ``upstream/client.py`` turns aiohttp/OS exceptions into these (one table), only
``relay/failures.py`` turns them into what a client is told, and only ``proxy/respond.py``
turns that into an HTTP response. Nothing in between matches exception class names. A
client leaving is cancellation (``CancelledError``), never one of these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong in a config file: the dotted key, the reason, the YAML line if known."""

    key: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.key}: {self.reason}" if self.key else f"{where}{self.reason}"


class ConfigError(BalancerError):
    """A config file that cannot be used: names the file and, for every problem found, the
    dotted key, the reason and the line. ``key``/``reason``/``line`` are the first problem's."""

    def __init__(
        self,
        path: str,
        key: str,
        reason: str,
        *,
        line: int | None = None,
        problems: Sequence[ConfigProblem] = (),
    ) -> None:
        self.path = path
        self.problems = tuple(problems) or (ConfigProblem(key, reason, line),)
        first = self.problems[0]
        self.key, self.reason, self.line = first.key, first.reason, first.line
        if len(self.problems) == 1:
            super().__init__(f"{path}: {first}")
        else:
            listed = "".join(f"\n  {problem}" for problem in self.problems)
            super().__init__(f"{path}: {len(self.problems)} problems:{listed}")


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

    def __init__(self, provider: str, phase: str, seconds: float = 0) -> None:
        self.phase = phase
        after = f" after {seconds:g}s" if seconds > 0 else ""
        super().__init__(provider, f"{phase} timeout{after}")


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
    """An ``event: error`` frame (or an error object) inside a 200 stream."""

    reason = "stream_error"


class UpstreamProtocolError(UpstreamError):
    """Bytes we cannot use: not SSE, malformed JSON, oversized event, stream ended early."""

    reason = "protocol"
