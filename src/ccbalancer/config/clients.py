"""The config of teams (issue 18): named client keys with their limits, and prices.

``clients:`` names each person (or tool) that may use the balancer, with the key it presents —
as ``${ENV}`` or as the key's SHA-256, so the file need not hold secrets — the models it may
use and its limits. ``prices:`` (top level, and per provider) overrides and extends the
built-in price table (``accounting.prices``), in US dollars per million tokens. Validation only;
what the values mean lives in ``accounting/``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ANONYMOUS = "anonymous"  # the client of the keys in settings.auth.api_key
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MIN_KEY_LENGTH = 16  # a shorter key could be guessed; `ccbalancer keys new` makes 47 characters


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierPrice(_Frozen):
    """Rates for requests whose prompt (input, cache reads and writes) is over ``above_tokens``
    (Anthropic's long-context tiers)."""

    above_tokens: int = Field(gt=0)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)


class PriceConfig(_Frozen):
    """US dollars per million tokens. A cache rate left out costs what ``input`` costs: a
    provider that does not publish cache prices bills those tokens as input."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    long_prompt: TierPrice | None = None


class ClientConfig(_Frozen):
    name: str
    key: str = ""
    key_sha256: str = ""
    models: tuple[str, ...] | None = None  # globs, case-insensitive; None: every model
    requests_per_minute: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)
    usd_per_day: float | None = Field(default=None, gt=0)
    usd_per_month: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1-64 letters, digits, '_', '.', '@' or '-' (it names the client in "
                "logs, metrics and the dashboard)"
            )
        if value == ANONYMOUS:
            raise ValueError(f"{ANONYMOUS!r} is the client of settings.auth.api_key's keys")
        return value

    @field_validator("key_sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        value = value.strip().lower()
        if value and not _SHA256.match(value):
            raise ValueError("must be 64 hex digits (the SHA-256 of the key)")
        return value

    @model_validator(mode="after")
    def _one_key(self) -> ClientConfig:
        if bool(self.key) == bool(self.key_sha256):
            raise ValueError(
                "give the client's key either as key (best as ${ENV}) or as key_sha256; "
                "`ccbalancer keys new NAME` makes one"
            )
        if self.key and len(self.key) < MIN_KEY_LENGTH:
            raise ValueError(f"key: must be at least {MIN_KEY_LENGTH} characters")
        return self

    @property
    def money_limited(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None
