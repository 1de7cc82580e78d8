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
import os
import random
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from ccbalancer.accounting import Accounts
from ccbalancer.balance import Planner
from ccbalancer.budget import BodyBudget
from ccbalancer.config.clients import ANONYMOUS
from ccbalancer.config.load import load_config
from ccbalancer.config.schema import Config
from ccbalancer.dialects.anthropic import AnthropicDialect
from ccbalancer.dialects.base import Dialect
from ccbalancer.dialects.openai import OpenAIDialect
from ccbalancer.errors import ConfigError
from ccbalancer.observe.history import History
from ccbalancer.observe.inflight import InFlight
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
from ccbalancer.observe.refusals import Refusals
from ccbalancer.observe.sessions import RecentSessions
from ccbalancer.redislink import REDIS_COMMAND_TIMEOUT, RedisLink
from ccbalancer.relay.call import Call
from ccbalancer.relay.relay import Relay
from ccbalancer.sharing.broadcast import Broadcast
from ccbalancer.sharing.calls import SharedCalls
from ccbalancer.sharing.hub import Hub
from ccbalancer.sharing.remote import FOLLOW_BLOCK, RemoteShare
from ccbalancer.tasks import TaskOwner
from ccbalancer.upstream.client import UpstreamClient
from ccbalancer.upstream.health import HealthPolicy, HealthRegistry, State
from ccbalancer.upstream.ratelimits import RateLimits

WATCH_INTERVAL = 1.0
SWEEP_INTERVAL = 5.0
COUNT_TOKENS_TTL = 60.0
COUNT_TOKENS_ENTRIES = 1024  # answers are ~30 bytes: the bound is about the keys


