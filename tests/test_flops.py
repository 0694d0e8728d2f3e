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
    from tdnzoo.bench.flops import fvcore_nn

    FlopCountAnalysis = fvcore_nn().FlopCountAnalysis  # fvcore itself, imported without its torch notice

    model = tdnzoo.create_model("tdn_resnet18", num_segments=2, num_classes=10).eval()
    analysis = FlopCountAnalysis(model, torch.zeros(1, 10, 3, 64, 64))
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
