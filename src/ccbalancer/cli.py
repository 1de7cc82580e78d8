"""The command line: argv -> the command's module (``commands/``, ``mock/``, ``bench/``).

The only reader of argv. Every command returns its exit status; a reader that closes our stdout
early (``ccbalancer check | head``) ends the command quietly instead of with a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from ccbalancer import __version__

# 128 + SIGPIPE: what a shell reports for a writer whose reader went away (`yes | head`).
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    from ccbalancer import mock
    from ccbalancer.bench import cli as bench
    from ccbalancer.commands import check, init, keys, serve, stats, usage
    from ccbalancer.mock import demo

    parser = argparse.ArgumentParser(
        prog="ccbalancer", description="Streaming load balancer for Claude Code"
    )
    parser.add_argument("--version", action="version", version=f"ccbalancer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = (
        ("serve", "run the balancer", serve),
        ("demo", "run with built-in simulated providers (no keys, no network)", demo),
        ("check", "validate the config and print the routing table", check),
        ("init", "write a commented starter config", init),
        ("mock", "run the simulated providers alone", mock),
        ("stats", "per-provider summary from the request history", stats),
        ("usage", "tokens and cost per client, model, provider or session (history)", usage),
        ("keys", "make a client key: `keys new NAME` prints it and its config lines", keys),
        ("bench", "load generator: direct vs through the balancer", bench),
    )
    for name, summary, module in commands:
        command = sub.add_parser(name, help=summary)
        module.add_arguments(command)
        command.set_defaults(func=module.run)
    return parser


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            args = build_parser().parse_args(argv)  # --help and --version print here
            code = int(args.func(args))
        finally:
            sys.stdout.flush()  # a closed pipe shows up here, not in the interpreter's exit
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return code
