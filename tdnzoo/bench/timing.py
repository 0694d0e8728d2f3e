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
    """Seconds per call over the measured rounds, and the page faults of each call.

    ``faults``: minor page faults of the process during each call (fresh pages the kernel had to
    hand out, each costing microseconds), where the platform counts them (not on Windows).
    """

    samples: list[float]
    faults: list[int] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range (seconds): how much the rounds disagree."""
        if len(self.samples) < 4:
            return max(self.samples) - min(self.samples)
        # inclusive: the quartiles of the samples themselves, within their range (error bars use them too)
        q = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q[2] - q[0]


def _minor_faults() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


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

    The device is synchronised around every call, whose page faults are counted too (see
    :class:`Timing`); ``progress(n)`` is told of each finished call.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
            if progress:
                progress(1)
    _sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    faults: list[list[int]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            _sync(device)
            before = _minor_faults()
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[i].append(time.perf_counter() - start)
            after = _minor_faults()
            if before is not None and after is not None:
                faults[i].append(after - before)
            if progress:
                progress(1)
    return [Timing(s, f if len(f) == len(s) else None) for s, f in zip(samples, faults)]


def paired_ratio(samples: list[float] | None, base: list[float] | None, *, fallback: float) -> float:
    """Median over rounds of ``samples[i] / base[i]`` (paired rounds); ``fallback`` without pairs."""
    if not samples or not base or len(samples) != len(base) or not all(base):
        return fallback
    return statistics.median(a / b for a, b in zip(samples, base))
