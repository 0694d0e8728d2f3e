"""Live video: one streaming step against a full clip forward of the same causal model (CPU, batch 1).

Each group holds the clip forward and the step of one causal model and variant, so pytest-benchmark's
table shows their ratio (target <= 0.18 at T = 8, 224x224). `tdnzoo bench stream` reports the same
comparison timed interleaved in one process, with the cache memory. Select with -k, e.g.
`pytest benchmarks/test_stream.py --benchmark-only -k "resnet50 and eager"`.
"""
from __future__ import annotations

import functools

import pytest
import torch

import tdnzoo

from .conftest import ROUNDS, SEGMENTS, SIZE

METHODS = ("tsm", "tdn")
BACKBONES = ("resnet50",)
VARIANTS = ("eager", "compile")


@functools.lru_cache(maxsize=4)
def _setup(method: str, backbone: str, variant: str):
    """The clip runner and a streamer of one causal model (compiled: its BN-folded copy, both ways)."""
    torch.manual_seed(0)
    model = tdnzoo.create_model(f"{method}_{backbone}", num_classes=174, num_segments=SEGMENTS, causal=True).eval()
    if variant == "compile":
        model = tdnzoo.fuse_for_inference(model)
    clip_runner = torch.compile(model.forward_segments) if variant == "compile" else model.forward_segments
    live = tdnzoo.stream(model, compile=variant == "compile")
    clip = torch.randn(1, model.num_frames, 3, SIZE, SIZE)
    for segment in clip.split(model.frames_per_segment, dim=1):  # fills the caches, compiles the step
        live.step(segment)
    return clip_runner, live, clip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["clip", "step"])
def test_stream(benchmark, kind, method, backbone, variant):
    clip_runner, live, clip = _setup(method, backbone, variant)
    benchmark.group = f"stream {method} {backbone} cpu {variant} {SEGMENTS}x{SIZE}"
    benchmark.extra_info.update(model=f"{method}_{backbone}", causal=True, segments=SEGMENTS, size=SIZE,
                                cache_mb=live.cache_bytes() / 2**20)
    segment = clip[:, -live.frames_per_segment:]

    def run():
        if kind == "step":
            return live.step(segment)  # under no_grad: its caches are written in place
        with torch.inference_mode():
            return clip_runner(clip)

    out = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    assert out.shape[-1] == 174
