"""The config schema: immutable pydantic models, unknown keys rejected.

A ``Config`` is a snapshot: it is never mutated, a reload builds a new one and swaps it whole.
Route lookup (exact key first, then case-insensitive ``*`` globs in file order) lives here
because it is a pure function of the snapshot.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import re
import typing
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ccbalancer.config.clients import ClientConfig, PriceConfig
from ccbalancer.dialects.base import BodyOptions, HeaderOptions
from ccbalancer.dialects.betas import BetaFilter
from ccbalancer.dialects.capabilities import DEFAULT_CAPABILITIES, Capabilities

DEFAULT_UNHEALTHY_CODES = (
    401, 402, 403, 404, 408, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529,
)  # fmt: skip


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CapabilitiesConfig(_Frozen):
    """What a provider accepts; unset keys take the type's default (``DEFAULT_CAPABILITIES``)."""

    images: bool | None = None
    files: bool | None = None
    server_tools: bool | tuple[str, ...] | None = None
    thinking: bool | None = None


class BetasConfig(_Frozen):
    """``anthropic-beta`` names to drop, or the only ones to keep (glob patterns)."""

    drop: tuple[str, ...] = ()
    allow: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_list(self) -> BetasConfig:
        if self.drop and self.allow is not None:
            raise ValueError("give either drop or allow, not both")
        return self


# Keys that only mean something for one provider type.
_ANTHROPIC_ONLY = ("betas", "strip_billing_header")
_OPENAI_ONLY = ("reasoning_effort", "reasoning_history", "prompt_cache_key", "cache_control")


