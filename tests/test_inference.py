"""The explicit inference step: ``fuse_for_inference`` folds BatchNorm and keeps every output."""
from __future__ import annotations

import copy

import pytest
import torch
from timm.utils import reparameterize_model

import tdnzoo
from tdnzoo import METHODS
from tdnzoo.layers import LongTermTDM

from .active_weights import activate

# A backbone per block family the speed report and the zoo use, tiny where timm has a test variant.
BACKBONES = ("test_resnet", "resnet18", "test_efficientnet", "test_convnext", "regnety_002")
SIZE = 64

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(method: str, backbone: str) -> tdnzoo.VideoClassifier:
    torch.manual_seed(0)
    return activate(tdnzoo.create_model(f"{method}_{backbone}", num_segments=2, num_classes=7)).eval()


def _clip(model: tdnzoo.VideoClassifier, seed: int = 1) -> torch.Tensor:
    return torch.randn(2, model.num_frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _batch_norms(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_fused_model_gives_the_same_outputs_without_batch_norms_after_convs(method, backbone):
    model = _model(method, backbone)
    x = _clip(model)
    before = _batch_norms(model)
    with torch.no_grad():
        expected = model(x)
        fused = tdnzoo.fuse_for_inference(model)
        got = fused(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert _batch_norms(model) == before, "the original model is left as it was"
    if before:  # ConvNeXt's TSN/TSM have LayerNorms only
        assert _batch_norms(fused) < before
    if method == "tdn":  # the temporal modules fold their own norms and stay in place
        ltdms = [m for m in fused.modules() if isinstance(m, LongTermTDM)]
        assert ltdms and all(type(m.bn_expand) is torch.nn.Identity for m in ltdms)


def test_timm_reparameterize_model_folds_the_temporal_modules_too():
    model = _model("tdn", "test_resnet")
    x = _clip(model)
    with torch.no_grad():
        expected = model(x)
        fused = reparameterize_model(model)  # timm's own inference step calls LongTermTDM.fuse()
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert all(type(m.bn_reduce) is torch.nn.Identity for m in fused.modules() if isinstance(m, LongTermTDM))


def test_eval_and_training_leave_the_module_structure_alone():
    model = _model("tdn", "test_resnet").train()
    structure = [(name, type(m)) for name, m in model.named_modules()]
    keys = list(model.state_dict())
    model(_clip(model)).sum().backward()
    model.eval()
    with torch.no_grad():
        model(_clip(model))
    assert [(name, type(m)) for name, m in model.named_modules()] == structure
    assert list(model.state_dict()) == keys


def test_fold_refuses_a_conv_whose_output_is_used_beyond_its_batch_norm():
    class Leaky(torch.nn.Module):  # the conv's output also feeds the sum: folding would change it there
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    module = activate(copy.deepcopy(Leaky())).eval()
    with pytest.raises(RuntimeError, match="changed the output"):
        tdnzoo.fuse_for_inference(module, example=torch.randn(1, 3, 8, 8))
