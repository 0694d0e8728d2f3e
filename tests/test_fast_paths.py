"""The fast temporal modules compute what the official formulation (reference_ops) computes.

The speed-ups (folded BN, GEMM expand, sigmoid identity, in-place inference buffers, pool-first
S-TDM, broadcast fusion) must not change outputs, gradients or BatchNorm statistics, in any of
the modes a model runs in: inference, no_grad, eval with autograd, training, channels_last.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tdnzoo
from tdnzoo.layers import LongTermStack, LongTermTDM, TemporalConv, fuse_difference, reference_ops
from tdnzoo.layers._fast import avg_pool2x2, batch_norm, derived_from, eager_inference, inference_copy, pointwise

from .conftest import randomize_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


def _tdn(backbone: str = "test_resnet", segments: int = 4) -> tdnzoo.VideoClassifier:
    torch.manual_seed(0)
    model = tdnzoo.create_model(f"tdn_{backbone}", num_segments=segments, num_classes=5, drop_rate=0.0)
    return randomize_statistics(model)  # trained-looking statistics and temporal kernels, not the init values


def _clip(model, size=64, batch=2, seed=0):
    return torch.randn(batch, model.num_frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [64, 80])  # 80: odd maps (5x5, 3x3) take the interpolate paths
def test_eval_outputs_match_the_reference_in_every_mode(size):
    model = _tdn().eval()
    x = _clip(model, size)
    with reference_ops(), torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        inference = model(x)
    with torch.no_grad():
        no_grad = model(x)
    with_grad = model(x)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        cl = channels_last(x)
    scale = expected.abs().max()
    for got in (inference, no_grad, with_grad.detach(), cl):
        assert float((got - expected).abs().max() / scale) < 1e-5


@pytest.mark.parametrize("backbone", ["test_resnet", "resnet18"])  # deep stem; plain 7x7 stem conv
def test_training_matches_the_reference_outputs_gradients_and_statistics(backbone):
    fast, ref = _tdn(backbone).train(), _tdn(backbone).train()
    x = _clip(fast)
    out = fast(x)
    out.square().sum().backward()
    with reference_ops():
        expected = ref(x)
        expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        if name.endswith(("ltdm.bn_pooled.bias", "ltdm.bn_full.bias")):
            continue  # mathematically zero gradient (batch-mode bn_expand cancels it): rounding noise only
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3 * float(q.grad.abs().max()), msg=name)
    for (name, a), b in zip(fast.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_inference_reuses_its_buffers(monkeypatch):
    monkeypatch.setenv("TDNZOO_NATIVE_KERNELS", "0")  # the PyTorch-ops path (tests/test_native_kernel.py: the C one)
    stack = LongTermStack()
    stack.add_module("ltdm", LongTermTDM(32, num_segments=4).eval())
    stack.add_module("tconv", TemporalConv(32, num_segments=4))
    x = torch.randn(8, 32, 6, 6)
    with torch.inference_mode():
        y, spare = stack.ltdm.forward_with_spare(x)
        # output and spare are the two halves of one buffer: the temporal conv writes into the spare
        assert y.untyped_storage().data_ptr() == spare.untyped_storage().data_ptr()
        out = stack(x)
    with reference_ops(), torch.no_grad():
        expected = stack(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert stack.ltdm.forward_with_spare(x.requires_grad_())[1] is None  # autograd: no buffer games


def test_fast_paths_step_aside_for_autocast_tracing_and_reference():
    x = torch.randn(2, 2)
    with torch.no_grad():
        assert eager_inference(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not eager_inference(x)
        with reference_ops():
            assert not eager_inference(x)
    assert not eager_inference(x.requires_grad_())


def test_ltdm_runs_under_bf16_autocast():
    m = LongTermTDM(32, num_segments=4).eval()
    x = torch.randn(8, 32, 6, 6)
    with torch.no_grad():
        expected = m(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = m(x)  # fp32 input: the products run in bf16, the gating in fp32
            inside = m(x.bfloat16())  # as inside a bf16 network
    assert inside.dtype == torch.bfloat16
    for out in (got, inside):
        torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)


def test_ltdm_compiles_to_one_graph():
    m = LongTermTDM(32, num_segments=4).eval()
    x = torch.randn(8, 32, 6, 6)
    compiled = torch.compile(m, backend="eager", fullgraph=True)  # raises on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (2, 5, 7, 9), (1, 3, 2, 3)])
def test_avg_pool2x2_is_avg_pool2d(shape):
    x = torch.randn(shape)
    torch.testing.assert_close(avg_pool2x2(x), F.avg_pool2d(x, 2))
    torch.testing.assert_close(avg_pool2x2(x, scale=1.0), 4 * F.avg_pool2d(x, 2))  # sums, 1/4 folded elsewhere
    cl = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(avg_pool2x2(cl), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.75, 0.25), (0.6, 0.3), (1.0, 0.0)])
@pytest.mark.parametrize("diff_size", [4, 3, 8])
def test_fusion_matches_the_official_formula(alpha, beta, diff_size):
    x, diff = torch.randn(2, 3, 8, 8), torch.randn(2, 3, diff_size, diff_size)
    expected = alpha * x + beta * F.interpolate(diff, size=(8, 8))
    torch.testing.assert_close(fuse_difference(x, diff, alpha, beta), expected)
    torch.testing.assert_close(fuse_difference(x.clone(), diff, alpha, beta, inplace=True), expected)
    with reference_ops():
        torch.testing.assert_close(fuse_difference(x, diff, alpha, beta), expected)


def test_pointwise_is_a_1x1_convolution_per_group():
    x = torch.randn(6, 5, 4, 3)
    weight, bias = torch.randn(2, 7, 5), torch.randn(2, 7)
    expected = [F.conv2d(part, weight[g].view(7, 5, 1, 1), bias[g]) for g, part in enumerate(x.chunk(2))]
    for kwargs in ({}, {"inplace": True}, {"channels_last": True}):
        for got, want in zip(pointwise(x, weight, bias, **kwargs), expected):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_scaled_batch_norm_updates_statistics_like_the_module(momentum):
    a, b = nn.BatchNorm2d(4, momentum=momentum), nn.BatchNorm2d(4, momentum=momentum)
    with torch.no_grad():
        a.weight.normal_()
        b.weight.copy_(a.weight)
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3)
        torch.testing.assert_close(batch_norm(a, x, gain=-0.5), -0.5 * b(x))
    for name, buf in a.named_buffers():
        torch.testing.assert_close(buf, b.get_buffer(name), msg=name)
    a.eval(), b.eval()
    torch.testing.assert_close(batch_norm(a, x, gain=2.0), 2.0 * b(x))


def test_temporal_conv_writes_into_a_given_buffer():
    conv = TemporalConv(16, num_segments=4)
    with torch.no_grad():
        conv.weight.normal_()
    x = torch.randn(8, 16, 3, 3)
    out = torch.empty_like(x)
    with torch.no_grad():
        assert conv(x, out=out).data_ptr() == out.data_ptr()
        with reference_ops():
            torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-6)


def _conv_bn_block(channels: int = 4) -> nn.Sequential:
    block = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                          nn.MaxPool2d(3, 2, 1))
    with torch.no_grad():
        block[1].running_mean.normal_()
        block[1].running_var.uniform_(0.5, 2.0)
    return block.eval()


def test_inference_copy_folds_bn_follows_weight_changes_and_keeps_no_state_dict_keys():
    block = _conv_bn_block()
    keys = set(block.state_dict())
    x = torch.randn(2, 4, 9, 9)
    copy_ = inference_copy(block, x)
    assert copy_ is not block and not any(isinstance(m, nn.BatchNorm2d) for m in copy_.modules())
    with torch.no_grad():
        torch.testing.assert_close(copy_(x), block(x), rtol=1e-5, atol=1e-5)
        assert inference_copy(block, x) is copy_  # cached
        block[1].weight.mul_(2.0)  # an optimizer step or a checkpoint load changes the weights in place
        fresh = inference_copy(block, x)
        assert fresh is not copy_
        torch.testing.assert_close(fresh(x), block(x), rtol=1e-5, atol=1e-5)
    assert set(block.state_dict()) == keys
    assert inference_copy(block.train(), x) is block  # batch statistics: nothing to fold


def test_inference_copy_that_disagrees_is_not_used(monkeypatch):
    import tdnzoo.layers._fast as fast

    block = _conv_bn_block()
    monkeypatch.setattr(fast, "_folded_copy", lambda module: nn.Identity())  # a wrongly traced copy
    assert inference_copy(block, torch.randn(1, 4, 8, 8)) is block


def _ltdm_with_statistics(seed: int) -> LongTermTDM:
    torch.manual_seed(seed)
    m = LongTermTDM(32, num_segments=4)
    with torch.no_grad():
        for bn in (m.bn_reduce, m.bn_pooled, m.bn_full, m.bn_expand):
            bn.running_mean.normal_(0, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.normal_(1, 0.3)
    return m.eval()


def test_cached_folded_weights_follow_every_kind_of_weight_change():
    m = _ltdm_with_statistics(0)
    x = torch.randn(8, 32, 6, 6)

    def fast_and_reference():
        with torch.inference_mode():
            fast = m(x)
        with reference_ops(), torch.no_grad():
            return fast, m(x)

    first, _ = fast_and_reference()
    changes = [
        lambda: m.conv_expand.weight.data.mul_(-1.0),  # .data: no version counter bump
        lambda: m.load_state_dict(_ltdm_with_statistics(1).state_dict()),  # checkpoint load
        lambda: m.bn_reduce.running_var.mul_(3.0),  # a buffer
    ]
    previous = first
    for change in changes:
        with torch.no_grad():
            change()
        fast, expected = fast_and_reference()
        torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(fast, previous)  # the change did change the output
        previous = fast
    m.double()  # a dtype move makes new tensors
    x = x.double()
    fast, expected = fast_and_reference()
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, expected)


def test_inference_copy_sees_data_edits():
    block = _conv_bn_block()
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        first = inference_copy(block, x)
        block[0].weight.data.mul_(-1.0)  # bypasses the version counter
        second = inference_copy(block, x)
        assert second is not first
        torch.testing.assert_close(second(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("native", ["1", "0"])  # values compared in C (bytes), or by torch.equal
def test_derived_from_rebuilds_only_when_values_change(native, monkeypatch):
    monkeypatch.setenv("TDNZOO_NATIVE_KERNELS", native)
    module = nn.Linear(3, 2)
    builds = []
    build = lambda: builds.append(1) or len(builds)  # noqa: E731
    assert derived_from(module, "_slot", build) == 1
    assert derived_from(module, "_slot", build) == 1  # unchanged: cached
    with torch.no_grad():
        module.weight.copy_(module.weight)  # same values (version bumped): still valid
    assert derived_from(module, "_slot", build) == 1
    with torch.no_grad():
        module.bias.add_(1.0)
    assert derived_from(module, "_slot", build) == 2
    module.bias.data[1] += 1.0  # one element, through .data (no version bump)
    assert derived_from(module, "_slot", build) == 3
    module.weight = nn.Parameter(module.weight.detach().t().contiguous().t())  # same values, not contiguous
    assert derived_from(module, "_slot", build) == 3
    with torch.no_grad():
        module.weight[0, 0] += 1.0
    assert derived_from(module, "_slot", build) == 4
    module.register_buffer("extra", torch.zeros(2))  # one more tensor
    assert derived_from(module, "_slot", build) == 5
    twin = copy.deepcopy(module)  # the cache travels with the module and follows the copy's weights
    assert derived_from(twin, "_slot", build) == 5
    with torch.no_grad():
        twin.extra.fill_(1.0)
    assert derived_from(twin, "_slot", build) == 6 and derived_from(module, "_slot", build) == 5


def test_difference_gate_backward_is_the_exact_gradient():
    from tdnzoo.layers.tdm import _DifferenceGate

    g = torch.Generator().manual_seed(0)
    x, a, b = (torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g).requires_grad_() for _ in range(3))
    assert torch.autograd.gradcheck(_DifferenceGate.apply, (x, a, b))
    expected = x + 0.5 * x * (torch.sigmoid(a) - torch.sigmoid(b))
    torch.testing.assert_close(_DifferenceGate.apply(x, a, b), expected)


def test_temporal_conv_backward_is_the_exact_gradient():
    from tdnzoo.layers.shift import _TemporalConv3

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 2, 3, dtype=torch.float64, generator=g).requires_grad_()  # [B, T, C, H, W]
    weight = torch.randn(3, 1, 3, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(_TemporalConv3.apply, (x, weight))


def test_training_under_bf16_autocast_gives_gradients_close_to_fp32():
    model = _tdn().train()
    x = _clip(model)
    reference = copy.deepcopy(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    out.float().square().sum().backward()
    expected = reference(x)
    expected.square().sum().backward()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.1, atol=0.1 * float(expected.detach().abs().max()))
    got = torch.cat([p.grad.flatten() for p in model.parameters()])
    want = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert torch.isfinite(got).all()
    assert F.cosine_similarity(got, want, dim=0) > 0.95  # bf16 rounding, same direction


def test_inference_copy_never_adds_into_a_tensor_it_does_not_own():
    class Residual(nn.Module):  # out = identity(x) + conv(x): the identity hands back the input
        def __init__(self):
            super().__init__()
            self.skip = nn.Identity()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            return self.skip(x) + self.bn(self.conv(x))

    block = Residual().eval()
    x = torch.randn(2, 4, 8, 8)
    before = x.clone()
    with torch.no_grad():
        copy_ = inference_copy(block, x)
        assert copy_ is not block
        torch.testing.assert_close(copy_(x), block(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(x, before)  # the caller's input is untouched
