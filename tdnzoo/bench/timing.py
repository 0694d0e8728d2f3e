"""Interleaved timing: every model runs once per round, so drift hits all of them alike."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["Timing", "paired_ratio", "time_interleaved"]


@dataclass
class Timing:
    """Seconds per call over the measured rounds."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range (seconds): how much the rounds disagree."""
        if len(self.samples) < 4:
            return max(self.samples) - min(self.samples)
        q = statistics.quantiles(self.samples, n=4)
        return q[2] - q[0]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(
    fns: Sequence[Callable[[], object]],
    *,
    rounds: int,
    warmup: int = 1,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> list[Timing]:
    """Time each function ``rounds`` times, interleaved (round-robin), after ``warmup`` calls each.

    The device is synchronised around every call; ``progress(n)`` is told of each finished call.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
            if progress:
                progress(1)
    _sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[i].append(time.perf_counter() - start)
            if progress:
                progress(1)
    return [Timing(s) for s in samples]


def paired_ratio(samples: list[float] | None, base: list[float] | None, *, fallback: float) -> float:
    """Median over rounds of ``samples[i] / base[i]`` (paired rounds); ``fallback`` without pairs."""
    if not samples or not base or len(samples) != len(base) or not all(base):
        return fallback
    return statistics.median(a / b for a, b in zip(samples, base))
