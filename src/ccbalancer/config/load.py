"""Loading a config file: YAML, ``${ENV}`` expansion, legacy keys, every problem at once.

A file that cannot be used raises one ``ConfigError`` listing every problem found, each with
its dotted key, its line and a reason in our words (``problems.py``), so ``serve`` and a reload
refuse a bad file before anything changes. Things that work but will surprise — keys of the
original balancer, a credential whose variable was unset — go to ``warn``. Relative paths in
the file (``history.path``, ``log_file_path``) are relative to the file's folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ccbalancer.config.legacy import strip_legacy
from ccbalancer.config.problems import Loc, Locator, in_file_order, problems_of
from ccbalancer.config.schema import Config
from ccbalancer.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Warn = Callable[[str], None]


class _Expansion:
    """``${NAME}`` / ``${NAME:-default}`` expansion that remembers which variables made which
    value (to explain an empty credential) and which were missing (problems, not exceptions,
    so that every one is reported)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.origins: dict[Loc, list[tuple[str, bool]]] = {}  # loc -> [(name, was set)]
        self.unset: list[tuple[Loc, str]] = []

    def expand(self, value: Any, loc: Loc = ()) -> Any:
        if isinstance(value, str):

            def sub(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                self.origins.setdefault(loc, []).append((name, name in self.env))
                if name in self.env:
                    return self.env[name]
                if default is None:
                    self.unset.append((loc, f"environment variable {name} is not set"))
                    return ""
                return default

            return _ENV.sub(sub, value)
        if isinstance(value, dict):
            return {k: self.expand(v, (*loc, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [self.expand(v, (*loc, i)) for i, v in enumerate(value)]
        return value


def _empty_credentials(config: Config, expansion: _Expansion, locator: Locator) -> list[str]:
    """A warning for each enabled provider whose ``auth_value`` came out of variables empty."""
    out = []
    for i, provider in enumerate(config.providers):
        loc: Loc = ("providers", i, "auth_value")
        if not provider.enabled or provider.auth_value or loc not in expansion.origins:
            continue
        why = " and ".join(
            f"${{{name}}} is {'set but empty' if was_set else 'not set'}"
            for name, was_set in expansion.origins[loc]
        )
        where = locator.problem(loc, "")
        line = f"line {where.line}: " if where.line is not None else ""
        out.append(
            f"{line}{where.key} is empty because {why}: every request to {provider.name} will "
            "fail upstream (401) until it is set (or set enabled: false)"
        )
    return out


def parse_config(
    text: str,
    path: str = "<memory>",
    env: Mapping[str, str] | None = None,
    warn: Warn | None = None,
) -> Config:
    """Parse and validate config text. Raises ``ConfigError``; never returns a partial config."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = f"column {mark.column + 1}: " if mark is not None else ""
        reason = f"not valid YAML: {column}{getattr(exc, 'problem', exc)}"
        raise ConfigError(path, "", reason, line=line) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, "", "the file must be a mapping with a 'providers' list")
    strip_legacy(raw, warn or (lambda _: None))
    expansion = _Expansion(os.environ if env is None else env)
    raw = expansion.expand(raw)
    locator = Locator(raw, text)
    problems = [locator.problem(loc, reason) for loc, reason in expansion.unset]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        unset = {p.key for p in problems}  # an unset variable explains its key's other errors
        problems += [p for p in problems_of(exc, locator) if p.key not in unset]
        raise ConfigError(path, "", "", problems=in_file_order(problems)) from None
    problems += [locator.problem(loc, reason) for loc, reason in config.reference_problems()]
    if problems:
        raise ConfigError(path, "", "", problems=in_file_order(problems))
    if warn is not None:
        for message in _empty_credentials(config, expansion, locator):
            warn(message)
    return config.model_copy(update={"source": path})


def anchored(config: Config, folder: Path) -> Config:
    """``config`` with its relative file paths made relative to ``folder`` (the config file's)."""

    def resolve(value: str) -> str:
        if not value:
            return value
        target = Path(value).expanduser()
        return str(target if target.is_absolute() else folder / target)

    settings = config.settings
    history = settings.history.model_copy(update={"path": resolve(settings.history.path)})
    settings = settings.model_copy(
        update={"history": history, "log_file_path": resolve(settings.log_file_path)}
    )
    return config.model_copy(update={"settings": settings})


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    warn: Warn | None = None,
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
    return anchored(parse_config(text, str(p), env, warn), p.absolute().parent)
