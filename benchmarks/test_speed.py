"""Latency (batch 1), throughput (larger batch) and a training step of TSN, TSM and TDN.

Each benchmark group holds the three methods on one backbone and setting, so pytest-benchmark's
table compares them side by side. Select with -k, e.g.
`pytest benchmarks/ --benchmark-only -k "latency and resnet50 and cpu and fp32 and eager"`.
"""
from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F

import tdnzoo

from .conftest import BATCH, ROUNDS, SEGMENTS, SIZE

METHODS = tdnzoo.METHODS
BACKBONES = ("resnet50", "resnet18")
DEVICES = ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
VARIANTS = ("eager", "channels_last", "compile")


@functools.lru_cache(maxsize=8)
def _model(name: str, device: str, variant: str, train: bool):
    torch.manual_seed(0)
    model = tdnzoo.create_model(name, num_classes=174, num_segments=SEGMENTS).to(device).train(train)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    runner = model
    if variant == "compile" and train:
        runner = torch.compile(model)
    elif variant == "compile":  # inference compiles the BN-folded copy, as `tdnzoo bench --compile`
        runner = torch.compile(tdnzoo.fuse_for_inference(model))
    return model, runner


def _autocast(device: str, dtype: str):
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[dtype])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _setup(benchmark, kind, method, backbone, device, dtype, variant, train=False):
    if device == "cpu" and dtype == "fp16":
        pytest.skip("fp16 autocast is for CUDA")
    name = f"{method}_{backbone}"
    model, runner = _model(name, device, variant, train)
    benchmark.group = f"{kind} {backbone} {device} {dtype} {variant} {SEGMENTS}x{SIZE}"
    benchmark.extra_info.update(model=name, segments=SEGMENTS, size=SIZE)
    return model, runner


def _clip(model, batch, device):
    return torch.randn(batch, model.num_frames, 3, SIZE, SIZE, device=device)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind, batch", [("latency", 1), ("throughput", BATCH)])
def test_inference(benchmark, kind, batch, method, backbone, device, dtype, variant):
    model, runner = _setup(benchmark, kind, method, backbone, device, dtype, variant)
    x = _clip(model, batch, device)

    def run():
        with torch.inference_mode(), _autocast(device, dtype):
            out = runner(x)
        _sync(device)
        return out

    out = benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=1)
    benchmark.extra_info["clips_per_second"] = batch / benchmark.stats.stats.median
    assert out.shape == (batch, 174)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_training_step(benchmark, method, backbone, device, dtype, variant):
    model, runner = _setup(benchmark, "train-step", method, backbone, device, dtype, variant, train=True)
    x = _clip(model, 1, device)
    target = torch.zeros(1, dtype=torch.long, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            loss = F.cross_entropy(runner(x).float(), target)
        loss.backward()
        optimizer.step()
        _sync(device)
        return loss

    loss = benchmark.pedantic(step, rounds=ROUNDS, warmup_rounds=1)
    assert torch.isfinite(loss)
