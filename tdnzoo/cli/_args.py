"""Argument types shared by the commands: a bad value ends in argparse's one-line error before any work.

Use them as ``type=`` of ``add_argument``; each raises ``argparse.ArgumentTypeError`` with what was
expected and what was given.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "device_arg", "float_at_least", "int_at_least", "nonnegative_int", "positive_float", "positive_int", "probability",
    "writable_folder",
]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"  # argparse names the type in some messages
    return parse


def float_at_least(minimum: float, *, strict: bool = False) -> Callable[[str], float]:
    """A finite number ``>= minimum`` (``> minimum`` when ``strict``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not (value > minimum if strict else value >= minimum):
            raise argparse.ArgumentTypeError(f"expected a number {'>' if strict else '>='} {minimum:g}, got {text}")
        return value

    parse.__name__ = f"float {'>' if strict else '>='} {minimum:g}"
    return parse


def probability(text: str) -> float:
    """A number in ``[0, 1)`` (a dropout rate)."""
    value = float_at_least(0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text}")
    return value


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
positive_float = float_at_least(0.0, strict=True)


def device_arg(text: str) -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...

    Checked here so that ``--device banana`` or ``--device cuda`` on a machine without a GPU is one line,
    not a traceback from the first tensor moved there.
    """
    import torch

    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as cpu, cuda or cuda:1, got {text!r}") from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        available, count = torch.cuda.is_available(), torch.cuda.device_count()
    else:
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        available = accelerator is not None and accelerator.type == parsed.type
        count = torch.accelerator.device_count() if available else 0
    if not available:
        raise argparse.ArgumentTypeError(f"device {text!r}: this machine has no {parsed.type} device (use cpu)")
    if parsed.index is not None and parsed.index >= count:
        raise argparse.ArgumentTypeError(
            f"device {text!r}: this machine has {count} {parsed.type} device(s), numbered from 0")
    return text


def writable_folder(path: str, flag: str = "--output") -> None:
    """Raise ``OSError`` if ``path`` cannot become a folder (creating nothing): checked before minutes of work."""
    folder = Path(path)
    parent = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise NotADirectoryError(f"{flag} {path}: {parent} is not a writable folder")
