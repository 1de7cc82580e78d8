"""Balancer variants: the bench's balancer config with a YAML mapping merged in, measured beside
the plain balancer in the same invocation (``--variant NAME=YAML``, ``--variant-header
NAME=Header:Value``).

A feature's cost is only comparable within one run on this shared machine (its speed drifts by
several times between days), so "recovery on and off" or "with clients configured and
without" are variants of one invocation, each reported with its ratio to the plain balancer.
Every variant is checked against the config schema before anything starts, so a typo fails in
a second, not after the plain runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ccbalancer.config.load import parse_config
from ccbalancer.errors import ConfigError

# names the report uses for its own runs and counters (report.merge sums "completeness" ...)
RESERVED = frozenset({
    "direct", "balancer", "nginx", "added", "one_client", "completeness", "errors",
    "shared_roles", "run", "vs_balancer", "vs_nginx",
})  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_HEADER = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token


class VariantError(ValueError):
    """A ``--variant`` or ``--variant-header`` argument the bench cannot use."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One extra balancer run per repeat: ``overlay`` merged into the bench's config, and
    ``headers`` added to (or replacing) the bench's request headers."""

    name: str
    text: str  # the YAML as given, for the report
    overlay: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    def config(self, base: Mapping[str, Any]) -> dict[str, Any]:
        return deep_merge(base, self.overlay)

    def describe(self) -> dict[str, Any]:
        """For the JSON; header values are left out (a variant may carry a client key)."""
        return {"name": self.name, "yaml": self.text, "headers": [h for h, _ in self.headers]}


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: mappings merge key by key, recursively; any other value
    (lists included) in ``overlay`` replaces the one in ``base``, so a variant that changes a
    provider restates the ``providers`` list (``${BENCH_MOCK_URL}`` names the mock). Neither
    input is changed."""
    out = dict(base)
    for key, value in overlay.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = deep_merge(below, value)
        else:
            out[key] = value
    return out


def _split(spec: str, flag: str) -> tuple[str, str]:
    name, sep, rest = spec.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise VariantError(
            f"{flag} {spec!r}: expected NAME=..., NAME of letters, digits, '_', '.', '-'"
        )
    return name, rest


def parse(
    specs: list[str] | None,
    header_specs: list[str] | None,
    base: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> list[Variant]:
    """The variants in command-line order, each validated merged into ``base`` (with ``env``
    for its ``${ENV}`` references: the balancer's environment)."""
    overlays: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for spec in specs or []:
        name, text = _split(spec, "--variant")
        if name in RESERVED or name in overlays:
            raise VariantError(f"--variant {name}: the name is taken; choose another")
        try:
            overlay = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise VariantError(f"--variant {name}: not valid YAML: {exc}") from None
        if not isinstance(overlay, Mapping):
            raise VariantError(f"--variant {name}: the YAML must be a mapping (settings: ...)")
        overlays[name] = (text, overlay)
    headers: dict[str, list[tuple[str, str]]] = {name: [] for name in overlays}
    for spec in header_specs or []:
        name, header = _split(spec, "--variant-header")
        field, sep, value = header.partition(":")
        if name not in headers:
            raise VariantError(f"--variant-header: no --variant named {name!r}")
        if not sep or not _HEADER.fullmatch(field.strip()):
            raise VariantError(f"--variant-header {name}=...: expected NAME=Header:Value")
        headers[name].append((field.strip().lower(), value.strip()))
    variants = [
        Variant(name, text, overlay, tuple(headers[name]))
        for name, (text, overlay) in overlays.items()
    ]
    for variant in variants:
        try:
            parse_config(yaml.safe_dump(variant.config(base)), f"--variant {variant.name}", env=env)
        except ConfigError as exc:
            raise VariantError(str(exc)) from None
    return variants
