"""The factory on many timm families: shapes, gradients, batch independence, the contract."""
from __future__ import annotations

import pytest
import torch

import tdnzoo
from tdnzoo.layers import LongTermTDM, TemporalConv, TemporalShift
from tdnzoo.models import TemporalInsert

BACKBONES = [
    "resnet18",
    "resnet50",
    "regnety_002",
    "convnext_atto",
    "test_efficientnet",
    "mobilenetv3_small_050",
]
# More families, tiny variants, to keep "any timm 2D CNN" honest.
EXTRA_BACKBONES = [
    "test_resnet", "test_convnext", "test_byobnet", "ghostnet_050", "mobilenetv2_035", "mnasnet_small",
    "resnet10t", "dla46_c", "repghostnet_050",
]
SIZE = 64


def _build(name: str, method: str, segments: int) -> tdnzoo.VideoClassifier:
    torch.manual_seed(0)
    model = tdnzoo.create_model(f"{method}_{name}", num_classes=5, num_segments=segments)
    with torch.no_grad():  # timm zero-inits the last norm of each block, which blocks gradients at init
        for p in model.parameters():
            if not p.any():
                p.fill_(0.5)
    return model


def _clip(model, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_frames, 3, SIZE, SIZE, generator=g)


def _check_model(name: str, method: str, segments: int) -> None:
    model = _build(name, method, segments)
    assert model.num_segments == segments
    assert model.frames_per_segment == (5 if method == "tdn" else 1)

    model.train()
    out = model(_clip(model, 2))
    assert out.shape == (2, 5)
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    # Every conv / linear weight must actually learn. (A norm bias right before a training-mode
    # BatchNorm gets an exactly zero gradient by construction, in the official L-TDM too.)
    dead = [n for n, p in model.named_parameters() if p.dim() > 1 and not p.grad.abs().sum() > 0]
    assert not dead, f"weights with zero gradient: {dead[:5]}"

    model.eval()
    x = _clip(model, 3, seed=1)
    with torch.no_grad():
        full = model(x)
        alone = model(x[1:2])
    torch.testing.assert_close(full[1:2], alone, atol=1e-4, rtol=1e-4)


# 4 segments everywhere, and 8 (the official fusion weights) once: the segment count changes no code path
# beyond those weights, and every timm family also runs in tests/test_families.py.
@pytest.mark.parametrize("method", tdnzoo.METHODS)
@pytest.mark.parametrize("name, segments", [(name, 4) for name in BACKBONES] + [("resnet18", 8)])
def test_forward_backward_and_batch_independence(name, method, segments):
    _check_model(name, method, segments)


@pytest.mark.parametrize("method", ["tsm", "tdn"])
@pytest.mark.parametrize("name", EXTRA_BACKBONES)
def test_more_families(name, method):
    _check_model(name, method, 4)


def _count(model, cls):
    return sum(isinstance(m, cls) for m in model.modules())


def test_official_placement_on_resnet50():
    tsm = tdnzoo.create_model("tsm_resnet50", num_classes=10)
    assert _count(tsm, TemporalShift) == 16  # every block of the 3+4+6+3
    assert all(isinstance(b.conv1, TemporalInsert) for layer in ("layer1", "layer4") for b in getattr(tsm.backbone, layer))

    tdn = tdnzoo.create_model("tdn_resnet50", num_classes=10)
    assert _count(tdn, LongTermTDM) == 13 and _count(tdn, TemporalConv) == 13  # stages 3-5 only
    assert not any(isinstance(b.conv2, TemporalInsert) for b in tdn.backbone.layer1)
    assert all(isinstance(b.conv2, TemporalInsert) for b in tdn.backbone.layer3)


def test_tsm_shifts_every_other_block_of_resnet101():
    model = tdnzoo.create_model("tsm_resnet101", num_classes=10)
    shifted = [isinstance(b.conv1, TemporalInsert) for b in model.backbone.layer3]
    assert shifted == [i % 2 == 0 for i in range(23)]


