"""A request's cost: its final usage, priced at the provider that served it.

Anthropic's usage counts ``input_tokens`` apart from cache reads and cache writes; writes may
come split by lifetime (``cache_creation.ephemeral_5m/1h_input_tokens``). Writes reported
without the split are 5-minute writes, the default lifetime. The prompt's length (all three
input kinds) picks the rate tier of models whose price depends on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ccbalancer.accounting.prices import Price


class Usage(Protocol):
    """The fields of ``sharing.outcome.Usage`` that a cost needs."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_input_tokens(self) -> int: ...
    @property
    def cache_creation_input_tokens(self) -> int: ...
    @property
    def cache_creation_1h(self) -> int: ...


@dataclass(slots=True)  # not frozen: made per request, and a frozen __init__ costs 3x
class Tokens:
    fresh: int = 0  # input that was neither read from nor written to the cache
    cache_read: int = 0
    cache_write: int = 0  # all writes, 5-minute and 1-hour
    cache_write_1h: int = 0
    output: int = 0

    @classmethod
    def of(cls, usage: Usage) -> Tokens:
        return cls(
            usage.input_tokens,
            usage.cache_read_input_tokens,
            max(usage.cache_creation_input_tokens, usage.cache_creation_1h),
            usage.cache_creation_1h,
            usage.output_tokens,
        )

    @property
    def prompt(self) -> int:
        return self.fresh + self.cache_read + self.cache_write

    @property
    def total(self) -> int:
        """Every token, as ``tokens_per_day`` counts them."""
        return self.prompt + self.output


def cost(price: Price, tokens: Tokens) -> float:
    """US dollars."""
    rates = price.for_prompt(tokens.prompt)
    return (
        tokens.fresh * rates.input
        + tokens.cache_read * rates.cache_read
        + (tokens.cache_write - tokens.cache_write_1h) * rates.cache_write_5m
        + tokens.cache_write_1h * rates.cache_write_1h
        + tokens.output * rates.output
    )


class Part(Protocol):
    """The fields of ``observe.record.Attempt`` that a split needs."""

    @property
    def provider(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


def split(provider: str, tokens: Tokens, attempts: Iterable[Part]) -> list[tuple[str, Tokens]]:
    """Who made which tokens of one answer. An answer finished after a cut (docs/recovery.md)
    reports the first provider's input and both providers' output; each continuation also
    read the whole conversation again. So every continuation is charged its own input (as
    fresh input: an upper bound when it read some from its cache) and output at its own
    provider, and ``provider`` the rest."""
    parts: list[tuple[str, Tokens]] = []
    output = tokens.output
    for attempt in attempts:
        if attempt.outcome == "continued" and (attempt.input_tokens or attempt.output_tokens):
            parts.append(
                (attempt.provider, Tokens(attempt.input_tokens, 0, 0, 0, attempt.output_tokens))
            )
            output -= attempt.output_tokens
    if not parts:
        return [(provider, tokens)]
    first = Tokens(
        tokens.fresh, tokens.cache_read, tokens.cache_write, tokens.cache_write_1h, max(0, output)
    )
    return [(provider, first), *parts]
