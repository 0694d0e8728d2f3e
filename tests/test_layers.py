"""Each temporal layer against a hand-written reference of the official semantics."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tdnzoo.layers import (
    LongTermTDM,
    SegmentConsensus,
    ShortTermTDM,
    TemporalConv,
    TemporalShift,
    frame_differences,
    fuse_difference,
    shift_kernel,
)


def _clip(b=2, t=4, c=16, h=5, w=6, seed=0):
    return torch.randn(b * t, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_shift_moves_exactly_the_right_channels_the_right_way():
    b, t, c = 2, 4, 16
    x = _clip(b, t, c)
    out = TemporalShift(t, fold_div=8)(x).view(b, t, c, 5, 6)
    x5 = x.view(b, t, c, 5, 6)
    fold = c // 8
    for ti in range(t):
        ahead = x5[:, ti + 1, :fold] if ti + 1 < t else torch.zeros_like(x5[:, 0, :fold])
        back = x5[:, ti - 1, fold : 2 * fold] if ti > 0 else torch.zeros_like(x5[:, 0, :fold])
        assert torch.equal(out[:, ti, :fold], ahead)
        assert torch.equal(out[:, ti, fold : 2 * fold], back)
        assert torch.equal(out[:, ti, 2 * fold :], x5[:, ti, 2 * fold :])


def test_shift_is_identity_when_no_channel_moves():
    x = _clip(c=4)
    assert torch.equal(TemporalShift(4, fold_div=8)(x), x)


def test_temporal_conv_at_init_equals_the_shift():
    x = _clip(t=8, c=24)
    assert torch.equal(TemporalConv(24, 8)(x), TemporalShift(8)(x))


def _official_temporal_conv(x, weight, t):
    # The official ShiftModule: permute to [B*H*W, C, T] and run a depthwise Conv1d.
    nt, c, h, w = x.shape
    y = x.view(nt // t, t, c, h, w).permute(0, 3, 4, 2, 1).contiguous().view(-1, c, t)
    y = F.conv1d(y, weight, padding=1, groups=c)
    return y.view(nt // t, h, w, c, t).permute(0, 4, 3, 1, 2).contiguous().view(nt, c, h, w)


def test_temporal_conv_matches_conv1d_with_trained_weights():
    layer = TemporalConv(16, 4)
    with torch.no_grad():
        layer.weight.normal_()
    x = _clip(t=4, c=16)
    torch.testing.assert_close(layer(x), _official_temporal_conv(x, layer.weight, 4), atol=1e-6, rtol=1e-5)
    assert torch.equal(shift_kernel(16)[:2, 0], torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]))


def _official_ltdm(m: LongTermTDM, x: torch.Tensor) -> torch.Tensor:
    """mSEModule as the official code writes it: each direction separately, BN called per direction."""
    t = m.num_segments
    bottleneck = m.bn_reduce(m.conv_reduce(x))
    r = bottleneck.view(-1, t, *bottleneck.shape[1:])
    conv = m.conv_neighbor(bottleneck).view(-1, t, *bottleneck.shape[1:])
    fwd = F.pad(conv[:, 1:] - r[:, :-1], (0, 0, 0, 0, 0, 0, 0, 1)).flatten(0, 1)
    bwd = F.pad(conv[:, :-1] - r[:, 1:], (0, 0, 0, 0, 0, 0, 1, 0)).flatten(0, 1)
    outs = []
    for d in (fwd, bwd):
        s2 = m.bn_pooled(m.conv_pooled(F.avg_pool2d(d, 2)))
        s2 = F.interpolate(s2, d.shape[2:])
        s4 = m.bn_full(m.conv_full(d))
        outs.append(torch.sigmoid(m.bn_expand(m.conv_expand(d / 3 + s2 / 3 + s4 / 3))) - 0.5)
    return x + x * (0.5 * outs[0] + 0.5 * outs[1])


def _randomise(module):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "conv" in name else 1.0))
        for name, buf in module.named_buffers():
            if "running_mean" in name:
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif "running_var" in name:
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)


@pytest.mark.parametrize("train", [False, True])
def test_ltdm_matches_the_official_computation(train):
    m = LongTermTDM(64, num_segments=4)
    _randomise(m)
    ref = copy.deepcopy(m)
    m.train(train)
    ref.train(train)
    x = _clip(b=2, t=4, c=64, h=7, w=7)
    torch.testing.assert_close(m(x), _official_ltdm(ref, x), atol=1e-5, rtol=1e-5)
    if train:  # running statistics updated exactly as the official per-direction calls do
        for (name, a), (_, b) in zip(m.named_buffers(), ref.named_buffers()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_ltdm_on_a_static_clip_sees_zero_differences():
    m = LongTermTDM(32, num_segments=4).eval()
    _randomise(m)
    with torch.no_grad():  # neighbour conv as identity: differences are then pure frame changes
        m.conv_neighbor.weight.zero_()
        m.conv_neighbor.weight[:, :, 1, 1] = 1.0
    frame = torch.randn(1, 1, 32, 6, 6)
    static = frame.expand(2, 4, -1, -1, -1).reshape(8, 32, 6, 6)
    assert torch.count_nonzero(torch.cat(m.differences(static))) == 0
    moving = torch.randn(8, 32, 6, 6)
    assert torch.count_nonzero(torch.cat(m.differences(moving))) > 0


def test_ltdm_fuse_folds_every_batch_norm_and_keeps_the_output():
    m = LongTermTDM(32, num_segments=4).eval()
    _randomise(m)
    x = _clip(b=2, t=4, c=32, h=6, w=6)
    with torch.no_grad():
        expected = m(x)
        fused = copy.deepcopy(m).fuse()
        got = fused(x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in fused.modules())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="eval mode"):
        LongTermTDM(32, num_segments=4).fuse()


def test_layers_trace_with_torch_fx():
    # timm's feature extraction traces models with torch.fx: the shape checks must not stop it.
    for layer, channels in ((TemporalShift(4), 16), (TemporalConv(16, 4), 16), (LongTermTDM(32, 4), 32)):
        layer.eval()
        traced = torch.fx.symbolic_trace(layer)
        x = _clip(b=1, t=4, c=channels, h=4, w=4)
        torch.testing.assert_close(traced(x), layer(x))
        with pytest.raises(ValueError, match="B\\*4"):  # a batch that is not whole clips, eager and traced
            layer(torch.zeros(6, channels, 2, 2))
        with pytest.raises(ValueError, match="B\\*4"):
            traced(torch.zeros(6, channels, 2, 2))


def test_ltdm_reduction_and_shape():
    m = LongTermTDM(128, num_segments=8)
    assert m.conv_reduce.out_channels == 8
    assert m(_clip(b=1, t=8, c=128, h=4, w=4)).shape == (8, 128, 4, 4)


def test_frame_differences_are_difference_major_rgb_within():
    frames = torch.arange(5 * 3, dtype=torch.float32).view(1, 15, 1, 1) ** 2
    d = frame_differences(frames, 5).flatten()
    x = frames.flatten().view(5, 3)
    expected = torch.cat([x[i + 1] - x[i] for i in range(4)])
    assert torch.equal(d, expected)
    with pytest.raises(ValueError, match="expected 15 channels"):
        frame_differences(torch.zeros(1, 12, 2, 2), 5)


def test_short_term_runs_stem_and_stage_on_pooled_differences():
    stem = torch.nn.Conv2d(12, 4, 3, padding=1)
    stage = torch.nn.Conv2d(4, 4, 1)
    stdm = ShortTermTDM(stem, stage, num_segments=2, frames_per_segment=5)
    frames = torch.randn(4, 15, 8, 8)
    stem_out, stage_out = stdm(frames)
    expected = stem(F.avg_pool2d(frame_differences(frames, 5), 2))
    torch.testing.assert_close(stem_out, expected)
    torch.testing.assert_close(stage_out, stage(expected))


def test_fusion_upsamples_nearest():
    x = torch.zeros(1, 1, 4, 4)
    diff = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out = fuse_difference(x, diff, 0.5, 0.25)
    assert torch.equal(out, 0.25 * diff.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_consensus_is_the_mean_over_segments():
    x = torch.arange(12.0).view(6, 2)
    out = SegmentConsensus(3)(x)
    assert torch.equal(out, x.view(2, 3, 2).mean(1))
    with pytest.raises(ValueError, match="B\\*4"):
        SegmentConsensus(4)(x)


@pytest.mark.parametrize(
    "make",
    [lambda: TemporalShift(4, fold_div=4), lambda: _trained_conv(TemporalConv(16, 4, fold_div=4)),
     lambda: LongTermTDM(16, num_segments=4).eval()],
    ids=["shift", "tconv", "ltdm"],
)
def test_clips_of_a_batch_never_see_each_other(make):
    # The neighbours are read by a shift along the batch axis; at a clip's edge the value is zero
    # by selection, so not even a non-finite frame of the next clip may leak through (0 * inf).
    m = make()
    x = _clip(b=2, t=4, c=16)
    alone = m(x[4:])
    x[:4] = float("inf")
    torch.testing.assert_close(m(x)[4:], alone)
    x[:4] = 0.0
    x[4:] = float("nan")
    assert torch.isfinite(m(x)[:4]).all()


def _trained_conv(m: TemporalConv) -> TemporalConv:
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=torch.Generator().manual_seed(1)))
    return m
