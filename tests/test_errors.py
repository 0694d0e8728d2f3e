"""Bad input gets a clear error saying what was expected and what was received."""
from __future__ import annotations

import pytest
import torch

import tdnzoo


@pytest.fixture(scope="module")
def tdn():
    return tdnzoo.create_model("tdn_resnet18", num_classes=3, num_segments=4).eval()


def test_wrong_rank(tdn):
    with pytest.raises(ValueError, match=r"5-D clip tensor \[B, 20, 3, H, W\].*got shape \(20, 3, 64, 64\)"):
        tdn(torch.zeros(20, 3, 64, 64))


def test_wrong_channels(tdn):
    with pytest.raises(ValueError, match=r"3 \(RGB\) channels.*got shape \(1, 20, 1, 64, 64\)"):
        tdn(torch.zeros(1, 20, 1, 64, 64))


def test_wrong_frame_count(tdn):
    with pytest.raises(ValueError, match=r"expected 20 frames \(num_segments=4 x frames_per_segment=5\).*got shape \(1, 4, 3, 64, 64\)"):
        tdn(torch.zeros(1, 4, 3, 64, 64))


def test_too_small(tdn):
    with pytest.raises(ValueError, match=r"too small for backbone 'resnet18' \(it needs at least 64x64\).*\(1, 20, 3, 32, 32\)"):
        tdn(torch.zeros(1, 20, 3, 32, 32))


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(tdnzoo.UnknownModelError, match=r"'resnt50' is not a timm model.*tdn_resnet50"):
        tdnzoo.create_model("tdn_resnt50")


def test_unknown_method_prefix():
    with pytest.raises(tdnzoo.UnknownModelError, match=r"method prefix 'tdx'.*one of tsn, tsm, tdn.*Did you mean 'tdn_resnet50'"):
        tdnzoo.create_model("tdx_resnet50")
    with pytest.raises(tdnzoo.UnknownModelError, match="method prefix"):
        tdnzoo.create_model("resnet50")


def test_unsupported_backbone_names_it_its_family_and_the_reason():
    class NoFeatures(torch.nn.Module):
        num_classes = 3

        def forward(self, x):
            return x

    with pytest.raises(tdnzoo.UnsupportedBackboneError, match=r"backbone 'NoFeatures' \(timm family 'test_errors'\) .*no timm feature_info"):
        tdnzoo.temporalize(NoFeatures(), "tsm", num_segments=2)


def test_unknown_pretrained_tag():
    with pytest.raises(tdnzoo.UnknownModelError, match=r"Invalid pretrained tag \(nope\) for tdn_resnet50"):
        tdnzoo.create_model("tdn_resnet50.nope")


def test_bad_method_arguments():
    with pytest.raises(ValueError, match="unknown method 'c3d'"):
        tdnzoo.temporalize("resnet18", "c3d")
    with pytest.raises(ValueError, match="TSM takes one frame per segment"):
        tdnzoo.temporalize("resnet18", "tsm", frames_per_segment=5)
