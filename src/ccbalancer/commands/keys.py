"""``ccbalancer keys new NAME``: a fresh client key, shown once, and the config lines to paste.

The config needs only the key's SHA-256 (``key_sha256``), so the file never holds the key and
the balancer can check it without knowing it. The key itself is printed here and nowhere
else: whoever runs this gives it to the person it is for.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

from pydantic import ValidationError

from ccbalancer.config.clients import ClientConfig

PREFIX = "ccb-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    new = actions.add_parser("new", help="make a key for a new client and print its config lines")
    new.add_argument("name", help="the client's name, as logs, metrics and the dashboard show it")


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def run(args: argparse.Namespace) -> int:
    key = new_key()
    digest = hashlib.sha256(key.encode()).hexdigest()
    try:
        ClientConfig(name=args.name, key_sha256=digest)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        print(f"ccbalancer keys: name {args.name!r}: {reason}", file=sys.stderr)
        return 2
    print(
        f"""New key for client {args.name!r}. It is shown only now: the config keeps its SHA-256.

    {key}

Give it to {args.name}; in the shell where they run Claude Code:

    export ANTHROPIC_BASE_URL=http://BALANCER_HOST:9090
    export ANTHROPIC_API_KEY={key}

Add these lines to the config (under one top-level clients: list); a running balancer picks
them up on its own:

clients:
  - name: {args.name}
    key_sha256: {digest}
    # models: ["claude-sonnet-*", "claude-haiku-*"]   # globs; leave out for every model
    # usd_per_day: 20                                 # also usd_per_month, tokens_per_day,
    # requests_per_minute: 60                         # max_concurrency"""
    )
    return 0
