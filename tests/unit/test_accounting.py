"""Prices, costs, windows and refusals, and the client config: the sans-IO parts of teams."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from ccbalancer.accounting.accounts import Accounts
from ccbalancer.accounting.budgets import (
    Calendar,
    Totals,
    budget_refusal,
    over_budget,
    over_rate,
    windows,
)
from ccbalancer.accounting.clients import NOBODY, ClientBook
from ccbalancer.accounting.cost import Tokens, cost, split
from ccbalancer.accounting.prices import PriceBook
from ccbalancer.config import parse_config
from ccbalancer.config.clients import ClientConfig
from ccbalancer.errors import ConfigError
from ccbalancer.observe.record import Attempt, RequestRecord
from ccbalancer.sharing.outcome import Usage

BASE = """
providers:
  - {name: a, type: anthropic, base_url: "http://127.0.0.1:1/a", auth_value: k-a-000000}
  - name: relay
    type: openai
    base_url: "http://127.0.0.1:1/r"
    auth_value: k-r-000000
    prices: {"claude-sonnet-*": {input: 1, output: 2}, "*": {input: 9, output: 9}}
model_routes:
  "*": [{provider: a}]
"""


def _utc(*parts: int) -> float:
    return dt.datetime(*parts, tzinfo=dt.UTC).timestamp()


def _per_million(rates) -> tuple[float, ...]:
    return tuple(
        round(value * 1e6, 6)
        for value in (
            rates.input, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read,
            rates.output,
        )
    )  # fmt: skip


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("claude-opus-4-8", (5, 6.25, 10, 0.5, 25)),
        ("claude-opus-4-1-20250805", (15, 18.75, 30, 1.5, 75)),
        ("claude-opus-5-5", (4, 5, 8, 0.2, 20)),
        ("claude-sonnet-4-5-20250929", (3, 3.75, 6, 0.3, 15)),
        ("CLAUDE-HAIKU-4-5-20251001", (1, 1.25, 2, 0.1, 5)),
        ("claude-3-5-haiku-20241022", (0.8, 1, 1.6, 0.08, 4)),
        ("claude-fable-5-1", (10, 12.5, 20, 0.25, 50)),
    ],
)
def test_the_built_in_table_prices_anthropics_models(model, expected) -> None:
    price = PriceBook(parse_config(BASE)).price("a", model)
    assert price is not None and _per_million(price.rates) == expected


def test_unknown_models_have_no_price_and_a_providers_own_prices_come_first() -> None:
    text = BASE + 'prices:\n  "glm-*": {input: 0.6, output: 2.2, cache_read: 0.11}\n'
    book = PriceBook(parse_config(text))
    assert book.price("a", "gpt-4o") is None
    glm = book.price("a", "glm-4.6")
    assert glm is not None and glm.source == "prices"
    # cache rates left out cost what input costs
    assert _per_million(glm.rates) == (0.6, 0.6, 0.6, 0.11, 2.2)
    relay = book.price("relay", "claude-sonnet-4-5")
    assert relay is not None and relay.source == "providers[relay].prices"
    assert _per_million(relay.rates)[0] == 1
    assert _per_million(book.price("relay", "anything").rates)[0] == 9  # type: ignore[union-attr]
    assert book.price("a", "claude-sonnet-4-5").source == "built-in"  # type: ignore[union-attr]


def test_served_prices_the_model_the_route_sent_upstream() -> None:
    text = BASE.replace(
        '  "*": [{provider: a}]',
        '  "big": [{provider: a, model: claude-opus-4-1}]\n  "*": [{provider: a}]',
    )
    book = PriceBook(parse_config(text))
    assert _per_million(book.served("big", "a").rates)[0] == 15  # type: ignore[union-attr]
    assert book.served("big", "relay") is not None  # forced elsewhere: the asked-for name
    assert book.unpriced("big", None) is None
    assert book.unpriced("gpt-4o", None) == "gpt-4o"


def test_long_prompts_pay_the_long_rates_on_every_token() -> None:
    book = PriceBook(parse_config(BASE))
    sonnet = book.price("a", "claude-sonnet-4-20250514")
    assert sonnet is not None
    short = Tokens(fresh=200_000, output=1000)
    long = Tokens(fresh=200_001, output=1000)
    assert cost(sonnet, short) == pytest.approx(200_000 * 3e-6 + 1000 * 15e-6)
    assert cost(sonnet, long) == pytest.approx(200_001 * 6e-6 + 1000 * 22.5e-6)


def test_tokens_of_a_usage_split_cache_writes_by_lifetime() -> None:
    usage = Usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=100,
        cache_creation_input_tokens=30,
        cache_creation_5m=10,
        cache_creation_1h=20,
    )
    tokens = Tokens.of(usage)
    assert (tokens.fresh, tokens.cache_read, tokens.cache_write, tokens.cache_write_1h) == (
        10, 100, 30, 20,
    )  # fmt: skip
    assert tokens.total == 145
    price = PriceBook(parse_config(BASE)).price("a", "claude-sonnet-4-5")
    assert price is not None
    assert cost(price, tokens) == pytest.approx(
        10 * 3e-6 + 100 * 0.3e-6 + 10 * 3.75e-6 + 20 * 6e-6 + 5 * 15e-6
    )


def test_windows_are_utc_calendar_minute_day_and_month() -> None:
    w = windows(_utc(2026, 12, 31, 23, 59, 30))
    assert (w.day, w.month) == ("2026-12-31", "2026-12")
    assert w.day_ends == w.month_ends == _utc(2027, 1, 1)
    assert w.minute_ends == _utc(2027, 1, 1)
    calendar = Calendar()
    assert calendar.at(_utc(2027, 2, 28, 12)).month_ends == _utc(2027, 3, 1)
    assert calendar.at(_utc(2027, 3, 1, 0, 0, 1)).day == "2027-03-01"


def test_a_spent_budget_is_refused_until_its_reset_and_says_so() -> None:
    limits = ClientConfig(name="alice", key="k" * 16, usd_per_month=100, tokens_per_day=1000)
    w = windows(_utc(2026, 12, 30, 12))
    assert over_budget("alice", limits, Totals(output=999), Totals(usd=99.99), w) is None
    refusal = over_budget("alice", limits, Totals(output=10), Totals(usd=100.5), w)
    assert refusal is not None and refusal.limit == "usd_per_month"
    assert refusal.retry_after == 36 * 3600 and refusal.final
    assert refusal.headers == {"retry-after": str(36 * 3600), "x-should-retry": "false"}
    assert "$100.50 of its usd_per_month $100.00" in refusal.message
    assert "resets at 2027-01-01 00:00 UTC (in 1d 12h)" in refusal.message
    tokens = budget_refusal("alice", "tokens_per_day", 1000, 1200, w.day_ends, w.now)
    assert "1,200 tokens of its tokens_per_day 1,000" in tokens.message


def test_rate_limits_say_how_long_to_wait_within_a_minute() -> None:
    limits = ClientConfig(name="bob", key="k" * 16, requests_per_minute=5, max_concurrency=2)
    w = windows(_utc(2026, 12, 30, 12, 0, 45) + 0.5)
    assert over_rate("bob", limits, 4, 1, w) is None
    rpm = over_rate("bob", limits, 5, 0, w)
    assert rpm is not None and rpm.retry_after == 15 and not rpm.final
    assert "x-should-retry" not in rpm.headers
    busy = over_rate("bob", limits, 0, 2, w)
    assert busy is not None and busy.limit == "max_concurrency" and busy.retry_after == 1


def test_clients_are_found_by_key_or_by_its_digest_and_never_by_a_near_miss() -> None:
    bob_key = "sk-bob-0123456789abcdef"
    text = BASE + (
        "settings: {auth: {api_key: sk-team-0000000000001}}\n"
        "clients:\n"
        "  - {name: alice, key: sk-alice-0123456789ab, models: [claude-*]}\n"
        f"  - {{name: bob, key_sha256: {hashlib.sha256(bob_key.encode()).hexdigest().upper()}}}\n"
    )
    book = ClientBook(parse_config(text))
    assert book.enabled and book.named
    assert book.identify("sk-alice-0123456789ab").name == "alice"  # type: ignore[union-attr]
    assert book.identify(bob_key).name == "bob"  # type: ignore[union-attr]
    assert book.identify("sk-team-0000000000001") is NOBODY
    assert book.identify("sk-alice-0123456789aB") is None
    assert book.identify("") is None
    assert book.names == ["alice", "bob", "anonymous"]
    alice = book.clients["alice"]
    assert alice.allows("Claude-Sonnet-4-5") and not alice.allows("gpt-4o")


@pytest.mark.parametrize(
    ("clients", "problem"),
    [
        ("  - {name: a1, key: sk-0123456789abcdef, key_sha256: " + "a" * 64 + "}", "either as key"),
        ("  - {name: a1}", "either as key"),
        ("  - {name: anonymous, key: sk-0123456789abcdef}", "settings.auth.api_key"),
        ("  - {name: 'a b', key: sk-0123456789abcdef}", "letters, digits"),
        ("  - {name: a1, key: short}", "at least 16"),
        ("  - {name: a1, key_sha256: abc}", "64 hex digits"),
        ("  - {name: a1, key: sk-0123456789abcdef, usd_per_day: 0}", "greater than 0"),
        (
            "  - {name: a1, key: sk-0123456789abcdef}\n  - {name: a1, key: sk-fedcba9876543210}",
            "duplicate name 'a1'",
        ),
        (
            "  - {name: a1, key: sk-0123456789abcdef}\n  - {name: a2, key_sha256: "
            + hashlib.sha256(b"sk-0123456789abcdef").hexdigest()
            + "}",
            "the same key as client 'a1'",
        ),
    ],
)
def test_client_config_problems_name_the_key_and_the_reason(clients, problem) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + "clients:\n" + clients + "\n")
    assert problem in str(caught.value)
    assert "clients[" in str(caught.value)


def test_a_recovered_answer_charges_each_provider_what_it_made() -> None:
    """a served 1,000 input tokens and 300 output before the cut; relay's continuation read
    1,400 tokens and wrote 200 more. The answer reports 1,000 in and 500 out; the cost is a's
    part at a's price plus the continuation's own at relay's."""
    accounts = Accounts(parse_config(BASE), warn=lambda *_: None)
    record = RequestRecord("req_1", "claude-sonnet-4-5", 0.0, provider="a")
    record.input_tokens, record.output_tokens = 1000, 500
    record.attempts = [
        Attempt("a", "mid_stream"),
        Attempt("relay", "continued", mode="prefill", input_tokens=1400, output_tokens=200),
    ]
    accounts.finished(record)
    a_part = 1000 * 3e-6 + 300 * 15e-6  # Sonnet 4.5's built-in price
    relay_part = 1400 * 1e-6 + 200 * 2e-6  # relay's own prices
    assert record.cost_usd == pytest.approx(a_part + relay_part)
    parts = split("a", Tokens(fresh=1000, output=500), record.attempts)
    assert parts == [("a", Tokens(fresh=1000, output=300)), ("relay", Tokens(1400, 0, 0, 0, 200))]
    # an answer nobody continued is all its provider's
    assert split("a", Tokens(fresh=5, output=7), [Attempt("a", "ok")]) == [
        ("a", Tokens(fresh=5, output=7))
    ]