def test_official_fusion_weights_depend_on_segments():
    assert tdnzoo.create_model("tdn_resnet18", num_segments=8).fusion_weights == (0.5, 0.5)
    assert tdnzoo.create_model("tdn_resnet18", num_segments=16).fusion_weights == (0.75, 0.25)
    assert tdnzoo.create_model("tdn_resnet18", fusion_weights=(0.6, 0.4)).fusion_weights == (0.6, 0.4)


def test_contract_methods():
    model = tdnzoo.create_model("tdn_resnet18", num_classes=7, num_segments=4).eval()
    x = torch.randn(2, 20, 3, SIZE, SIZE)
    feats = model.forward_features(x)
    assert feats.shape == (8, 512, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert torch.allclose(model.forward_head(feats), model(x))
    assert model.get_classifier().out_features == 7
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    assert model.pretrained_cfg["num_segments"] == 4 and model.pretrained_cfg["frames_per_segment"] == 5


def test_temporalize_takes_an_instance_or_a_name():
    import timm

    backbone = timm.create_model("resnet18", num_classes=4)
    model = tdnzoo.temporalize(backbone, "tsm", num_segments=4)
    assert model.backbone is backbone and _count(model, TemporalShift) == 8
    assert tdnzoo.temporalize("resnet18", "tsn", 4, num_classes=4).num_classes == 4


def test_tdn_ablations_are_keywords():
    model = tdnzoo.create_model("tdn_resnet18", num_segments=4, long_term=False)
    assert _count(model, LongTermTDM) == 0 and _count(model, TemporalConv) == 6
    model = tdnzoo.create_model("tdn_resnet18", num_segments=4, long_term_stages=(5,))
    assert _count(model, LongTermTDM) == 2


def test_deepcopy_gives_the_copy_its_own_fusion_points():
    import copy

    model = tdnzoo.create_model("tdn_resnet18", num_segments=4, num_classes=3).eval()
    twin = copy.deepcopy(model)
    x = torch.randn(1, 20, 3, SIZE, SIZE)
    with torch.no_grad():
        before = model(x)
        twin.backbone.conv1.weight.zero_()  # the stem, on the copy only
        assert torch.equal(model(x), before)
        assert not torch.allclose(twin(x), before)
    for path in model.fusion_points:
        assert twin.backbone.get_submodule(path) is not model.backbone.get_submodule(path)


def test_channels_last_gives_the_same_output():
    model = tdnzoo.create_model("tdn_resnet18", num_segments=4, num_classes=3).eval()
    x = torch.randn(1, 20, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(x)
        got = model.to(memory_format=torch.channels_last)(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_tdn_fuses_after_the_stem_and_the_first_stage_without_changing_keys():
    """The S-TDM maps join where the official code fuses them: after ResNet's max-pool and after
    layer1, through wrappers on those parameter-free ops (the state dict keeps TSN's keys there)."""
    from tdnzoo.models.fusion import DifferenceFusion

    tdn = tdnzoo.create_model("tdn_resnet50", num_classes=5)
    tsn = tdnzoo.create_model("tsn_resnet50", num_classes=5)
    assert tdn.fusion_points == ("maxpool", "layer1.2.act3")
    assert [type(tdn.backbone.get_submodule(p)) for p in tdn.fusion_points] == [DifferenceFusion] * 2
    assert _count(tdn, DifferenceFusion) == 2 and type(tdn.short_term.stage[-1].act3) is torch.nn.ReLU
    layer1 = [{k for k in m.backbone.state_dict() if k.startswith(("layer1.", "conv1.", "bn1."))} for m in (tsn, tdn)]
    assert layer1[0] == layer1[1] and layer1[0]  # no inserts in the stem and first stage: the same keys as TSN's
    with pytest.raises(RuntimeError, match="without its S-TDM map"):
        tdn.backbone.forward_features(torch.randn(1, 3, SIZE, SIZE))  # the backbone alone cannot fuse
