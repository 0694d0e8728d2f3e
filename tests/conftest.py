"""Shared test helpers. The tests carry their own data: see tests/fixtures/README.md."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from . import official_fixtures
from .official_fixtures import normalise, reference  # noqa: F401  (tests import them from here)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Share the cores among pytest-xdist's workers: more intra-op threads than cores makes OpenMP's
# waiting threads spin against each other (on 2 cores, -n 2 with 2 threads each ran the suite 20x
# slower in places).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


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
def synth() -> ModuleType:
    """Official-layout checkpoints and clips: the :mod:`tests.official_fixtures` module."""
    return official_fixtures


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())
