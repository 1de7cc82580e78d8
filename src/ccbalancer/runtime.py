"""The Runtime: everything a running balancer owns, built at start-up and closed in reverse.

Config is an immutable snapshot swapped whole on reload; each request keeps the snapshot it
started with. Provider health lives in a registry keyed by name, so it survives reloads for
unchanged names. There is no module-level mutable state anywhere: handlers reach all of this
through ``app["runtime"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ccbalancer.balance import Planner
from ccbalancer.budget import BodyBudget
from ccbalancer.config.load import load_config
from ccbalancer.config.schema import Config
from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.openai import OpenAIDialect
from ccbalancer.errors import ConfigError
from ccbalancer.observe.history import History
from ccbalancer.observe.logs import (
    Redactor,
    debug_enabled,
    get_logger,
    log_event_timing,
    log_health,
    log_reload,
    log_request,
)
from ccbalancer.observe.metrics import Metrics
from ccbalancer.observe.recent import RecentRequests
from ccbalancer.observe.record import RequestRecord
from ccbalancer.proxy.attempt import Attempts
from ccbalancer.proxy.job import Job
from ccbalancer.sharing.broadcast import Broadcast
from ccbalancer.sharing.hub import Hub
from ccbalancer.sharing.remote import RemoteShare
from ccbalancer.tasks import TaskOwner
from ccbalancer.upstream.client import UpstreamClient
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry, State

WATCH_INTERVAL = 1.0
SWEEP_INTERVAL = 5.0


def secrets_of(config: Config) -> list[str]:
    found = [
        p.auth_value for p in config.providers if p.auth_value and p.auth_value != "passthrough"
    ]
    found += list(config.settings.auth.keys) + list(config.settings.admin_keys)
    redis_url = config.settings.redis.url
    if "@" in redis_url:  # redis://user:password@host: the credentials part
        found.append(redis_url.split("://", 1)[-1].rsplit("@", 1)[0])
    for provider in config.providers:
        if provider.proxy and "@" in provider.proxy:
            found.append(provider.proxy.split("://", 1)[-1].rsplit("@", 1)[0])
        found += [
            v for k, v in provider.headers.items() if k.lower() in ("authorization", "x-api-key")
        ]
    return found


class Runtime:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        redactor: Redactor | None = None,
        history: bool = True,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock
        self.log = get_logger("ccbalancer")
        self.redactor = redactor or Redactor()
        self.redactor.add(*secrets_of(config))
        self.metrics = Metrics()
        self.recent = RecentRequests()
        self.bodies = BodyBudget()  # request bodies in flight, all requests together
        settings = config.settings
        self.health = HealthRegistry(HealthPolicy.from_settings(settings), clock, self._transition)
        for provider in config.providers:
            self.metrics.provider_state(provider.name, State.HEALTHY.value)
        self.planner = Planner(self.health)
        self.planner.set_strategy(settings.selection_strategy)
        self.client = UpstreamClient()
        dedup = settings.deduplication
        self.hub = Hub(
            clock,
            settings.cache.ttl,
            settings.cache.max_bytes,
            dedup.orphan_grace,
            settings.timeouts.caching.deduplication_timeout,
        )
        # Sharing across instances; the URL is read once (a reload that changes it is logged
        # and takes effect at the next start).
        self._from_elsewhere = False  # applying another instance's breaker: do not echo it
        redis = settings.redis
        self.remote: RemoteShare | None = (
            RemoteShare(
                redis.url,
                self._remote_warning,
                max_connections=redis.max_connections,
                pool_timeout=redis.pool_timeout,
            )
            if redis.url
            else None
        )
        self.dialects: dict[str, Dialect] = {
            "anthropic": AnthropicDialect(),
            "openai": OpenAIDialect(),
        }
        self.attempts = Attempts(
            self.client,
            self.planner,
            self.health,
            self.dialects,
            self._failover,
            self.redactor.scrub,
        )
        self.history: History | None = (
            History(
                settings.history.path, settings.history.retention_days, scrub=self.redactor.scrub
            )
            if history and settings.history.enabled
            else None
        )
        self._owner = TaskOwner("runtime")
        self._mtime = self._config_mtime()
        self.started = time.time()
        self.reloads = 0

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.history is not None:
            self.history.start()
        if self.config_path is not None:
            self._owner.spawn(self._watch(), "config-watch")
        self._owner.spawn(self._sweep(), "cache-sweep")
        if self.remote is not None:
            self._owner.spawn(self.remote.follow_health(self._open_elsewhere), "redis-health")
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)

    async def close(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self._owner.close()
        await self.hub.close()
        if self.remote is not None:
            await self.remote.close()
        await self.client.close()
        if self.history is not None:
            await asyncio.to_thread(self.history.close)

    # -- requests --------------------------------------------------------------------------

    async def produce(self, job: Job, broadcast: Broadcast) -> None:
        self.metrics.stream_opened()
        try:
            await self.attempts.produce(job, broadcast)
        except Exception:
            self.log.exception("producer_crashed", request_id=job.request_id)
            raise
        finally:
            self.metrics.stream_closed()

    def finished(self, record: RequestRecord) -> None:
        record.bound()  # client-chosen text is capped before it is logged or stored
        log_request(self.log, record)
        self.metrics.request_finished(record)
        self.recent.add(record)
        if self.history is not None:
            self.history.add(record)

    def event_tracer(
        self, request_id: str, sub_id: int
    ) -> Callable[[int, float, float], None] | None:
        """Per-event DEBUG timing, or None (the hot path then pays nothing)."""
        if not debug_enabled(self.log):
            return None
        log = self.log

        def trace(seq: int, received: float, written: float) -> None:
            log_event_timing(log, request_id, sub_id, seq, received, written)

        return trace

    def producer(self, job: Job, key: str | None) -> Callable[[Broadcast], Awaitable[None]]:
        """What the hub runs for a new call: the upstream attempt, shared with other instances
        through Redis when that is configured and the request has a sharing key."""
        local = functools.partial(self.produce, job)
        if self.remote is None or key is None:
            return local
        timeouts = job.config.settings.timeouts
        return self.remote.producer(
            key,
            local,
            lead_ttl=timeouts.caching.deduplication_timeout,
            cache_ttl=job.config.settings.cache.ttl,
            first_event_timeout=timeouts.first_event_timeout,
            idle_timeout=timeouts.streaming.read_timeout,
        )

    def _remote_warning(self, event: str, exc: BaseException) -> None:
        self.log.warning(event, error=self.redactor.scrub(str(exc)))
        if debug_enabled(self.log):  # the foreign exception, chained, for whoever debugs
            self.log.debug(event, exc_info=exc)

    def _failover(self, provider: str, reason: str) -> None:
        pass  # counted from the request record (failovers_total); hook kept for tracing

    def _transition(self, provider: str, old: State, new: State) -> None:
        self.metrics.provider_state(provider, new.value)
        log_health(self.log, provider, new.value, old.value)
        if new is State.COOLING_DOWN and self.remote is not None and not self._from_elsewhere:
            health = self.health.get(provider)
            reason = self.redactor.scrub(health.last_failure_reason or "")
            self.remote.publish_open(provider, health.cooldown_remaining(self.clock()), reason)

    def _open_elsewhere(self, provider: str, seconds: float, reason: str) -> None:
        """Another instance's breaker for ``provider`` opened (through Redis)."""
        if provider not in self.config.providers_by_name:
            return  # not configured here
        self._from_elsewhere = True
        try:
            self.health.get(provider).open_elsewhere(self.clock(), seconds, reason)
        finally:
            self._from_elsewhere = False

    # -- reload ----------------------------------------------------------------------------

    def apply(self, config: Config) -> None:
        """Swap in a validated config. Requests in flight keep their own snapshot."""
        old = self.config
        settings = config.settings
        self.redactor.add(*secrets_of(config))
        self.health.reconcile(
            (p.name for p in config.providers), HealthPolicy.from_settings(settings)
        )
        self.planner.set_strategy(settings.selection_strategy)
        self.client.reconcile(config.providers)
        self.hub.configure(
            settings.cache.ttl,
            settings.cache.max_bytes,
            settings.deduplication.orphan_grace,
            settings.timeouts.caching.deduplication_timeout,
        )
        if settings.redis.url != old.settings.redis.url:
            self.log.warning("config", message="settings.redis.url changes take effect at restart")
        removed = set(old.providers_by_name) - set(config.providers_by_name)
        for name in removed:
            self.metrics.forget_provider(name)
        for provider in config.providers:
            if provider.name not in old.providers_by_name:
                self.metrics.provider_state(provider.name, State.HEALTHY.value)
        self.config = config
        self.reloads += 1

    def reload(self, source: str) -> Config:
        """Re-read the config file; all or nothing. Raises ``ConfigError`` and keeps the old."""
        if self.config_path is None:
            raise ConfigError("<none>", "", "the balancer was not started from a config file")
        try:
            config = load_config(
                self.config_path, warn=lambda text: self.log.warning("config", message=text)
            )
        except ConfigError as error:
            log_reload(self.log, source, False, file=error.path, key=error.key, error=error.reason)
            raise
        self.apply(config)
        self._mtime = self._config_mtime()
        log_reload(self.log, source, True, file=self.config_path, providers=len(config.providers))
        return config

    def _config_mtime(self) -> float | None:
        if self.config_path is None:
            return None
        try:
            return Path(self.config_path).stat().st_mtime
        except OSError:
            return None

    def _on_sighup(self) -> None:
        with contextlib.suppress(ConfigError):
            self.reload("SIGHUP")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            mtime = self._config_mtime()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                with contextlib.suppress(ConfigError):
                    self.reload("file change")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.hub.sweep()


RUNTIME = web.AppKey("runtime", Runtime)