class ProviderConfig(_Frozen):
    name: str = Field(min_length=1)
    type: Literal["anthropic", "openai"]
    base_url: str
    auth_type: Literal["api_key", "auth_token"] = "api_key"
    auth_value: str = ""
    proxy: str | None = None
    enabled: bool = True
    weight: float = Field(default=1.0, gt=0)
    max_concurrency: int = Field(default=0, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    max_tokens: int = Field(default=0, ge=0)  # 0: the client's max_tokens unchanged
    reasoning_effort: bool = True  # openai only
    reasoning_history: bool = False  # openai only
    capabilities: CapabilitiesConfig = CapabilitiesConfig()
    betas: BetasConfig = BetasConfig()  # anthropic only
    strip_billing_header: bool = False  # anthropic only
    prompt_cache_key: bool = False  # openai only
    cache_control: bool = False  # openai only
    # how this provider finishes another's cut answer (docs/recovery.md); None: by type
    continuation: Literal["auto", "prefill", "resume", "none"] | None = None
    prices: dict[str, PriceConfig] = Field(default_factory=dict)  # model glob -> this one's price

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not re.match(r"^(https?|socks4|socks5h?)://[^/\s]+", value):
            raise ValueError("must be an http://, https://, socks4:// or socks5:// URL")
        return value

    @model_validator(mode="after")
    def _keys_of_this_type(self) -> ProviderConfig:
        misplaced = _OPENAI_ONLY if self.type != "openai" else _ANTHROPIC_ONLY
        for key in misplaced:
            if key in self.model_fields_set:
                raise ValueError(f"{key} applies to type: {_other(self.type)} providers only")
        if self.type == "openai" and self.continuation in ("auto", "prefill"):
            raise ValueError(
                f"continuation: {self.continuation} needs an anthropic provider (an "
                "openai-format server cannot continue a final assistant message); use resume "
                "or none"
            )
        if self.type == "openai" and self.capabilities.server_tools not in (None, False, ()):
            raise ValueError(
                "capabilities.server_tools: an openai-format provider cannot run Anthropic "
                "server tools (requests with them go to a provider that can)"
            )
        return self

    @property
    def passthrough_auth(self) -> bool:
        return self.auth_value == "passthrough"

    @property
    def continues(self) -> str:
        """``continuation`` in force: auto for anthropic providers, none for openai ones."""
        if self.continuation is not None:
            return self.continuation
        return "auto" if self.type == "anthropic" else "none"

    @cached_property
    def accepts(self) -> Capabilities:
        """The capabilities in force: the type's defaults with the configured keys laid over."""
        given = self.capabilities.model_dump(exclude_none=True)
        return dataclasses.replace(DEFAULT_CAPABILITIES[self.type], **given)

    @cached_property
    def beta_filter(self) -> BetaFilter:
        return BetaFilter(self.betas.drop, self.betas.allow)

    @cached_property
    def body_options(self) -> BodyOptions:
        return BodyOptions(
            max_tokens=self.max_tokens,
            reasoning_effort=self.reasoning_effort,
            reasoning_history=self.reasoning_history,
            thinking=self.accepts.thinking,
            files=self.accepts.files,
            strip_billing_header=self.strip_billing_header,
            prompt_cache_key=self.prompt_cache_key,
            cache_control=self.cache_control,
            betas=self.beta_filter,
        )

    @cached_property
    def header_options(self) -> HeaderOptions:
        return HeaderOptions(betas=self.beta_filter)


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _other(kind: str) -> str:
    return "anthropic" if kind == "openai" else "openai"


class RouteEntry(_Frozen):
    provider: str
    model: str = "passthrough"
    priority: int = 1
    enabled: bool = True  # false: left out of the route (the original balancer's key)


# Request kinds a route rule can name; ``balance.kinds`` says how each is recognised.
RequestKind = Literal["background", "deep_thinking", "long_context", "web_search", "image"]
REQUEST_KINDS: tuple[RequestKind, ...] = typing.get_args(RequestKind)


class RuleWhen(_Frozen):
    """A route rule's conditions; every one given must hold (at least one is required)."""

    kind: RequestKind | None = None
    input_tokens_over: int | None = Field(default=None, ge=0)  # the local estimate
    model: str | None = Field(default=None, min_length=1)  # case-insensitive glob

    @model_validator(mode="after")
    def _some_condition(self) -> RuleWhen:
        if self.kind is None and self.input_tokens_over is None and self.model is None:
            raise ValueError("give at least one condition: kind, input_tokens_over or model")
        return self

    def matches_model(self, model: str) -> bool:
        return self.model is None or fnmatch.fnmatchcase(model.lower(), self.model.lower())


class RouteRule(_Frozen):
    """``{when: {...}, use: <a key of model_routes>}``: the first rule that matches picks the
    route; a request no rule matches is routed by its model name."""

    when: RuleWhen
    use: str = Field(min_length=1)


class TimeoutPhase(_Frozen):
    connect_timeout: float = Field(default=30, gt=0)
    read_timeout: float = Field(default=120, gt=0)
    pool_timeout: float = Field(default=30, gt=0)


class CachingTimeouts(_Frozen):
    deduplication_timeout: float = Field(default=180, gt=0)


class Timeouts(_Frozen):
    streaming: TimeoutPhase = TimeoutPhase()
    non_streaming: TimeoutPhase = TimeoutPhase()
    first_event_timeout: float = Field(default=60, gt=0)
    caching: CachingTimeouts = CachingTimeouts()


class Deduplication(_Frozen):
    enabled: bool = True
    include_max_tokens_in_signature: bool = False
    sse_error_cleanup_delay: float = Field(default=3, ge=0)
    # ccbalancer additions
    orphan_grace: float = Field(default=10, ge=0)  # upstream kept this long after all clients left
    max_stream_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # per in-flight event log


class Cache(_Frozen):
    ttl: float = Field(default=120, ge=0)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)


class Auth(_Frozen):
    enabled: bool = False
    api_key: str | list[str] = ""
    exempt_paths: tuple[str, ...] = ("/health",)

    @property
    def keys(self) -> tuple[str, ...]:
        keys = [self.api_key] if isinstance(self.api_key, str) else list(self.api_key)
        return tuple(k for k in keys if k)

    @model_validator(mode="after")
    def _key_when_enabled(self) -> Auth:
        if self.enabled and not self.keys:
            raise ValueError("auth.enabled is true but auth.api_key is empty")
        return self


