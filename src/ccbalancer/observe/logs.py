"""Structured logging: structlog over stdlib logging, rendered off the event loop, secrets masked.

The calling thread only builds an event dict and puts a log record on a queue; a
``QueueListener`` thread does everything that costs time — exception formatting, redaction,
JSON / console rendering and the file and terminal writes. The file gets one JSON object per
line; stderr gets readable ``key=value`` lines. ``log_request`` writes the one summary line per
request that DESIGN.md section 9 asks for; ``log_event_timing`` the DEBUG per-event trace.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import logging.handlers
import queue
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import structlog
from structlog.stdlib import BoundLogger, ProcessorFormatter
from structlog.typing import EventDict, Processor, WrappedLogger

from ccbalancer.observe.record import RequestRecord

MASK = "***"
MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words and numbers all over the log

# Keys whose value is a credential whatever it looks like: exact names or a ``_``/``-`` suffix,
# so ``x-api-key``, ``admin_api_key`` and ``access_token`` match but ``input_tokens`` does not.
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:authorization|api[_-]?key|auth[_-]value|token|password|passwd|secret|cookie)$",
    re.IGNORECASE,
)
# Proxy URLs (``socks5://user:pass@host``) carry credentials even when nobody registered them.
_URL_USERINFO = re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@")
# A credential header quoted in free text (aiohttp's error for a malformed request quotes the
# raw request bytes; a dict or tuple repr of headers) and any ``Bearer <token>``: masked even
# when the value is not one the balancer knows, such as a passthrough user's token.
_HEADER_VALUE = re.compile(
    r"(?i)((?:x-api-key|authorization|cookie)"
    r"(?:\s*[:=]\s*|['\"]\s*[:,]\s*['\"]?))(?:(?:bearer|basic)\s+)?[^\s'\"\\,;]+"
)
_BEARER = re.compile(r"(?i)(\bbearer\s+)[^\s'\"\\,;]{6,}")
# Passthrough tokens seen recently: masked like configured keys. Bounded, so that clients
# presenting ever new tokens cannot grow the set without end. They are looked up per word (a
# run of token characters) in a set: one alternation of a thousand tokens took ~15 ms to
# compile, for every new token, on the event loop.
MAX_FORWARDED = 1024
_WORD = re.compile(r"[A-Za-z0-9._~+/-]{6,}={0,2}")  # 6: MIN_SECRET_LENGTH


class Redactor:
    """Masks registered secret values and credential-named fields; a structlog processor."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._forwarded: dict[str, None] = {}  # insertion-ordered: the oldest goes first
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str) -> None:
        """Register exact secret values (provider, inbound and admin keys)."""
        fresh = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        if fresh <= self._secrets:
            return
        self._secrets = self._secrets | fresh
        self._compile()

    def forward(self, token: str) -> None:
        """Register a client's token that the balancer passes on to a provider."""
        if len(token) < MIN_SECRET_LENGTH or token in self._forwarded:
            return
        forwarded = dict(self._forwarded)  # copied: the listener thread may be reading it
        forwarded[token] = None
        if len(forwarded) > MAX_FORWARDED:
            del forwarded[next(iter(forwarded))]
        self._forwarded = forwarded

    def _compile(self) -> None:
        # Longest first, so a key that contains another key is masked whole. The new pattern is
        # swapped in by one assignment: the listener thread sees either the old or the new one.
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None:
            text = pattern.sub(MASK, text)
        forwarded = self._forwarded
        if forwarded:
            text = _WORD.sub(lambda m: MASK if m.group() in forwarded else m.group(), text)
        if "://" in text:
            text = _URL_USERINFO.sub(MASK + "@", text)
        text = _HEADER_VALUE.sub(r"\1" + MASK, text)
        return _BEARER.sub(r"\1" + MASK, text)

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            event_dict[key] = self._clean(key, value)
        return event_dict

    def _clean(self, key: object, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(key, str) and _SECRET_KEY.search(key) and value != "":
            return MASK
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self._clean(k, v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(None, v) for v in value]
        # Anything else would be str()-ed by the renderer after us: do it here so it is scrubbed.
        return self.scrub(str(value))


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues records unformatted: the stock ``prepare`` renders on the caller's thread (and
    turns structlog's event dict into its ``str``) to allow pickling we do not need."""

    def __init__(self, q: queue.SimpleQueue[Any], outputs: list[logging.Handler]) -> None:
        super().__init__(q)
        self.outputs = outputs
        self.listener = logging.handlers.QueueListener(q, *outputs, respect_handler_level=True)
        self.listener.start()
        self._stopped = False

    def shutdown(self) -> None:
        """Detach from the root logger, drain the queue, close the outputs. Idempotent."""
        logging.getLogger().removeHandler(self)
        if self._stopped:
            return
        self._stopped = True
        self.listener.stop()  # enqueues a sentinel and joins: everything queued gets written
        for output in self.outputs:
            output.close()
        self.close()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # structlog's event dict travels as is (callers pass fresh values, not shared state);
        # a foreign (stdlib) record's arguments are frozen now, they may change later. The copy
        # keeps other handlers of the same record (pytest's capture, say) seeing the original.
        if isinstance(record.msg, dict) or not record.args:
            return record
        record = copy.copy(record)
        record.msg = record.getMessage()
        record.args = None
        return record


class LogHandle:
    """The running log pipeline; ``close`` stops the listener thread after it drains."""

    def __init__(self, redactor: Redactor, handler: _QueueHandler) -> None:
        self.redactor = redactor
        self._handler = handler

    def close(self) -> None:
        self._handler.shutdown()


def _resolve_exc_info(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # ``log.exception()`` passes exc_info=True, meaning "the exception being handled here".
    # The listener thread is not handling it, so capture the triple on the caller's thread.
    if event_dict.get("exc_info") is True:
        event_dict["exc_info"] = sys.exc_info()
    return event_dict


def _add_ts(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # The record's creation time, not the render time: the listener may run a little later.
    created = event_dict["_record"].created
    stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="microseconds")
    event_dict["ts"] = stamp.replace("+00:00", "Z")
    return event_dict


def _json(event_dict: EventDict, **_: Any) -> str:
    return orjson.dumps(event_dict, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _order(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    head = {k: event_dict.pop(k) for k in ("ts", "level", "event", "logger") if k in event_dict}
    head.update(event_dict)
    return head


# Runs on the caller's thread: only cheap steps.
_CALLER_CHAIN: tuple[Processor, ...] = (
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.PositionalArgumentsFormatter(),
    structlog.processors.StackInfoRenderer(),
    _resolve_exc_info,
    ProcessorFormatter.wrap_for_formatter,
)


def _formatter(redactor: Redactor, renderer: Processor) -> ProcessorFormatter:
    return ProcessorFormatter(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _add_ts,
            ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redactor,
            _order,
            renderer,
        ],
    )


def configure_logging(
    level: str = "INFO",
    file_path: str | None = None,
    console: bool = True,
    redactor: Redactor | None = None,
) -> LogHandle:
    """(Re)build the pipeline: root logger -> queue -> listener thread -> file and/or stderr."""
    redactor = redactor if redactor is not None else Redactor()
    # Our lines carry none of these; collecting them costs every record a stack walk and a
    # few system calls (the logging HOWTO's "Optimization" section names these switches).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    outputs: list[logging.Handler] = []
    if file_path:
        Path(file_path).parent.mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler reopens the file after logrotate moves it.
        file_handler = logging.handlers.WatchedFileHandler(file_path, encoding="utf-8")
        file_handler.setFormatter(
            _formatter(redactor, structlog.processors.JSONRenderer(serializer=_json))
        )
        outputs.append(file_handler)
    if console:
        console_handler = logging.StreamHandler(sys.stderr)
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, sort_keys=False, timestamp_key="ts", pad_event_to=24
        )
        console_handler.setFormatter(_formatter(redactor, renderer))
        outputs.append(console_handler)

    root = logging.getLogger()
    old = [h for h in root.handlers if isinstance(h, _QueueHandler)]
    handler = _QueueHandler(queue.SimpleQueue(), outputs)
    # The new pipeline is attached before the old one is drained, so no record falls between.
    root.addHandler(handler)
    root.setLevel(level.upper())
    for previous in old:
        previous.shutdown()

    structlog.configure(
        processors=list(_CALLER_CHAIN),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=BoundLogger,
        cache_logger_on_first_use=False,
    )
    return LogHandle(redactor, handler)


def get_logger(name: str = "ccbalancer") -> BoundLogger:
    """A concrete logger over the stdlib logger ``name``: ``bind()`` resolves structlog's lazy
    proxy once, instead of on every call (which would cost a bind per event on the hot path)."""
    proxy = structlog.wrap_logger(
        logging.getLogger(name), processors=list(_CALLER_CHAIN), wrapper_class=BoundLogger
    )
    logger: BoundLogger = proxy.bind()
    return logger


def debug_enabled(logger: BoundLogger) -> bool:
    """Cheap guard for per-event tracing (stdlib caches the answer per level)."""
    return logger.isEnabledFor(logging.DEBUG)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


_SUMMARY = (
    "request_id", "client", "session", "model", "stream", "role", "status", "outcome", "provider",
)  # fmt: skip
_TRIED = ("provider", "outcome", "reason", "detail", "status")
_COUNTS = (
    "events", "bytes", "input_tokens", "cache_read_tokens", "cache_write_tokens",
    "cache_write_1h_tokens", "output_tokens", "cost_usd", "stop_reason",
)  # fmt: skip


def log_request(logger: BoundLogger, record: RequestRecord) -> None:
    """The one summary line per request; warning level for anything but a clean success."""
    clean = record.outcome == "ok"
    if clean and not logger.isEnabledFor(logging.INFO):
        return  # (log_level WARNING) not even the fields are built: this runs per request
    fields: dict[str, Any] = {k: getattr(record, k) for k in _SUMMARY}
    fields["tried"] = [{k: getattr(a, k) for k in _TRIED} for a in record.attempts]
    fields["ttfb_ms"] = _ms(record.ttfb)
    fields["ttfc_ms"] = _ms(record.ttfc)
    fields["duration_ms"] = _ms(record.duration)
    fields.update((k, getattr(record, k)) for k in _COUNTS)
    if record.error:
        fields["error"] = record.error
    if record.kind:
        fields["kind"] = record.kind
    if record.rule:
        fields["rule"] = record.rule
    log = logger.info if clean else logger.warning
    log("request", **fields)


def log_event_timing(
    logger: BoundLogger,
    request_id: str,
    subscriber: int,
    seq: int,
    received: float,
    written: float,
) -> None:
    """DEBUG trace of one event for one subscriber; times in seconds on the caller's clock."""
    logger.debug(
        "event_timing",
        request_id=request_id,
        subscriber=subscriber,
        seq=seq,
        recv_ms=round(received * 1000, 3),
        write_ms=round(written * 1000, 3),
        forward_ms=round((written - received) * 1000, 3),
    )


def log_health(
    logger: BoundLogger, provider: str, state: str, previous: str, **fields: Any
) -> None:
    """A breaker transition (healthy / cooling_down / half_open); opening is a warning."""
    log = logger.warning if state == "cooling_down" else logger.info
    log("provider_state", provider=provider, state=state, previous=previous, **fields)


def log_reload(logger: BoundLogger, source: str, ok: bool, **fields: Any) -> None:
    """A config reload attempt: applied, or refused with the reason in ``error``."""
    log = logger.info if ok else logger.error
    log("config_reload", source=source, ok=ok, **fields)
