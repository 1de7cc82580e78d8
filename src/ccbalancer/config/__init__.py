"""Configuration: schema (pydantic, frozen) and loading (YAML, ${ENV} expansion, legacy keys)."""

from ccbalancer.config.load import load_config, parse_config
from ccbalancer.config.schema import Config, ProviderConfig, RouteEntry, Settings

__all__ = ["Config", "ProviderConfig", "RouteEntry", "Settings", "load_config", "parse_config"]
