"""Loading a config file: YAML, ``${ENV}`` expansion, legacy keys, errors with file and key.

Every problem is reported as a ``ConfigError`` naming the file, the dotted key and the reason,
so ``serve`` and a reload can refuse a bad file before anything changes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ccbalancer.config.schema import Config
from ccbalancer.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# Keys of the original balancer's config.yaml that ccbalancer does not use. They are accepted
# (so an existing file keeps working) and reported once as a warning.
LEGACY_SETTINGS = frozenset({
    "reload", "reload_includes", "idle_recovery_interval", "client_disconnect_watchdog",
    "failover_error_types", "failover_http_codes", "log_color", "app_name", "app_version",
    "oauth", "testing",
})  # fmt: skip
LEGACY_TIMEOUTS = frozenset({"health_check"})
LEGACY_PHASE = frozenset({"chunk_timeout", "first_chunk_timeout", "processing_timeout"})
LEGACY_CACHING = frozenset({"cache_operation_timeout"})
LEGACY_PROVIDER = frozenset({"streaming_mode"})


def expand_env(value: Any, env: Mapping[str, str], key: str, path: str) -> Any:
    """Expand ``${NAME}`` and ``${NAME:-default}`` in every string value."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(path, key, f"environment variable {name} is not set")

        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, f"{key}.{k}" if key else str(k), path) for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, f"{key}[{i}]", path) for i, v in enumerate(value)]
    return value


def _strip_legacy(raw: dict[str, Any], warn: Callable[[str], None]) -> None:
    def pop(mapping: Any, names: frozenset[str], prefix: str) -> None:
        if not isinstance(mapping, dict):
            return
        for name in sorted(names & set(mapping)):
            del mapping[name]
            warn(f"{prefix}{name}")

    settings = raw.get("settings")
    pop(settings, LEGACY_SETTINGS, "settings.")
    if isinstance(settings, dict):
        timeouts = settings.get("timeouts")
        pop(timeouts, LEGACY_TIMEOUTS, "settings.timeouts.")
        if isinstance(timeouts, dict):
            for phase in ("streaming", "non_streaming"):
                pop(timeouts.get(phase), LEGACY_PHASE, f"settings.timeouts.{phase}.")
            pop(timeouts.get("caching"), LEGACY_CACHING, "settings.timeouts.caching.")
    providers = raw.get("providers")
    if isinstance(providers, list):
        for i, provider in enumerate(providers):
            pop(provider, LEGACY_PROVIDER, f"providers[{i}].")


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(
    text: str,
    path: str = "<memory>",
    env: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Config:
    """Parse and validate config text. Raises ``ConfigError``; never returns a partial config."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(
            path, "", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}"
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "", "the file must be a mapping with a 'providers' list")
    legacy: list[str] = []
    _strip_legacy(raw, legacy.append)
    if legacy and warn is not None:
        warn(
            "keys of the original balancer that ccbalancer does not use were ignored: "
            + ", ".join(legacy)
        )
    raw = expand_env(raw, os.environ if env is None else env, "", path)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _dotted(tuple(first["loc"]))
        reason = first["msg"]
        if first["type"] == "extra_forbidden":
            reason = "unknown key (check for a typo)"
        reason = reason.removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        if more:
            reason += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(path, key or "(top level)", reason) from None
    problems = config.reference_problems()
    if problems:
        raise ConfigError(path, problems[0][0], problems[0][1])
    return config.model_copy(update={"source": path})


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(p), "", "file not found (create one with 'ccbalancer init')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc}") from None
    return parse_config(text, str(p), env, warn)
