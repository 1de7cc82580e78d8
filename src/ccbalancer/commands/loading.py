"""Which config file a command reads, and how its problems and warnings reach the terminal."""

from __future__ import annotations

import os
import sys

from ccbalancer.config.load import load_config
from ccbalancer.config.schema import Config
from ccbalancer.errors import ConfigError

DEFAULT_CONFIG = "config.yaml"


def config_path(arg: str | None) -> str:
    """``-c`` if given, else ``$CCBALANCER_CONFIG``, else ``./config.yaml``."""
    return arg or os.environ.get("CCBALANCER_CONFIG") or DEFAULT_CONFIG


def load_or_exit(path: str) -> Config:
    """The validated config; warnings go to stderr as they are found, and when the file cannot
    be used, every problem, then exit status 2."""

    def warn(text: str) -> None:
        print(f"ccbalancer: warning: {path}: {text}", file=sys.stderr)

    try:
        return load_config(path, warn=warn)
    except ConfigError as error:
        print(f"ccbalancer: invalid config: {error}", file=sys.stderr)
        raise SystemExit(2) from None
