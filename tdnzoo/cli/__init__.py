"""The ``tdnzoo`` command. Each subcommand lives in its own module with a ``register`` function.

Errors a user can fix (a bad value, a missing file, an unknown model, weights that do not fit) are
reported here, once for every command, as ``tdnzoo <command>: error: <message>`` on stderr with exit
status 2; argparse's own errors take the same one-line form (shared value checks: :mod:`._args`). A
closed output pipe ends quietly with status 141. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

from ..errors import TdnzooError

__all__ = ["USER_ERRORS", "build_parser", "iter_commands", "main"]

# Modules under tdnzoo.cli, each registering one or more subcommands, in help order.
COMMAND_MODULES = (
    "models_cmd", "convert_cmd", "hub_cmd", "train_cmd", "eval_cmd", "predict_cmd", "export_cmd", "synth_cmd",
    "bench_cmd", "backbones_cmd",
)
# What a user's input can cause: bad values (ValueError), files that are missing or unwritable (OSError),
# and tdnzoo's own errors (unknown models, damaged or mismatched weights, undecodable data).
USER_ERRORS = (TdnzooError, ValueError, OSError)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line like the commands' own (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def iter_commands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``(command path, parser)`` of every runnable subcommand (``'list'``, ``'bench accuracy'``, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                if sub.get_default("func") is not None:
                    yield sub.prog.removeprefix(f"{parser.prog.split()[0]} "), sub
                yield from iter_commands(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``tdnzoo`` parser with every subcommand; each records its command path for error messages."""
    parser = _Parser(prog="tdnzoo", description="TSN, TSM and TDN video models on timm backbones.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for path, command in list(iter_commands(parser)):
        command.set_defaults(command_path=path)  # the innermost command's default wins: 'bench accuracy'
    return parser


def _reader_gone() -> int:
    """The reader of our output went away (``tdnzoo list | head``): stop quietly, with the status of a
    program that SIGPIPE ended (128 + 13), as ``ls`` or ``cat`` would. What is left in stdout's buffer goes
    to /dev/null, so that flushing it at exit raises nothing more."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file (captured): nothing will be flushed into a pipe
        pass
    return 128 + signal.SIGPIPE


def main(argv: list[str] | None = None) -> int:
    """Run ``tdnzoo`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, while the handler below can still take it
        return code
    except BrokenPipeError:
        return _reader_gone()
    except USER_ERRORS as exc:
        print(f"tdnzoo {getattr(args, 'command_path', args.command)}: error: {exc}", file=sys.stderr)
        return 2
