"""torch.compile: TSN, TSM and TDN compile as one graph (fullgraph=True) on CPU and match eager."""
from __future__ import annotations

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from tdnzoo import METHODS, create_model

from .active_weights import activate

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def _compile_in_process():
    # CI gives each test worker about one core, so inductor's pool of compile processes cannot compile in
    # parallel; compiling in-process saves starting it (about 10% of this file's CPU time). What is compiled
    # does not change.
    with torch._inductor.config.patch(compile_threads=1):
        yield


@pytest.fixture(scope="module", params=METHODS)
def model(request):
    # One tiny backbone for all three: inductor reuses the kernels they share, which keeps CPU compile time down.
    torch.manual_seed(0)
    return activate(create_model(f"{request.param}_test_resnet", num_segments=2, num_classes=5)).eval()


def _clip(model, seed: int) -> torch.Tensor:
    return torch.randn(1, model.num_frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def test_training_forward_traces_as_one_graph(model):
    # Eval mode is pinned by the fullgraph compile below; training mode takes other paths (TDN's
    # per-direction BatchNorm, dropout). Dynamo alone, no compiler: cheap. A copy, so that
    # training-mode statistics updates stay off the shared model.
    probe = copy.deepcopy(model).train()
    explanation = torch._dynamo.explain(probe)(_clip(model, 0))
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_fullgraph_compile_matches_eager(model):
    counter = CompileCounterWithBackend("inductor")  # inductor, counting what it compiles
    compiled = torch.compile(model, backend=counter, fullgraph=True)  # any graph break raises here
    with torch.no_grad():
        for seed in (1, 2):  # the second call reuses the compiled graph
            x = _clip(model, seed)
            expected = model(x)
            got = compiled(x)
            assert got.shape == expected.shape == (1, 5)
            error = float((got - expected).abs().max() / expected.abs().max())
            assert error < 1e-4, f"{model.method}: compiled differs from eager by {error:.3g} of the largest logit"
    assert counter.frame_count == 1  # one graph, compiled once