class Redis(_Frozen):
    url: str = ""
    # Each shared request in flight holds one connection at a time (a follower's blocking read,
    # a leader's mirror batch); a few more serve the breaker channel.
    max_connections: int = Field(default=1024, ge=1)
    pool_timeout: float = Field(default=1.0, gt=0)  # wait this long for a free connection


class History(_Frozen):
    path: str = "logs/history.sqlite3"
    retention_days: float = Field(default=14, ge=0)
    enabled: bool = True


class Recovery(_Frozen):
    """Mid-stream recovery (docs/recovery.md): a cut answer finished on another provider."""

    enabled: bool = True
    max_attempts: int = Field(default=2, ge=1)  # continuations per answer
    hold_tool_input: bool = False  # hold each tool call until complete, so a cut can redo it


class Settings(_Frozen):
    selection_strategy: Literal[
        "priority", "round_robin", "weighted", "random", "least_latency"
    ] = "priority"
    failure_cooldown: float = Field(default=300, ge=0)
    unhealthy_threshold: int = Field(default=2, ge=1)
    unhealthy_reset_on_success: bool = True
    unhealthy_reset_timeout: float = Field(default=300, ge=0)
    sticky_provider_duration: float = Field(default=300, ge=0)
    unhealthy_http_codes: tuple[int, ...] = DEFAULT_UNHEALTHY_CODES
    unhealthy_exception_patterns: tuple[str, ...] = ("connection", "timeout", "ssl", "network")
    unhealthy_response_body_patterns: tuple[str, ...] = ()
    timeouts: Timeouts = Timeouts()
    deduplication: Deduplication = Deduplication()
    cache: Cache = Cache()
    auth: Auth = Auth()
    admin_api_key: str = ""
    redis: Redis = Redis()
    history: History = History()
    recovery: Recovery = Recovery()
    # hedged first token: start the next candidate when the first has not committed within
    # this many seconds (0 = off); per route (a model_routes key) in hedge_after_routes
    hedge_after: float = Field(default=0, ge=0)
    hedge_after_routes: dict[str, float] = Field(default_factory=dict)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_file_path: str = "logs/ccbalancer.jsonl"
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_retry_after: float = Field(default=600, gt=0)  # cap on cooldown extension by retry-after
    drain_timeout: float = Field(default=30, ge=0)
    client_write_timeout: float = Field(default=60, gt=0)  # a client stalled this long is dropped
    client_read_timeout: float = Field(default=30, gt=0)  # a request body stalled this long: 400
    client_body_timeout: float = Field(default=300, gt=0)  # a whole body must arrive within this
    client_header_timeout: float = Field(default=30, gt=0)  # request line + headers within this
    client_idle_timeout: float = Field(default=75, gt=0)  # an idle keep-alive connection closes
    # bytes all request bodies in flight may cost together, parsed (None: 4 x max_body_bytes)
    max_body_memory: int | None = Field(default=None, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("unhealthy_response_body_patterns")
    @classmethod
    def _regexes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc
        return value

    def hedge_after_for(self, route_key: str | None) -> float:
        if route_key is not None and route_key in self.hedge_after_routes:
            return self.hedge_after_routes[route_key]
        return self.hedge_after

    @property
    def body_memory_limit(self) -> int:
        return self.max_body_memory or 4 * self.max_body_bytes

    @property
    def admin_keys(self) -> tuple[str, ...]:
        return (self.admin_api_key,) if self.admin_api_key else self.auth.keys

    @cached_property
    def body_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p, re.IGNORECASE) for p in self.unhealthy_response_body_patterns)


