"""``ccbalancer serve``: the balancer on the configured address until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ccbalancer.commands.loading import config_path, load_or_exit
from ccbalancer.server import ListenError, install_uvloop, serve_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", help="config file (default: $CCBALANCER_CONFIG or ./config.yaml)"
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)


def run(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    config = load_or_exit(path)
    host = args.host or config.settings.host
    port = args.port if args.port is not None else config.settings.port
    install_uvloop()
    try:
        asyncio.run(serve_app(config, path, host, port))
    except ListenError as error:
        print(f"ccbalancer: {error}", file=sys.stderr)
        return 2
    return 0