def secrets_of(config: Config) -> list[str]:
    found = [
        p.auth_value for p in config.providers if p.auth_value and p.auth_value != "passthrough"
    ]
    found += list(config.settings.auth.keys) + list(config.settings.admin_keys)
    found += [client.key for client in config.clients if client.key]
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
        self.inflight = InFlight()  # requests being answered now (the dashboard's streams)
        self.sessions = RecentSessions()
        self.refusals = Refusals(self.log, clock)
        self.bodies = BodyBudget()  # request bodies in flight, all requests together
        settings = config.settings
        self.health = HealthRegistry(HealthPolicy.from_settings(settings), clock, self._transition)
        for provider in config.providers:
            self.metrics.provider_state(provider.name, State.HEALTHY.value)
        self.ratelimits = RateLimits(clock)  # room per provider, from its rate-limit headers
        self.planner = Planner(self.health, ratelimits=self.ratelimits)
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
        # one link (connection slots, one pool) for everything this instance asks Redis
        self.redis_link: RedisLink | None = (
            RedisLink(
                redis.url,
                max_connections=redis.max_connections,
                pool_timeout=redis.pool_timeout,
                connect_timeout=REDIS_COMMAND_TIMEOUT,
                read_timeout=REDIS_COMMAND_TIMEOUT + FOLLOW_BLOCK,
            )
            if redis.url
            else None
        )
        self.remote: RemoteShare | None = (
            RemoteShare(self.redis_link, self._remote_warning) if self.redis_link else None
        )
        self.dialects: dict[str, Dialect] = {
            "anthropic": AnthropicDialect(),
            "openai": OpenAIDialect(),
        }
        self.relay = Relay(
            self.client,
            self.planner,
            self.health,
            self.dialects,
            self.redactor.scrub,
            on_headers=self.ratelimits.observe,
        )
        # count_tokens answers: identical requests share one call, then reuse it for a minute
        self.counts = SharedCalls("count-tokens", clock, COUNT_TOKENS_TTL, COUNT_TOKENS_ENTRIES)
        self.history: History | None = (
            History(
                settings.history.path, settings.history.retention_days, scrub=self.redactor.scrub
            )
            if history and settings.history.enabled
            else None
        )
        # Clients, prices, budgets (issue 18); daily totals go to the history when it is on.
        self.accounts = Accounts(
            config,
            self._remote_warning,
            persist=self.history.add_usage if self.history is not None else None,
            link=self.redis_link,
        )
        self._owner = TaskOwner("runtime")
        self._mtime = self._config_mtime()
        self.started = time.time()
        self.reloads = 0
        self._ids = random.Random(os.urandom(16))

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.history is not None:
            self.history.start()
            await self._seed_accounts(self.history.path)
        if self.accounts.shared is not None:
            self._owner.spawn(self.accounts.shared.renew_leases(), "redis-leases")
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
        await self.counts.close()
        await self.hub.close()
        await self.accounts.close()
        if self.remote is not None:
            await self.remote.close()
        if self.redis_link is not None:
            await self.redis_link.close()
        await self.client.close()
        if self.history is not None:
            await asyncio.to_thread(self.history.close)

    # -- requests --------------------------------------------------------------------------

    def request_id(self) -> str:
        """A new request id: unique, not secret (uuid4 costs a getrandom call per request)."""
        return f"req_ccb_{self._ids.getrandbits(96):024x}"

    async def produce(self, call: Call, broadcast: Broadcast, client: str = ANONYMOUS) -> None:
        self.metrics.stream_opened()
        try:
            await self.relay.produce(call, broadcast)
        except Exception:
            self.log.exception("producer_crashed", request_id=call.request_id)
            raise
        finally:
            self.metrics.stream_closed()
            # the final usage, whoever still reads the answer: budgets count what was used
            outcome = broadcast.outcome
            self.accounts.charge(
                client, call.model, outcome.provider, outcome.usage, outcome.attempts
            )

    def finished(self, record: RequestRecord) -> None:
        record.bound()  # client-chosen text is capped before it is logged or stored
        self.inflight.discard(record.request_id)
        self.accounts.finished(record)
        log_request(self.log, record)
        self.metrics.request_finished(record)
        self.recent.add(record)
        self.sessions.add(record)
        if self.history is not None:
            self.history.add(record)

    def rejected_key(self, presented: str, path: str, client: str | None, admin: bool) -> None:
        """A request refused (401) for its inbound key: counted, logged at a bounded rate."""
        self.metrics.auth_failed("wrong" if presented else "missing")
        self.refusals.rejected(presented, path, client, admin)

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

    def producer(
        self, call: Call, key: str | None, client: str = ANONYMOUS
    ) -> Callable[[Broadcast], Awaitable[None]]:
        """What the hub runs for a new call: the relay, shared with other instances through
        Redis when that is configured and the request has a sharing key. Its usage is
        charged to ``client`` when it made the upstream call itself."""
        local = functools.partial(self.produce, call, client=client)
        if self.remote is None or key is None:
            return local
        timeouts = call.config.settings.timeouts
        return self.remote.producer(
            key,
            local,
            lead_ttl=timeouts.caching.deduplication_timeout,
            cache_ttl=call.config.settings.cache.ttl,
            first_event_timeout=timeouts.first_event_timeout,
            idle_timeout=timeouts.streaming.read_timeout,
        )

    async def _seed_accounts(self, path: str) -> None:
        """This month's daily totals from the history: budgets survive a restart."""
        month_start = time.strftime("%Y-%m-01", time.gmtime())
        try:
            rows = await asyncio.to_thread(History.daily, path, month_start)
        except (OSError, sqlite3.Error) as exc:
            self.log.error("history", message=f"cannot read daily totals from {path}: {exc}")
            return
        self.accounts.seed(rows)

    def _remote_warning(self, event: str, problem: str | BaseException) -> None:
        self.log.warning(event, error=self.redactor.scrub(str(problem)))
        if isinstance(problem, BaseException) and debug_enabled(self.log):
            self.log.debug(event, exc_info=problem)  # the foreign exception, chained

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
        self.accounts.apply(config)
        for name in {c.name for c in old.clients} - {c.name for c in config.clients}:
            self.metrics.forget_client(name)
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
        self.ratelimits.retain(config.providers_by_name)
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
            problems = "; ".join(str(problem) for problem in error.problems)
            log_reload(self.log, source, False, file=error.path, error=problems)
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
