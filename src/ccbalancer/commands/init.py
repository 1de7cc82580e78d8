"""``ccbalancer init``: write the commented starter config that ships with the package."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from ccbalancer.commands.loading import DEFAULT_CONFIG


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    parser.add_argument("--force", action="store_true")


def run(args: argparse.Namespace) -> int:
    target = Path(args.path)
    if target.exists() and not args.force:
        print(f"ccbalancer: {target} exists; use --force to overwrite", file=sys.stderr)
        return 1
    text = resources.files("ccbalancer.config").joinpath("starter.yaml").read_text(encoding="utf-8")
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}; edit it, then: ccbalancer check -c {target}")
    return 0