class Config(_Frozen):
    providers: tuple[ProviderConfig, ...] = Field(min_length=1)
    model_routes: dict[str, tuple[RouteEntry, ...]] = Field(default_factory=dict)
    route_rules: tuple[RouteRule, ...] = ()
    settings: Settings = Settings()
    clients: tuple[ClientConfig, ...] = ()  # named client keys and their limits (issue 18)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)  # model glob -> price
    source: str = Field(default="<memory>", exclude=True)

    @field_validator("model_routes")
    @classmethod
    def _without_disabled(
        cls, routes: dict[str, tuple[RouteEntry, ...]]
    ) -> dict[str, tuple[RouteEntry, ...]]:
        """Disabled entries are left out; a route left empty is dropped, so a later glob
        matches instead (as in the original balancer)."""
        kept = {key: tuple(e for e in entries if e.enabled) for key, entries in routes.items()}
        return {key: entries for key, entries in kept.items() if entries or not routes[key]}

    def reference_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """(location, reason) for names that do not resolve; empty when consistent."""
        problems: list[tuple[tuple[int | str, ...], str]] = []
        seen: set[str] = set()
        for i, provider in enumerate(self.providers):
            if provider.name in seen:
                problems.append((("providers", i, "name"), f"duplicate name {provider.name!r}"))
            seen.add(provider.name)
        for pattern, entries in self.model_routes.items():
            for j, entry in enumerate(entries):
                if entry.provider not in seen:
                    reason = f"unknown provider {entry.provider!r}"
                    problems.append((("model_routes", pattern, j, "provider"), reason))
        for i, rule in enumerate(self.route_rules):
            if rule.use not in self.model_routes:
                known = ", ".join(repr(key) for key in self.model_routes) or "none"
                reason = f"unknown route {rule.use!r}: use names a key of model_routes ({known})"
                problems.append((("route_rules", i, "use"), reason))
        problems += self._client_problems()
        return problems

    def _client_problems(self) -> list[tuple[tuple[int | str, ...], str]]:
        """Two clients with one name, or one key (the digest tells: a key may be given as
        itself or as its SHA-256), cannot be told apart."""
        problems: list[tuple[tuple[int | str, ...], str]] = []
        names: set[str] = set()
        digests = {_sha256(key): "settings.auth.api_key" for key in self.settings.auth.keys}
        for i, client in enumerate(self.clients):
            if client.name in names:
                problems.append((("clients", i, "name"), f"duplicate name {client.name!r}"))
            names.add(client.name)
            digest = client.key_sha256 or _sha256(client.key)
            field = "key_sha256" if client.key_sha256 else "key"
            if digest in digests:
                problems.append((("clients", i, field), f"the same key as {digests[digest]}"))
            digests.setdefault(digest, f"client {client.name!r}")
        return problems

    @property
    def inbound_auth(self) -> bool:
        """Clients need a key: configuring ``clients`` turns inbound auth on."""
        return self.settings.auth.enabled or bool(self.clients)

    @cached_property
    def passthrough(self) -> bool:
        """Some provider receives the client's own credential (``auth_value: passthrough``)."""
        return any(p.passthrough_auth for p in self.providers)

    @cached_property
    def providers_by_name(self) -> dict[str, ProviderConfig]:
        return {p.name: p for p in self.providers}

    @cached_property
    def _route_index(self) -> tuple[dict[str, str], list[tuple[str, str]]]:
        exact: dict[str, str] = {}
        globs: list[tuple[str, str]] = []
        for key in self.model_routes:
            if "*" in key or "?" in key:
                globs.append((key.lower(), key))
            else:
                exact[key.lower()] = key
        return exact, globs

    def route_for(self, model: str) -> tuple[str, tuple[RouteEntry, ...]] | None:
        """The route key and its entries for ``model``: exact key, then globs in file order."""
        exact, globs = self._route_index
        lowered = model.lower()
        if lowered in exact:
            key = exact[lowered]
            return key, self.model_routes[key]
        for pattern, key in globs:
            if fnmatch.fnmatchcase(lowered, pattern):
                return key, self.model_routes[key]
        return None

    def models(self) -> list[str]:
        """Model names the routes can serve (globs are listed as written)."""
        return list(self.model_routes)
