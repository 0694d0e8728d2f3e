"""The paper's figures: parameter count and fvcore FLOPs of the R50 models."""
from __future__ import annotations

import tdnzoo


def test_tdn_resnet50_has_the_official_parameter_count():
    # Official count less the unused conv1_temp and the conv biases that fold into BatchNorm.
    model = tdnzoo.create_model("tdn_resnet50", num_classes=174, num_segments=8)
    assert sum(p.numel() for p in model.parameters()) == 24_382_606

# fvcore GFLOPs of the R50 models are pinned in test_flops.py.
