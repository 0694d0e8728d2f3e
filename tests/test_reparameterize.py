"""timm's reparameterize_model on tdnzoo models: the same function, temporal modules kept.

RepVGG-style blocks (RepVGG, MobileOne, FastViT, RepViT, RepGhost) train with parallel branches
that ``timm.utils.reparameterize_model`` folds into one conv for inference; tdnzoo puts its modules
around such blocks, never inside them, so that folding keeps them. Compared in float64: the folding
itself moves float32 logits by about 1e-4 on random weights, with or without tdnzoo.
"""
from __future__ import annotations

import pytest
import torch
from timm.utils import reparameterize_model

import tdnzoo
from tdnzoo.bench.survey import calibrate_norms, perturb_weights
from tdnzoo.models.fusion import DifferenceFusion
from tdnzoo.models.insertion import TemporalInsert

pytestmark = pytest.mark.usefixtures("one_thread")


def _inserted(model: torch.nn.Module) -> list[str]:
    return [type(m.temporal).__name__ if isinstance(m, TemporalInsert) else "fusion"
            for m in model.modules() if isinstance(m, (TemporalInsert, DifferenceFusion))]


@pytest.mark.parametrize("method", ["tsm", "tdn"])
@pytest.mark.parametrize("backbone", ["mobileone_s0", "repvgg_a0", "fastvit_t8", "repvit_m1", "repghostnet_050"])
def test_reparameterized_model_keeps_its_temporal_modules_and_outputs(backbone, method):
    torch.manual_seed(0)
    model = tdnzoo.create_model(f"{method}_{backbone}", num_classes=5, num_segments=2).double()
    size = max(model.probe_size, model.min_size)
    x = torch.randn(1, model.num_frames, 3, size, size, dtype=torch.float64)
    calibrate_norms(perturb_weights(model), x)
    with torch.no_grad():
        expected = model(x)
    folded = reparameterize_model(model).double()  # RepViT's folding makes some tensors in float32
    assert sum(1 for _ in folded.modules()) < sum(1 for _ in model.modules())  # branches were folded
    assert _inserted(folded) == _inserted(model) and _inserted(model)
    with torch.no_grad():
        got = folded(x)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5
