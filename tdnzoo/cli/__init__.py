"""The ``tdnzoo`` command. Each subcommand lives in its own module with a ``register`` function."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import TdnzooError

__all__ = ["build_parser", "main"]

# Modules under tdnzoo.cli, each registering one or more subcommands, in help order.
COMMAND_MODULES = (
    "models_cmd", "convert_cmd", "hub_cmd", "train_cmd", "eval_cmd", "predict_cmd", "export_cmd", "synth_cmd",
    "bench_cmd", "backbones_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdnzoo", description="TSN, TSM and TDN video models on timm backbones.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except TdnzooError as exc:
        print(f"tdnzoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
