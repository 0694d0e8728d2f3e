"""The insertion mechanism on its own: layouts, wrappers, the S-TDM hand-over, and where modules go."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdnzoo
from tdnzoo.layers import TemporalShift
from tdnzoo.models.backbone import analyze_backbone
from tdnzoo.models.fusion import DifferenceFusion
from tdnzoo.models.insertion import TemporalInsert, replace_module
from tdnzoo.models.tokens import MapLayout, detect_layout, token_grid

pytestmark = pytest.mark.usefixtures("one_thread")


def test_layouts_are_told_apart_by_which_dimensions_follow_the_frame_size():
    # [N, 16, 16, 16] alone is ambiguous; its shape at another frame size is not
    x = torch.zeros(2, 16, 16, 16)
    assert detect_layout(x, 2, 64, alt_shape=(2, 24, 24, 16), alt_size=96).kind == "nhwc"
    assert detect_layout(x, 2, 64, alt_shape=(2, 16, 24, 24), alt_size=96).kind == "nchw"
    tokens = detect_layout(torch.zeros(2, 1 + 49, 8), 2, 112)
    assert (tokens.kind, tokens.grid, tokens.prefix, tokens.channels) == ("nlc", (7, 7), 1, 8)
    assert detect_layout(torch.zeros(6, 49, 8), 2, 112) is None  # windows: not one map per frame
    assert detect_layout(torch.zeros(2, 4, 49, 49), 2, 112, alt_shape=(2, 4, 100, 100), alt_size=160) is None  # attention
    assert token_grid(24, (4, 6)) == (4, 6) and token_grid(96, (4, 6)) == (8, 12)


@pytest.mark.parametrize("layout", [MapLayout("nhwc", 8, (4, 4)), MapLayout("nlc", 8, (4, 4), prefix=2)])
def test_maps_round_trip_and_prefix_tokens_pass_unchanged(layout):
    x = torch.randn(2, 4, 4, 8) if layout.kind == "nhwc" else torch.randn(2, 2 + 16, 8)
    maps, prefix = layout.to_maps(x)
    assert maps.shape == (2, 8, 4, 4)
    assert torch.equal(layout.from_maps(maps, prefix), x)


def test_temporal_insert_passes_extra_arguments_and_settings_but_not_tensors():
    class Op(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_stride = 4
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x, scale, *, bias=0.0):
            return x * scale + bias

    insert = TemporalInsert(TemporalShift(2), Op())
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(insert(x, 2.0, bias=1.0), TemporalShift(2)(x) * 2.0 + 1.0)
    assert insert.q_stride == 4  # a block reading its op's setting (Hiera) still can
    assert not hasattr(insert, "weight")  # but the op's tensors stay its own
    after = TemporalInsert(TemporalShift(2), Op(), after=True)
    torch.testing.assert_close(after(x, 2.0), TemporalShift(2)(x * 2.0))


def test_replace_module_finds_the_op_by_identity():
    seq = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
    wrapper = replace_module(seq, seq[1], lambda op: TemporalInsert(TemporalShift(2), op))
    assert seq[1] is wrapper and isinstance(wrapper.inner, nn.ReLU)
    with pytest.raises(ValueError, match="held in 0 places"):
        replace_module(seq, nn.ReLU(), lambda op: op)


def test_fusion_is_the_official_formula_in_every_layout():
    diff = torch.randn(2, 8, 2, 2)
    up = F.interpolate(diff, size=(4, 4))
    maps = torch.randn(2, 8, 4, 4)
    for layout, x in ((None, maps), (MapLayout("nhwc", 8, (4, 4)), maps.permute(0, 2, 3, 1)),
                      (MapLayout("nlc", 8, (4, 4), prefix=1), torch.cat((torch.ones(2, 1, 8), maps.flatten(2).transpose(1, 2)), 1))):
        fusion = DifferenceFusion(nn.Identity(), 0.75, 0.25, layout)
        fusion.difference = diff
        out = fusion(x)
        expected = 0.75 * maps + 0.25 * up
        got = out if layout is None else layout.to_maps(out)[0]
        torch.testing.assert_close(got, expected)
        if layout is not None and layout.prefix:
            assert torch.equal(out[:, :1], torch.ones(2, 1, 8))  # the class token is not fused


def test_the_handover_traces_with_torch_fx():
    class Video(nn.Module):
        """VideoClassifier's hand-over in miniature: set the map, run the backbone, clear it."""

        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), DifferenceFusion(nn.ReLU(), 0.5, 0.5), nn.Conv2d(4, 2, 1))
            self.difference = nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x):
            point = self.backbone.get_submodule("1")
            point.difference = self.difference(x)
            try:
                return self.backbone(x)
            finally:
                point.difference = None

    model = Video()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(traced(x), model(x))
    assert model.backbone[1].difference is None


@pytest.mark.parametrize("name", ["tdn_test_vit", "tdn_test_mambaout"])
def test_token_and_channels_last_models_trace_as_one_graph(name):
    model = tdnzoo.create_model(name, num_segments=2, num_classes=3).eval()
    x = torch.randn(1, model.num_frames, 3, model.probe_size, model.probe_size)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]


def test_placement_on_a_vit_and_a_swin_block():
    import timm

    vit = analyze_backbone(timm.create_model("test_vit"))
    assert all(b.shift.path == f"{b.path}.attn" and b.difference.path == f"{b.path}.attn" for b in vit.blocks)
    assert vit.blocks[0].shift.layout.prefix == 1 and [p.path for p in vit.fusion_points] == ["patch_embed.norm"]
    swin = analyze_backbone(timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4, depths=(1, 1, 1, 1)))
    # the attention sees windows: the module goes on the whole map, after norm1, channels-last
    block = swin.blocks[0]
    assert (block.shift.path, block.shift.after, block.shift.layout.kind) == (f"{block.path}.norm1", True, "nhwc")


def test_inception_next_l_tdm_sees_all_channels_of_its_split_mixer():
    model = tdnzoo.create_model("tdn_inception_next_atto", num_segments=2, num_classes=3)
    block = model.backbone.stages[2].blocks[0]
    assert isinstance(block.token_mixer, TemporalInsert)  # the whole mixer, not its first split conv
    assert block.token_mixer.temporal.ltdm.channels == 160 > block.token_mixer.inner.dwconv_hw.in_channels
