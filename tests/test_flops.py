"""FLOPs per view: fvcore's convention, the paper's figures, and the per-module breakdown."""
from __future__ import annotations

import pytest
import torch

import tdnzoo
from tdnzoo.bench.flops import count_flops, flop_breakdown
from tdnzoo.cli import main
from tdnzoo.layers import TemporalConv


@pytest.mark.heavy
@pytest.mark.parametrize("name, gflops_8f", [("tsn_resnet50", 32.9), ("tsm_resnet50", 32.9), ("tdn_resnet50", 35.9)])
def test_published_gflops_and_16_segments_double(name, gflops_8f):
    assert count_flops(name, num_segments=8, input_size=224) == pytest.approx(gflops_8f, rel=0.01)
    assert count_flops(name, num_segments=16, input_size=224) == pytest.approx(2 * gflops_8f, rel=0.01)


def test_breakdown_of_a_small_tdn():
    model = tdnzoo.create_model("tdn_resnet18", num_segments=4, num_classes=10)
    fc = flop_breakdown(model, input_size=64)
    assert fc.groups["S-TDM"] > 0 and fc.groups["L-TDM"] > 0 and fc.groups["head"] > 0
    assert sum(fc.groups.values()) == pytest.approx(fc.gflops)
    # the temporal conv counted as the official depthwise Conv1d: 3 multiply-adds per output element
    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _a, out: outputs.append(out.numel()))
             for m in model.modules() if isinstance(m, TemporalConv)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, model.num_frames, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert outputs and fc.groups["temporal conv"] == pytest.approx(3 * sum(outputs) / 1e9)
    assert fc.elementwise_groups["temporal conv"] == 0
    assert fc.elementwise_groups["L-TDM"] > 0
    assert fc.elementwise_groups["S-TDM"] > 0  # the frame differences
    assert fc.params == sum(p.numel() for p in model.parameters())
    assert "| S-TDM |" in fc.table()


def test_total_is_fvcore_with_the_temporal_conv_as_its_conv1d():
    from tdnzoo.bench.flops import _extra_handles, fvcore_nn

    FlopCountAnalysis = fvcore_nn().FlopCountAnalysis  # fvcore itself, imported without its torch notice

    model = tdnzoo.create_model("tdn_resnet18", num_segments=2, num_classes=10).eval()
    # with the counters for the ops fvcore skips (here TDN's average pooling; tested below)
    analysis = FlopCountAnalysis(model, torch.zeros(1, 10, 3, 64, 64)).set_op_handle(**_extra_handles())
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    # fvcore's total, plus the temporal conv counted as the official Conv1d (tested above)
    expected = analysis.total() / 1e9 + flop_breakdown(model, input_size=64).groups["temporal conv"]
    assert count_flops(model, input_size=64) == pytest.approx(expected, rel=1e-9)


def test_tsn_has_no_temporal_cost():
    fc = flop_breakdown("tsn_resnet18", num_segments=2, input_size=64)
    assert fc.groups["S-TDM"] == fc.groups["L-TDM"] == fc.elementwise_gflops == 0


def test_segment_count_must_match_an_instance():
    model = tdnzoo.create_model("tsn_resnet18", num_segments=2)
    with pytest.raises(ValueError, match="built for 2 segments"):
        count_flops(model, num_segments=8)


def test_flops_command(capsys):
    assert main(["flops", "tdn_resnet18", "--num-segments", "2", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "tdn_resnet18: 2 segments x 5 frames, 64x64" in out and "| **total** |" in out


def _set_fused_attention(model: torch.nn.Module, fused: bool) -> int:
    """Switch timm's attention modules between F.scaled_dot_product_attention and q @ k^T, softmax, @ v."""
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for module in modules:
        module.fused_attn = fused
    return len(modules)


def _fvcore_alone(model: torch.nn.Module, size: int) -> float:
    from tdnzoo.bench.flops import fvcore_nn

    analysis = fvcore_nn().FlopCountAnalysis(model.eval(), torch.zeros(1, model.num_frames, 3, size, size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.total() / 1e9


# A ViT and a (reduced) Swin: global attention, and windowed attention with a bias and a shift mask.
ATTENTION_MODELS = [
    ("tdn_test_vit", {}, 160),
    ("tsm_swin_tiny_patch4_window7_224", {"depths": (1, 1, 1, 1), "embed_dim": 32, "num_heads": (1, 1, 1, 1)}, 224),
]


@pytest.mark.parametrize("name, backbone_kwargs, size", ATTENTION_MODELS)
def test_fused_attention_counts_as_its_unfused_matmuls(name, backbone_kwargs, size):
    model = tdnzoo.create_model(name, num_segments=2, num_classes=5, backbone_kwargs=backbone_kwargs)
    assert _set_fused_attention(model, True) > 0
    fused, fused_by_fvcore = count_flops(model, input_size=size), _fvcore_alone(model, size)
    _set_fused_attention(model, False)
    unfused, unfused_by_fvcore = count_flops(model, input_size=size), _fvcore_alone(model, size)
    assert fused_by_fvcore < unfused_by_fvcore  # fvcore alone drops the fused attention's products ...
    assert fused == pytest.approx(unfused, rel=1e-9)  # ... which the counter adds back exactly
    assert "aten::scaled_dot_product_attention" not in flop_breakdown(model, input_size=size).uncounted


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["tdn_vit_small_patch16_224", "tdn_swin_tiny_patch4_window7_224"])
def test_full_size_vit_and_swin_fused_within_1_percent_of_unfused(name):
    model = tdnzoo.create_model(name, num_segments=2)
    _set_fused_attention(model, True)
    fused = count_flops(model, input_size=224)
    _set_fused_attention(model, False)
    assert fused == pytest.approx(count_flops(model, input_size=224), rel=0.01)


@pytest.mark.parametrize("layer, x, macs", [
    # a convolution with padding='same' (ConvMixer's): out elements x kernel x in channels per group
    (torch.nn.Conv2d(8, 6, 3, padding="same", groups=2), torch.zeros(1, 8, 10, 10), 6 * 10 * 10 * 3 * 3 * 4),
    # a 2-layer bidirectional LSTM (Sequencer's): per step and direction 4 gates x hidden x (input + hidden)
    (torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True, batch_first=True), torch.zeros(2, 5, 8),
     2 * 5 * 2 * (4 * 16 * (8 + 16) + 4 * 16 * (2 * 16 + 16))),
    # fixed average pooling counts as fvcore's adaptive pooling: one per input element
    (torch.nn.AvgPool2d(2), torch.zeros(1, 4, 8, 8), 4 * 8 * 8),
])
def test_ops_fvcore_skips_are_counted_as_their_unfused_form(layer, x, macs):
    from tdnzoo.bench.flops import _extra_handles, fvcore_nn

    analysis = fvcore_nn().FlopCountAnalysis(layer.eval(), x).set_op_handle(**_extra_handles())
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() == macs
    assert not analysis.unsupported_ops()


def test_flops_command_lists_what_it_did_not_count(capsys):
    assert main(["flops", "tsn_test_vit", "--num-segments", "2", "--size", "160"]) == 0
    captured = capsys.readouterr()
    uncounted = [line for line in captured.out.splitlines() if line.startswith("not counted")]
    assert len(uncounted) == 1 and "gelu x" in uncounted[0]  # element-wise, by the convention
    assert "scaled_dot_product_attention" not in captured.out
    assert "unsupported" not in captured.err.lower()
