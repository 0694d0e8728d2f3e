"""Where a TDN model's inference time goes, next to TSN: timers on its parts, in one process.

``tdnzoo bench breakdown`` prints two tables: per part (S-TDM branch, L-TDM + temporal-conv
inserts, S-TDM fusion, the rest) the median milliseconds per clip of TDN and TSN, timed in
interleaved rounds; and the operators inside the L-TDM inserts (torch.profiler self time), run
alone on the inputs they get inside the model.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..layers import LongTermStack, ShortTermTDM
from ..models import create_model
from ..models import fusion as _fusion
from .allocator import fix_malloc_thresholds
from .machine import malloc_description

__all__ = ["Breakdown", "time_breakdown"]


@dataclass
class Breakdown:
    """Milliseconds per clip: ``parts[name] = {"tsn": ms or None, "tdn": ms}``, and L-TDM operators."""

    settings: dict[str, Any]
    parts: dict[str, dict[str, float | None]] = field(default_factory=dict)
    ltdm_ops: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        s = self.settings
        lines = [
            f"{s['backbone']}, {s['num_segments']} segments, {s['size']}x{s['size']}, batch 1, fp32, cpu, "
            f"{s['threads']} threads, {s['malloc']}; medians of {s['rounds']} interleaved rounds, ms per clip",
            "",
            "| part | TSN | TDN |",
            "| --- | ---: | ---: |",
        ]
        for name, row in self.parts.items():
            tsn = "-" if row["tsn"] is None else f"{row['tsn']:.1f}"
            lines.append(f"| {name} | {tsn} | {row['tdn']:.1f} |")
        lines += [""] + [f"Note: {note}" for note in self.notes] if self.notes else []
        lines += ["", "Inside the L-TDM + temporal-conv inserts, run alone (torch.profiler self time):", "",
                  "| operator | ms per clip |", "| --- | ---: |"]
        lines += [f"| {op} | {ms:.2f} |" for op, ms in self.ltdm_ops]
        return "\n".join(lines)


@contextlib.contextmanager
def _timed_forwards(modules: list[nn.Module], clock: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of every call of ``modules`` to ``clock[name]``."""
    def wrap(module: nn.Module) -> Callable:
        inner = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                clock[name] += time.perf_counter() - start
        return forward

    for module in modules:
        module.forward = wrap(module)  # an instance attribute, shadowing the class's forward
    try:
        yield
    finally:
        for module in modules:
            del module.forward


@contextlib.contextmanager
def _timed_fusion(clock: dict[str, float]) -> Iterator[None]:
    inner = _fusion.fuse_difference

    def fuse(*args: Any, **kwargs: Any) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            clock["S-TDM fusion"] += time.perf_counter() - start

    _fusion.fuse_difference = fuse
    try:
        yield
    finally:
        _fusion.fuse_difference = inner


def time_breakdown(
    backbone: str = "resnet50", *, num_segments: int = 8, size: int = 224, rounds: int = 8, warmup: int = 2,
    top: int = 10, fixed_malloc: bool = True,
) -> Breakdown:
    """Time TSN and TDN on ``backbone`` round by round, with timers on TDN's parts; see the module doc.

    ``fixed_malloc``: fix glibc's malloc thresholds for the process first, as the speed report does
    (see :mod:`.allocator`).
    """
    for name, value, low in (("num_segments", num_segments, 1), ("size", size, 1), ("rounds", rounds, 1),
                             ("warmup", warmup, 0)):
        if value < low:  # before the process's malloc thresholds change
            raise ValueError(f"{name} must be >= {low}, got {value}")
    thresholds = fix_malloc_thresholds() if fixed_malloc else None
    torch.manual_seed(0)
    tsn = create_model(f"tsn_{backbone}", num_segments=num_segments).eval()
    tdn = create_model(f"tdn_{backbone}", num_segments=num_segments).eval()
    x_tsn = torch.randn(1, tsn.num_frames, 3, size, size)
    x_tdn = torch.randn(1, tdn.num_frames, 3, size, size)
    inserts = [m for m in tdn.modules() if isinstance(m, LongTermStack)]
    branch = [m for m in tdn.modules() if isinstance(m, ShortTermTDM)]
    samples: dict[str, list[float]] = defaultdict(list)
    clock: dict[str, float] = defaultdict(float)
    with torch.inference_mode(), _timed_forwards(inserts, clock, "L-TDM + temporal conv inserts"), \
            _timed_forwards(branch, clock, "S-TDM branch"), _timed_fusion(clock):
        for i in range(warmup + rounds):
            clock.clear()
            start = time.perf_counter()
            tsn(x_tsn)
            tsn_time = time.perf_counter() - start
            start = time.perf_counter()
            tdn(x_tdn)
            tdn_time = time.perf_counter() - start
            if i < warmup:
                continue
            samples["tsn"].append(tsn_time)
            samples["tdn"].append(tdn_time)
            for name in ("S-TDM branch", "L-TDM + temporal conv inserts", "S-TDM fusion"):
                samples[name].append(clock[name])
            samples["rest"].append(tdn_time - sum(clock.values()))

    def ms(name: str) -> float:
        return statistics.median(samples[name]) * 1e3

    result = Breakdown(settings={"backbone": backbone, "num_segments": num_segments, "size": size,
                                 "rounds": rounds, "threads": torch.get_num_threads(),
                                 "malloc": malloc_description(thresholds)})
    result.parts["whole model"] = {"tsn": ms("tsn"), "tdn": ms("tdn")}
    for name in ("S-TDM branch", "L-TDM + temporal conv inserts", "S-TDM fusion"):
        result.parts[name] = {"tsn": None, "tdn": ms(name)}
    result.parts["rest (backbone, head)"] = {"tsn": ms("tsn"), "tdn": ms("rest")}
    result.ltdm_ops = _insert_operators(tdn, x_tdn, inserts, rounds=max(1, rounds // 2), top=top)
    return result


def _insert_operators(
    model: nn.Module, clip: torch.Tensor, inserts: list[nn.Module], *, rounds: int, top: int
) -> list[tuple[str, float]]:
    """Profiler self time per operator of the inserts alone, on their in-model inputs."""
    inputs: list[torch.Tensor] = []
    handles = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone())) for m in inserts]
    with torch.inference_mode():
        model(clip)
    for handle in handles:
        handle.remove()
    with torch.inference_mode():
        for module, x in zip(inserts, inputs):  # warm-up: cached folded weights, oneDNN primitives
            module(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(rounds):
                for module, x in zip(inserts, inputs):
                    module(x)
    totals = sorted(((e.key, e.self_cpu_time_total / rounds / 1e3) for e in prof.key_averages()),
                    key=lambda item: -item[1])
    shown = totals[:top]
    rest = sum(ms for _, ms in totals[top:])
    return shown + ([("(all other operators)", rest)] if rest > 0 else [])
