"""Candidates until one commits (DESIGN.md section 5, steps 4-7).

The producer of a broadcast: it asks the planner for candidates, opens each upstream in turn
and decodes its stream. Until the first ``content_block_start`` nothing is published
(``message_start`` and ``ping`` are held), so any failure moves on to the next candidate
invisibly. After the commit every event is appended to the broadcast as it is decoded; a
failure then ends the stream with a proper ``event: error``. Health is released exactly once
per acquired attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ccbalancer.balance import Candidate, Planner
from ccbalancer.config.schema import Config, ProviderConfig
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.capabilities import refused, request_needs
from ccbalancer.dialects.estimate import estimate_input_tokens
from ccbalancer.dialects.headers import returned
from ccbalancer.dialects.session import cache_session
from ccbalancer.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from ccbalancer.observe.record import Attempt
from ccbalancer.proxy import respond
from ccbalancer.proxy.job import Job
from ccbalancer.proxy.publish import Publisher
from ccbalancer.sharing.broadcast import Broadcast, Failure, Head
from ccbalancer.upstream.client import UpstreamClient, UpstreamResponse
from ccbalancer.upstream.health import HealthRegistry


class Attempts:
    def __init__(
        self,
        client: UpstreamClient,
        planner: Planner,
        health: HealthRegistry,
        dialects: dict[str, Dialect],
        on_failover: Callable[[str, str], None] = lambda provider, reason: None,
        scrub: Callable[[str], str] = lambda text: text,
    ) -> None:
        self.client = client
        self.planner = planner
        self.health = health
        self.dialects = dialects
        self.on_failover = on_failover
        self.scrub = scrub

    async def produce(self, job: Job, broadcast: Broadcast) -> None:
        config = job.config
        plan = self.planner.plan(config, job.model, job.session, job.forced)
        if plan.route_key is None and not plan.candidates:
            if job.forced and plan.skipped:
                broadcast.fail(
                    Failure(400, "invalid_request_error", f"unknown provider {job.forced!r}", False)
                )
            else:
                broadcast.fail(
                    Failure(
                        404,
                        "not_found_error",
                        f"no route for model {job.model!r} in the balancer's config",
                        False,
                    )
                )
            return
        errors: list[UpstreamError] = []
        skipped = [f"{name}: {why}" for name, why in plan.skipped]
        # issue 15 items 4-5: candidates that cannot take the request's content are skipped
        needs = request_needs(job.body)
        refusals: list[tuple[str, list[str]]] = []
        for candidate in plan.candidates:
            name = candidate.provider
            provider = config.providers_by_name[name]
            cannot = refused(needs, provider.type, provider.accepts) if needs else []
            if cannot:
                refusals.append((name, cannot))
                skipped.append(f"{name}: cannot take {', '.join(cannot)}")
                continue
            health = self.health.get(name)
            if not health.acquire(self.health.clock()):
                skipped.append(f"{name}: busy (half-open probe or full)")
                continue
            try:
                await self._attempt(job, candidate, config.providers_by_name[name], broadcast)
            except UpstreamError as error:
                self._scrub(error, job.credential)
                if _counts(error, config):
                    health.release_failure(self.health.clock(), error.reason, error.retry_after)
                else:
                    health.release_neutral(self.health.clock())
                if broadcast.head is not None:
                    self.planner.failed(plan.route_key, job.session, name)
                    self._fail_committed(job, broadcast, error)
                    return
                if not _fails_over(error, config.providers_by_name[name]):
                    # a client error: the provider is fine and the session keeps it
                    job.outcome.attempts.append(_attempt_record(name, "client_error", error))
                    broadcast.fail(respond.client_error_failure(error))
                    return
                self.planner.failed(plan.route_key, job.session, name)
                job.outcome.attempts.append(_attempt_record(name, "failover", error))
                self.on_failover(name, error.reason)
                errors.append(error)
            except BaseException:  # cancelled (every client left): never the provider's fault
                health.release_neutral(self.health.clock())
                raise
            else:
                health.release_success(self.health.clock(), job.outcome.ttfc)
                self.planner.succeeded(config, plan.route_key, job.session, name)
                return
        if refusals and len(refusals) == len(plan.candidates) and not errors:
            # nobody could take it; unless a provider cooling down could, that will not change
            resting = [config.providers_by_name.get(n) for n, _ in plan.skipped]
            if not any(
                p is not None and p.enabled and not refused(needs, p.type, p.accepts)
                for p in resting
            ):
                broadcast.fail(respond.content_refused(job.model, refusals))
                return
        met = [e.provider for e in errors] + [n for n, _ in plan.skipped]
        retry_after = self._retry_after(met, plan.retry_after)
        broadcast.fail(respond.all_failed(job.model, errors, skipped, retry_after))

    def _scrub(self, error: UpstreamError, credential: str) -> None:
        """An upstream may echo a key in its error text: it never travels further."""
        error.message = self.scrub(error.message)
        if len(credential) >= 6:
            error.message = error.message.replace(credential, "***")

    def _retry_after(self, providers: list[str], planned: float | None) -> float:
        """Shortest remaining cooldown among the providers this request met, 1-60 s."""
        now = self.health.clock()
        waits = [self.health.get(name).cooldown_remaining(now) for name in providers]
        waits = [w for w in waits if w > 0] + ([planned] if planned else [])
        return min(60.0, max(1.0, min(waits))) if waits else 1.0

    async def _attempt(
        self, job: Job, candidate: Candidate, provider: ProviderConfig, broadcast: Broadcast
    ) -> None:
        settings = job.config.settings
        timeouts = settings.timeouts
        dialect = self.dialects[provider.type]
        upstream_model = job.model if candidate.model == "passthrough" else candidate.model
        url = dialect.url(provider.base_url, job.query)
        name = provider.name
        loop = asyncio.get_running_loop()
        sent = time.perf_counter()
        publisher: Publisher | None = None
        try:
            async with asyncio.timeout(timeouts.first_event_timeout) as deadline:
                # headers and encoded body are referenced by the open call only (freed once
                # sent): this frame lives as long as the stream
                resp = await self.client.open(
                    provider,
                    url,
                    _headers(job, provider, dialect),
                    dialect.body(
                        job.body,
                        upstream_model,
                        provider.body_options,
                        session=cache_session(job.headers, job.body),
                    ),
                    timeouts.streaming,
                )
                try:
                    ttfb = time.perf_counter() - sent
                    if resp.status != 200:
                        raise await _status_error(resp, dialect, name, job.config)
                    # issue 15 item 9: an early input estimate for providers that report
                    # usage only at the end (computed only for them: it costs CPU)
                    estimate = (
                        estimate_input_tokens(job.body) if dialect.wants_input_estimate else 0
                    )
                    decoder = dialect.decoder(job.model, resp.content_type, input_estimate=estimate)
                    content_wait = timeouts.streaming.read_timeout

                    def first_event() -> None:
                        # pings do not extend this: content must follow within read_timeout
                        deadline.reschedule(loop.time() + content_wait)

                    def committed() -> None:
                        deadline.reschedule(None)
                        job.release()  # no other attempt can start: the body is not needed
                        if decoder.start_usage_estimated:
                            # the estimate in message_start never enters records: only the
                            # provider's count from message_delta does (issue 15 item 9)
                            job.outcome.input_tokens = 0

                    publisher = Publisher(
                        broadcast, job.outcome, Head(name, returned(resp.headers)), sent, ttfb,
                        first_event, committed,
                    )  # fmt: skip
                    push = publisher.push
                    while chunk := await resp.chunk():
                        try:
                            events = decoder.feed(chunk, time.perf_counter())
                        except ValueError as exc:
                            raise UpstreamProtocolError(name, f"malformed stream: {exc}") from None
                        for event in events:
                            if push(event):
                                return
                        broadcast.publish()  # what one read brought, one write per client
                    try:
                        tail = decoder.close()
                    except ValueError as exc:
                        raise UpstreamProtocolError(name, f"stream cut: {exc}") from None
                    for event in tail:  # a whole-body (JSON) answer decodes only at EOF
                        if push(event):
                            return
                    publisher.end()
                finally:
                    resp.close()
        except TimeoutError:
            if publisher is not None and publisher.seen_event:
                raise UpstreamTimeout(
                    name, "first_content", timeouts.streaming.read_timeout
                ) from None
            raise UpstreamTimeout(name, "first_event", timeouts.first_event_timeout) from None

    def _fail_committed(self, job: Job, broadcast: Broadcast, error: UpstreamError) -> None:
        """After commit: end the stream with a proper ``event: error`` (never fake text)."""
        attempts = job.outcome.attempts
        record = _attempt_record(error.provider, "mid_stream", error)
        if attempts and attempts[-1].provider == error.provider and attempts[-1].outcome == "ok":
            record.ttfb = attempts[-1].ttfb
            attempts[-1] = record  # the committed attempt failed: one entry per attempt
        else:
            attempts.append(record)
        if not (isinstance(error, UpstreamStreamError) and error.published):
            broadcast.append(respond.error_event(error))
        broadcast.fail(respond.mid_stream_failure(error))


# The words each transport failure answers to in ``unhealthy_exception_patterns`` (the
# original balancer matched exception texts; ours are classified, so the words are given).
_PATTERN_WORDS = {"connect": "connection network", "timeout": "timeout network"}


def _counts(error: UpstreamError, config: Config) -> bool:
    if not error.counts_against_health:
        return False
    if isinstance(error, UpstreamStatusError):
        return error.unhealthy
    words = _PATTERN_WORDS.get(error.reason)
    if words is None:
        return True  # stream errors, malformed or truncated streams always count
    text = f"{words} {error.message}".lower()
    return any(p.lower() in text for p in config.settings.unhealthy_exception_patterns)


def _fails_over(error: UpstreamError, provider: ProviderConfig) -> bool:
    if not error.failover:
        return False
    if isinstance(error, UpstreamStatusError):
        if error.status in (401, 403) and provider.passthrough_auth:
            return False  # the client's own credential was refused: its problem to see
        return error.unhealthy
    return True


def _attempt_record(provider: str, outcome: str, error: UpstreamError) -> Attempt:
    return Attempt(provider, outcome, reason=error.reason, detail=error.short, status=error.status)


async def _status_error(
    resp: UpstreamResponse, dialect: Dialect, name: str, config: Config
) -> UpstreamStatusError:
    body = await resp.body()
    error_type, message = dialect.error(resp.status, body)
    settings = config.settings
    text = body[:8192].decode("utf-8", "replace")
    unhealthy = resp.status in settings.unhealthy_http_codes or any(
        p.search(text) for p in settings.body_patterns
    )
    return UpstreamStatusError(
        name,
        message,
        status=resp.status,
        retry_after=respond.parse_retry_after(
            resp.header("retry-after"), resp.header("retry-after-ms")
        ),
        error_type=error_type,
        headers=returned(resp.headers),
        body=body,
        unhealthy=unhealthy,
    )


def _headers(job: Job, provider: ProviderConfig, dialect: Dialect) -> dict[str, str]:
    credential = job.credential if provider.passthrough_auth else provider.auth_value
    headers = dialect.headers(job.headers, credential, provider.auth_type, provider.header_options)
    headers.update(provider.headers)
    return headers
