"""``ccbalancer check``: validate the config, print the routing table, optionally probe."""

from __future__ import annotations

import argparse
import asyncio
import time

from ccbalancer.accounting.prices import PRICES_TAKEN, PriceBook
from ccbalancer.balance import rules
from ccbalancer.commands.loading import config_path, load_or_exit
from ccbalancer.config.schema import REQUEST_KINDS, Config, ProviderConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config")
    parser.add_argument(
        "--probe", action="store_true", help="send one tiny request to each provider"
    )


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_or_exit(path)
    print(f"{path}: OK ({len(config.providers)} providers, {len(config.model_routes)} routes)")
    print("\nproviders:")
    for p in config.providers:
        state = "enabled" if p.enabled else "disabled"
        auth = "passthrough" if p.passthrough_auth else (p.auth_type if p.auth_value else "none")
        proxy = " via proxy" if p.proxy else ""
        print(f"  {p.name:<20} {p.type:<9} {state:<8} auth={auth}{proxy}  weight={p.weight:g}")
        print(f"  {'':<20} accepts: {_accepts(p)}")
        options = _request_options(p)
        if options:
            print(f"  {'':<20} options: {options}")
    strategy = config.settings.selection_strategy
    print(f"\nroutes (strategy: {strategy}; exact keys first, then globs in file order):")
    for key, entries in config.model_routes.items():
        targets = ", ".join(
            f"{e.priority}:{e.provider}({e.model})"
            for e in sorted(entries, key=lambda e: e.priority)
        )
        print(f"  {key:<24} -> {targets}")
    if config.route_rules:
        _print_rules(config)
    _clients(config)
    if args.probe:
        return asyncio.run(_probe(config))
    return 0


def _print_rules(config: Config) -> None:
    """The route rules in order, then where a request of each kind goes (issue 17)."""
    print("\nroute rules (first match wins; no match: the model's route above):")
    for index, rule in enumerate(config.route_rules):
        print(f"  {rules.rule_label(index):<16} {rules.conditions(rule):<40} -> {rule.use}")
    print("\nrequest kinds (docs/routing.md says how each is recognised):")
    for kind in (*REQUEST_KINDS, None):
        steps = rules.resolution(config, kind)
        parts = [
            f"{rule.use} ({rules.rule_label(index)}{', if ' + still if still else ''})"
            for index, rule, still in steps
        ]
        if not steps or steps[-1][2]:
            parts.append("the model's route")
        label = kind or "(no kind)"
        print(f"  {label:<16} -> {'; else '.join(parts)}")


_LIMITS = (
    "requests_per_minute", "max_concurrency", "tokens_per_day", "usd_per_day", "usd_per_month",
)  # fmt: skip


def _clients(config: Config) -> None:
    """The clients (by name: never a key) and every routed model without a price."""
    if config.clients:
        print("\nclients (inbound auth is on; settings.auth.api_key keys are 'anonymous'):")
        for client in config.clients:
            key = "key_sha256" if client.key_sha256 else "key"
            models = ", ".join(client.models) if client.models is not None else "every model"
            limits = ", ".join(
                f"{name} {value:g}"
                for name in _LIMITS
                if (value := getattr(client, name)) is not None
            )
            print(f"  {client.name:<20} {key:<10} models: {models}; limits: {limits or 'none'}")
    book = PriceBook(config)
    missing = []
    for key, entries in config.model_routes.items():
        for entry in entries:
            provider = config.providers_by_name.get(entry.provider)
            glob = "*" in key or "?" in key
            if provider is None or not provider.enabled or (entry.model == "passthrough" and glob):
                continue  # a glob passed through: the model is whatever clients ask for
            model = key if entry.model == "passthrough" else entry.model
            if book.price(entry.provider, model) is None:
                missing.append(f"{model} at {entry.provider} (route {key})")
    for where in dict.fromkeys(missing):
        print(
            f"warning: no price for {where}: its answers cost $0 in the usage figures, and "
            "clients with a money limit are refused it; add it under prices:"
        )
    if missing or config.clients:
        print(f"(built-in prices: Anthropic's, taken {PRICES_TAKEN})")


def _accepts(provider: ProviderConfig) -> str:
    """What a provider takes (its capabilities, defaults per type laid under the config)."""
    caps = provider.accepts
    tools = caps.server_tools
    server = ("all" if tools else "none") if isinstance(tools, bool) else ", ".join(tools)
    yes_no = {True: "yes", False: "no"}
    return (
        f"images {yes_no[caps.images]}, files (PDF) {yes_no[caps.files]}, "
        f"server tools {server}, thinking {yes_no[caps.thinking]}"
    )


def _request_options(provider: ProviderConfig) -> str:
    shown = []
    if provider.betas.drop:
        shown.append("betas drop " + ", ".join(provider.betas.drop))
    if provider.betas.allow is not None:
        shown.append("betas allow " + ", ".join(provider.betas.allow))
    for key in ("strip_billing_header", "prompt_cache_key", "cache_control"):
        if getattr(provider, key):
            shown.append(key)
    return "; ".join(shown)


async def _probe(config: Config) -> int:
    from ccbalancer.errors import UpstreamError
    from ccbalancer.runtime import Runtime

    runtime = Runtime(config, history=False)
    failures = 0
    print("\nprobe (one tiny request per provider):")
    try:
        for p in config.providers:
            if not p.enabled:
                print(f"  {p.name:<20} skipped (disabled)")
                continue
            model = next(
                (
                    e.model
                    for entries in config.model_routes.values()
                    for e in entries
                    if e.provider == p.name and e.model != "passthrough"
                ),
                "claude-haiku-4-5",
            )
            dialect = runtime.dialects[p.type]
            body = {
                "model": model,
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "ping"}],
            }
            credential = "" if p.passthrough_auth else p.auth_value
            headers = dialect.headers({}, credential, p.auth_type, p.header_options)
            headers.update(p.headers)
            started = time.perf_counter()
            try:
                resp = await runtime.client.open(
                    p,
                    dialect.url(p.base_url, ""),
                    headers,
                    dialect.body(body, model, p.body_options),
                    config.settings.timeouts.non_streaming,
                )
                status = resp.status
                answer = await resp.body(4096)
                resp.close()
                took = (time.perf_counter() - started) * 1000
                detail = "" if status == 200 else " " + dialect.error(status, answer)[1][:80]
                print(f"  {p.name:<20} HTTP {status}  {took:7.1f} ms{detail}")
                failures += status != 200
            except UpstreamError as error:
                print(f"  {p.name:<20} FAILED  {error.short}")
                failures += 1
    finally:
        await runtime.client.close()
    return 1 if failures else 0
