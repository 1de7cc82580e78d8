"""What a model costs at a provider: Anthropic's published prices, and the config's own.

Prices are US dollars per million tokens, as Anthropic publishes them: base input, 5-minute and
1-hour cache writes, cache hits, output. A lookup tries, in order, the provider's own
``prices:`` (a relay or an OpenAI-format provider bills its own rates), the config's top-level
``prices:``, then the built-in table below; each is a list of case-insensitive model globs,
first match wins. A model none of them names has no price (``None``): its requests cost
nothing in the usage figures, and a client with a money limit is refused it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from ccbalancer.config.clients import PriceConfig, TierPrice
from ccbalancer.config.schema import Config, RouteEntry

# Taken on 2026-12-07 from Anthropic's published prices: the pricing page
# (https://platform.claude.com/docs/en/about-claude/pricing) and each model's overview page
# there. Sonnet 5.5's cache hits are $0.10 since Anthropic's cut of 2026-10-07. Haiku 5.5 and
# the Sonnet 4 / 4.5 1M-context rates depend on the prompt's length: every token of a request
# whose prompt is over the threshold pays the second rates.
PRICES_TAKEN = "2026-12-07"
# glob: (input, cache write 5m, cache write 1h, cache hit, output[, (above, same five)])
_BUILT_IN: tuple[tuple[str, tuple[float, ...], tuple[float, ...] | None], ...] = (
    ("claude-fable-5-1*", (10, 12.5, 20, 0.25, 50), None),
    ("claude-mythos-5-1*", (10, 12.5, 20, 0.25, 50), None),
    ("claude-fable-5*", (10, 12.5, 20, 1, 50), None),
    ("claude-mythos-5*", (10, 12.5, 20, 1, 50), None),
    ("claude-opus-5-5*", (4, 5, 8, 0.2, 20), None),
    ("claude-opus-5*", (5, 6.25, 10, 0.5, 25), None),
    ("claude-opus-4-8*", (5, 6.25, 10, 0.5, 25), None),
    ("claude-opus-4-7*", (5, 6.25, 10, 0.5, 25), None),
    ("claude-opus-4-6*", (5, 6.25, 10, 0.5, 25), None),
    ("claude-opus-4-5*", (5, 6.25, 10, 0.5, 25), None),
    ("claude-opus-4*", (15, 18.75, 30, 1.5, 75), None),  # Opus 4 and 4.1
    ("claude-3-opus*", (15, 18.75, 30, 1.5, 75), None),
    ("claude-sonnet-5-5*", (2, 2.5, 4, 0.1, 10), None),
    ("claude-sonnet-5*", (2, 2.5, 4, 0.2, 10), None),
    ("claude-sonnet-4-6*", (3, 3.75, 6, 0.3, 15), None),
    ("claude-sonnet-4*", (3, 3.75, 6, 0.3, 15), (200_000, 6, 7.5, 12, 0.6, 22.5)),  # 4, 4.5
    ("claude-3-7-sonnet*", (3, 3.75, 6, 0.3, 15), None),
    ("claude-haiku-5-5*", (0.1, 0.125, 0.2, 0.01, 0.5), (100_000, 0.5, 0.625, 1, 0.05, 2.5)),
    ("claude-haiku-4-5*", (1, 1.25, 2, 0.1, 5), None),
    ("claude-3-5-haiku*", (0.8, 1, 1.6, 0.08, 4), None),
    ("claude-3-haiku*", (0.25, 0.3, 0.5, 0.03, 1.25), None),
)
_PER_TOKEN = 1e-6
_LOOKUPS_KEPT = 4096  # model names come from clients: the memo of lookups is bounded


@dataclass(frozen=True, slots=True)
class Rates:
    """Dollars per token."""

    input: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float
    output: float


@dataclass(frozen=True, slots=True)
class Price:
    rates: Rates
    long: tuple[int, Rates] | None = None  # (prompt tokens above which, rates)
    source: str = "built-in"  # "built-in", "prices", or "providers[NAME].prices"

    def for_prompt(self, prompt_tokens: int) -> Rates:
        if self.long is not None and prompt_tokens > self.long[0]:
            return self.long[1]
        return self.rates


def _rates(per_million: tuple[float, ...]) -> Rates:
    fresh, write_5m, write_1h, read, output = (value * _PER_TOKEN for value in per_million)
    return Rates(fresh, write_5m, write_1h, read, output)


def _configured(entry: PriceConfig | TierPrice) -> Rates:
    def rate(value: float | None) -> float:
        return entry.input if value is None else value

    return _rates(
        (
            entry.input,
            rate(entry.cache_write_5m),
            rate(entry.cache_write_1h),
            rate(entry.cache_read),
            entry.output,
        )
    )


def _price(entry: PriceConfig, source: str) -> Price:
    tier = entry.long_prompt
    long = (tier.above_tokens, _configured(tier)) if tier is not None else None
    return Price(_configured(entry), long, source)


def built_in() -> list[tuple[str, Price]]:
    table = []
    for glob, rates, tier in _BUILT_IN:
        long = (int(tier[0]), _rates(tier[1:])) if tier is not None else None
        table.append((glob, Price(_rates(rates), long)))
    return table


def _globs(prices: Mapping[str, PriceConfig], source: str) -> list[tuple[str, Price]]:
    return [(glob.lower(), _price(entry, source)) for glob, entry in prices.items()]


class PriceBook:
    """The prices of one config snapshot."""

    def __init__(self, config: Config) -> None:
        self._shared = _globs(config.prices, "prices") + built_in()
        self._own = {
            p.name: _globs(p.prices, f"providers[{p.name}].prices")
            for p in config.providers
            if p.prices
        }
        self._config = config
        self._memo: dict[tuple[str, str], Price | None] = {}
        self._served: dict[tuple[str, str], Price | None] = {}
        self._unpriced: dict[tuple[str, str | None], str | None] = {}

    def price(self, provider: str, model: str) -> Price | None:
        """The price of ``model`` (the name sent upstream) at ``provider``, or None."""
        key = (provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        lowered = model.lower()
        found = next(
            (
                price
                for glob, price in self._own.get(provider, []) + self._shared
                if fnmatch.fnmatchcase(lowered, glob)
            ),
            None,
        )
        if len(self._memo) >= _LOOKUPS_KEPT:
            self._memo.clear()
        self._memo[key] = found
        return found

    def served(self, model: str, provider: str) -> Price | None:
        """The price of a request for ``model`` that ``provider`` served (memoised: this runs
        for every request)."""
        key = (model, provider)
        try:
            return self._served[key]
        except KeyError:
            pass
        found = self.price(provider, upstream_model(self._config, model, provider))
        if len(self._served) >= _LOOKUPS_KEPT:
            self._served.clear()
        self._served[key] = found
        return found

    def unpriced(self, model: str, forced: str | None) -> str | None:
        """The first upstream model that could serve a request for ``model`` (at an enabled
        provider of its route, or at the forced one) and has no price there; None if all
        have one."""
        key = (model, forced)
        if key in self._unpriced:
            return self._unpriced[key]
        config = self._config
        route = config.route_for(model)
        entries = route[1] if route is not None else ()
        if forced is not None:
            entries = tuple(e for e in entries if e.provider == forced) or (
                RouteEntry(provider=forced),
            )
        found = None
        for entry in entries:
            provider = config.providers_by_name.get(entry.provider)
            if provider is None or not provider.enabled:
                continue
            sent = model if entry.model == "passthrough" else entry.model
            if self.price(entry.provider, sent) is None:
                found = sent
                break
        if len(self._unpriced) >= _LOOKUPS_KEPT:
            self._unpriced.clear()
        self._unpriced[key] = found
        return found


def upstream_model(config: Config, model: str, provider: str) -> str:
    """The model name ``provider`` was sent for a request for ``model``: its route entry's,
    or ``model`` itself (``passthrough``, or a forced provider outside the route). A provider
    listed twice in a route with two models is priced by the first."""
    route = config.route_for(model)
    for entry in route[1] if route is not None else ():
        if entry.provider == provider:
            return model if entry.model == "passthrough" else entry.model
    return model
