"""The runtime's accounts: who may start a request, what each answer cost, what is left.

``admit`` runs before any upstream call (models, price, limits); ``charge`` adds an answer's
final usage when its upstream call ends, however many clients read it; ``finished`` prices the
request's record, counts the request and frees its concurrency slot. Counts live in this
instance's ``Ledger``, in Redis when ``redis.url`` is set (``SharedLedger``, which decides
while it is reachable), and — when the history is on — in its daily totals (``persist``), from
which a restart rebuilds the day and the month (``seed``). A reload swaps the clients and
prices and keeps every count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ccbalancer.accounting.budgets import Calendar, Totals
from ccbalancer.accounting.clients import NOBODY, Client, ClientBook
from ccbalancer.accounting.cost import Part, Tokens, Usage, cost, split
from ccbalancer.accounting.ledger import Ledger
from ccbalancer.accounting.prices import PriceBook
from ccbalancer.accounting.shared import SharedLedger, Unavailable, Warn
from ccbalancer.config.schema import Config
from ccbalancer.errors import ClientError
from ccbalancer.observe.record import Charged, DailyUsage, RequestRecord
from ccbalancer.redislink import RedisLink

Persist = Callable[[DailyUsage], None]


class Refused(ClientError):
    """A client may not start this request; ``limit`` names the rule: ``models``, ``price``
    or the limit's key."""

    def __init__(
        self,
        limit: str,
        status: int,
        message: str,
        error_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, error_type, headers)
        self.limit = limit


_UPSTREAM_ROLES = ("leader", "none")
_LIMIT_KEYS = (
    "requests_per_minute", "max_concurrency", "tokens_per_day", "usd_per_day", "usd_per_month",
)  # fmt: skip  # a follower or a replay made no upstream call


