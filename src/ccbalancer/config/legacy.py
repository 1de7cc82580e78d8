"""Keys of the original balancer's config.yaml that ccbalancer accepts but does not use.

An existing file (including the ones the original's own test framework writes) keeps working:
these keys are removed before validation and reported in one warning, each with what to use
instead or why it has no meaning here. Every other unknown key stays an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# key -> why it is ignored / what to use instead ("" when its name says enough)
SETTINGS: dict[str, str] = {
    "reload": "the config reloads by itself when the file changes",
    "reload_includes": "the config reloads by itself when the file changes",
    "idle_recovery_interval": "use unhealthy_reset_timeout",
    "client_disconnect_watchdog": "a client that leaves is noticed at once",
    "failover_error_types": "use unhealthy_response_body_patterns",
    "failover_http_codes": "use unhealthy_http_codes",
    "log_color": "",
    "app_name": "",
    "app_version": "",
    "oauth": "OAuth login is not supported; auth_value: passthrough forwards the client's key",
    "testing": "",
    "enable_detailed_request_logging": "use log_level: DEBUG",
    "request_timeout": "use timeouts.streaming.read_timeout",
}
TIMEOUTS: dict[str, str] = {"health_check": "there are no active health checks"}
PHASE: dict[str, str] = {
    "chunk_timeout": "use read_timeout",
    "first_chunk_timeout": "use timeouts.first_event_timeout",
    "processing_timeout": "",
}
CACHING: dict[str, str] = {"cache_operation_timeout": ""}
PROVIDER: dict[str, str] = {
    "streaming_mode": "upstream calls always stream",
    "priority": "no meaning here: the order is model_routes[].priority",
    "big_model": "use model_routes",
    "small_model": "use model_routes",
}


def strip_legacy(raw: dict[str, Any], warn: Callable[[str], None]) -> None:
    """Remove the legacy keys from ``raw`` in place; ``warn`` once with all of them."""
    found: dict[str, str] = {}  # dotted key -> hint, in file order
    provider_hits: dict[str, int] = {}  # provider key -> in how many providers

    def pop(mapping: Any, table: dict[str, str], prefix: str) -> None:
        if not isinstance(mapping, dict):
            return
        for name in [k for k in mapping if k in table]:
            del mapping[name]
            found[f"{prefix}{name}"] = table[name]

    settings = raw.get("settings")
    pop(settings, SETTINGS, "settings.")
    if isinstance(settings, dict):
        timeouts = settings.get("timeouts")
        pop(timeouts, TIMEOUTS, "settings.timeouts.")
        if isinstance(timeouts, dict):
            for phase in ("streaming", "non_streaming"):
                pop(timeouts.get(phase), PHASE, f"settings.timeouts.{phase}.")
            pop(timeouts.get("caching"), CACHING, "settings.timeouts.caching.")
    providers = raw.get("providers")
    for provider in providers if isinstance(providers, list) else ():
        if isinstance(provider, dict):
            for name in [k for k in provider if k in PROVIDER]:
                del provider[name]
                provider_hits[name] = provider_hits.get(name, 0) + 1
    for name, count in provider_hits.items():
        where = f"in {count} provider{'s' if count > 1 else ''}"
        found[f"providers[].{name}"] = f"{where}; {PROVIDER[name]}"
    if found:
        listed = "".join(f"\n  {key}: {why}" if why else f"\n  {key}" for key, why in found.items())
        warn(f"keys of the original balancer that ccbalancer does not use were ignored:{listed}")
