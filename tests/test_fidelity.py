"""The paper's figures: parameter count and fvcore FLOPs of the R50 models."""
from __future__ import annotations

import pytest
import torch

import tdnzoo


def test_tdn_resnet50_has_the_official_parameter_count():
    # Official count less the unused conv1_temp and the conv biases that fold into BatchNorm.
    model = tdnzoo.create_model("tdn_resnet50", num_classes=174, num_segments=8)
    assert sum(p.numel() for p in model.parameters()) == 24_382_606


def _fvcore_gflops(model, size=224):
    from fvcore.nn import FlopCountAnalysis

    x = torch.zeros(1, model.num_frames, 3, size, size)
    analysis = FlopCountAnalysis(model.eval(), x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total() / 1e9


@pytest.mark.heavy
@pytest.mark.parametrize("name, gflops", [("tdn_resnet50", 35.9), ("tsn_resnet50", 32.9)])
def test_fvcore_gflops_at_8x224(name, gflops):
    model = tdnzoo.create_model(name, num_classes=174, num_segments=8)
    assert _fvcore_gflops(model) == pytest.approx(gflops, rel=0.01)