class Accounts:
    def __init__(
        self,
        config: Config,
        warn: Warn,
        persist: Persist | None = None,
        clock: Callable[[], float] = time.time,
        link: RedisLink | None = None,
    ) -> None:
        self.book = ClientBook(config)
        self.prices = PriceBook(config)
        self.ledger = Ledger()
        # with settings.redis.url: counts shared by every instance, through the runtime's link
        self.shared = SharedLedger(link, warn) if link is not None else None
        self._calendar = Calendar()
        self._persist = persist
        self.clock = clock  # wall time: budgets are per UTC minute, day and month
        self._admitted: dict[str, Client] = {}  # request id -> client, until it ends

    def apply(self, config: Config) -> None:
        self.book = ClientBook(config)
        self.prices = PriceBook(config)

    def seed(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.ledger.seed(rows, self._calendar.at(self.clock()))

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()

    # -- the door --------------------------------------------------------------------------

    async def admit(self, client: Client, model: str, forced: str | None, request_id: str) -> None:
        """Raises ``Refused`` (403, 429) when ``client`` may not start this request."""
        if not client.allows(model):
            allowed = ", ".join(client.limits.models or ()) if client.limits else ""
            raise Refused(
                "models",
                403,
                f"client {client.name!r} may not use model {model!r} (its models: {allowed})",
                "permission_error",
            )
        if client.limits is not None:
            if client.money_limited:
                missing = self.prices.unpriced(model, forced)
                if missing is not None:
                    raise Refused(
                        "price",
                        403,
                        f"model {missing!r} has no known price, and client {client.name!r} has "
                        "a money limit: the balancer's admin can add it under prices:",
                        "permission_error",
                    )
            w = self._calendar.at(self.clock())
            refusal = None
            decided = False
            if self.shared is not None:
                try:
                    refusal = await self.shared.admit(client, request_id, w)
                    decided = True
                except Unavailable:
                    pass  # decide on this instance's own counts
            if not decided:
                refusal = self.ledger.refusal(client, w)
            if refusal is not None:
                raise Refused(
                    refusal.limit, 429, refusal.message, "rate_limit_error", refusal.headers
                )
            self.ledger.admit(client, request_id, w)
        self._admitted[request_id] = client

    # -- the end of an answer and of a request ---------------------------------------------

    def charge(
        self, name: str, model: str, provider: str, usage: Usage, attempts: Iterable[Part] = ()
    ) -> None:
        """An upstream call ended: add its final usage, priced, to ``name``'s day and month
        (a recovered answer's continuations each at their own provider: ``split``)."""
        if not provider:
            return
        tokens = Tokens.of(usage)
        if not tokens.total:
            return
        parts = split(provider, tokens, attempts)
        used = Totals(0, 0, 0, 0, 0, self._cost(model, parts) or 0.0)
        for _, part in parts:
            used.fresh += part.fresh
            used.cache_read += part.cache_read
            used.cache_write += part.cache_write
            used.output += part.output
        self._count(name, used)

    def finished(self, record: RequestRecord) -> None:
        """Every request ends here (admitted or not): price its record, free its slot."""
        if record.provider and record.role in _UPSTREAM_ROLES:
            parts = split(record.provider, record_tokens(record), record.attempts)
            record.charged = [_charged(p, t, self._cost(record.model, [(p, t)])) for p, t in parts]
            priced = [part.usd for part in record.charged if part.usd is not None]
            record.cost_usd = sum(priced) if priced else None  # as ``_cost`` of all the parts
        client = self._admitted.pop(record.request_id, None)
        if client is None:
            return  # refused at the door, or never got that far
        self.ledger.release(record.request_id)
        name = client.name
        w = self._calendar.at(self.clock())
        self.ledger.count_request(name, w)
        if self.shared is not None:
            self.shared.finish(record.request_id, name, w)
        if self._persist is not None:
            self._persist(DailyUsage(name, w.day, requests=1))

    def _cost(self, model: str, parts: list[tuple[str, Tokens]]) -> float | None:
        """US dollars for every part at its provider's price; None if none has a price."""
        total: float | None = None
        for provider, tokens in parts:
            price = self.prices.served(model, provider)
            if price is not None:
                total = (total or 0.0) + cost(price, tokens)
        return total

    def _count(self, name: str, used: Totals) -> None:
        w = self._calendar.at(self.clock())
        self.ledger.add(name, used, w)
        if self.shared is not None:
            self.shared.add(name, used, w)
        if self._persist is not None:
            self._persist(
                DailyUsage(
                    name,
                    w.day,
                    0,
                    used.fresh,
                    used.cache_read,
                    used.cache_write,
                    used.output,
                    used.usd,
                )
            )

    # -- what the dashboard shows ----------------------------------------------------------

    async def view(self) -> list[dict[str, Any]]:
        """Per client: today's requests, tokens and cache hit rate, cost today and this
        month, and what is left of each budget (from Redis when it is configured)."""
        w = self._calendar.at(self.clock())
        names = self.book.names
        totals = {name: (self.ledger.day(name, w), self.ledger.month(name, w)) for name in names}
        if self.shared is not None:
            with contextlib.suppress(Unavailable):  # this instance's own counts, then
                totals = await self.shared.totals(names, w)
        rows = []
        for name in names:
            day, month = totals[name]
            client = self.book.clients.get(name, NOBODY)
            if client is NOBODY and not day.requests and not month.requests and self.book.named:
                continue  # no anonymous keys in use: no row for them
            rows.append(_row(client, day, month, self.ledger.in_flight(name)))
        return rows


def _charged(provider: str, tokens: Tokens, usd: float | None) -> Charged:
    return Charged(
        provider, tokens.fresh, tokens.cache_read, tokens.cache_write, tokens.output, usd
    )


def record_tokens(record: RequestRecord) -> Tokens:
    cached = record.cache_read_tokens + record.cache_write_tokens
    return Tokens(
        max(0, record.input_tokens - cached),
        record.cache_read_tokens,
        record.cache_write_tokens,
        record.cache_write_1h_tokens,
        record.output_tokens,
    )


def _row(client: Client, day: Totals, month: Totals, in_flight: int) -> dict[str, Any]:
    limits = client.limits
    left: dict[str, float] = {}
    if limits is not None:
        for key, limit, used in (
            ("usd_per_day", limits.usd_per_day, day.usd),
            ("usd_per_month", limits.usd_per_month, month.usd),
            ("tokens_per_day", limits.tokens_per_day, day.tokens),
        ):
            if limit is not None:
                left[key] = max(0.0, limit - used)
    prompt = day.fresh + day.cache_read + day.cache_write
    return {
        "client": client.name,
        "requests_today": day.requests,
        "tokens_today": day.tokens,
        "cache_hit_rate": round(day.cache_read / prompt, 4) if prompt else None,
        "usd_today": round(day.usd, 6),
        "usd_month": round(month.usd, 6),
        "in_flight": in_flight,
        "limits": {
            key: getattr(limits, key)
            for key in _LIMIT_KEYS
            if limits is not None and getattr(limits, key) is not None
        },
        "left": left,
    }
