"""Shared test helpers: the official fixtures live in ../shared beside the repository."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TDNZOO_SHARED", ROOT.parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official"
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 1, 3, 1, 1)


def randomize_statistics(module: torch.nn.Module, seed: int = 1, affine_std: float = 0.2) -> torch.nn.Module:
    """Trained-looking BatchNorm statistics and affines, and temporal kernels, instead of the init values
    (which make BN an identity and the temporal conv a shift, hiding mistakes)."""
    from tdnzoo.layers import TemporalConv

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.normal_(1, affine_std, generator=g)
                m.bias.normal_(0, affine_std, generator=g)
            elif isinstance(m, TemporalConv):
                m.weight.normal_(0, 0.6, generator=g)
    return module


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is fastest and keeps the shared CI cores free.

    Test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def synth():
    """The official fixtures' ``synth.py``, imported from ../shared."""
    path = OFFICIAL / "synth.py"
    if not path.is_file():
        pytest.fail(f"official fixtures not found at {OFFICIAL}; set TDNZOO_SHARED to the shared/ folder")
    spec = importlib.util.spec_from_file_location("official_synth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(name: str) -> dict:
    return json.loads((OFFICIAL / name).read_text())


def normalise(frames_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, T, 3, H, W]`` -> ImageNet-normalised float."""
    return (frames_uint8.float() / 255.0 - MEAN) / STD


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())
